"""Collect the results of a pipeline run into one table: out/summary.md (called at the end of run_me.sh).

    python tools/summarize_run.py [--times out/run_me_times.tsv]

One row per trained model (the last run in each out/<dataset>_<model>_<opt>[_tag].json): best validation accuracy,
test accuracy at that epoch, test AUC (from figures/<dataset>_<model>[_tag]_metrics.json or robustness JSON when
present), parameters, training wall time; then robust accuracy per attack budget and the wall time of every step.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from cli import add_output_flags
from common import run_name
from models import PRETRAINED_MODELS
from run_store import last_record, read_step_times


def _fmt(value, spec: str = ".2f") -> str:
    return "–" if value is None else format(value, spec)


def training_rows(out_dir: Path, figures_dir: Path) -> list[dict]:
    """The last run record of every JSON log, with AUC from the analysis JSONs when they exist."""
    rows = []
    for log in sorted(out_dir.glob("*.json")):
        r = last_record(log)
        if r is None or "val_acc" not in r:
            continue
        tag = r.get("tag", "")
        metrics = figures_dir / f"{run_name(r['dataset'], r['model'])}_metrics.json"
        robust = figures_dir / f"{run_name(r['dataset'], r['model'], tag=tag)}_robustness.json"
        auc = None
        if not tag and metrics.is_file():
            auc = json.loads(metrics.read_text()).get("auc")
        elif robust.is_file():
            clean = [row for row in json.loads(robust.read_text())[0]["attacks"].get("pgd", []) if row["eps_255"] == 0]
            auc = clean[0]["auc"] if clean else None
        config = r.get("config", {})
        rows.append({
            "model": r["model"] + (f" ({tag})" if tag else ""), "dataset": r["dataset"], "epochs": len(r["val_acc"]),
            "best_val_acc": r.get("best_val_acc"), "test_acc": r.get("test_acc_at_best_val"), "auc": auc,
            "params": config.get("n_params"), "pretrained": not config.get("no_pretrained", False)
            if r["model"] in PRETRAINED_MODELS else None, "train_s": sum(r.get("epoch_time_s", [])),
        })
    return rows


def robustness_rows(figures_dir: Path) -> list[str]:
    lines = []
    for path in sorted(figures_dir.glob("*_robustness.json")):
        result = json.loads(path.read_text())[0]
        name = f"{result['model']}{' (' + result['tag'] + ')' if result.get('tag') else ''} on {result['dataset']}"
        for attack, rows in result["attacks"].items():
            cells = " | ".join(f"{row['accuracy']:.1f}" for row in rows)
            lines.append(f"| {name} | {attack.upper()} | {cells} |")
            header_eps = [row["eps_255"] for row in rows]
        cw = result.get("cw")
        if cw:
            lines.append(f"| {name} | C&W L2 | success {_fmt(cw['success_rate'], '.0f')} %, median L2 {_fmt(cw['median_l2'], '.3f')} |")
    if not lines:
        return []
    eps = " | ".join(f"{e:g}/255" for e in header_eps)
    return ["", "## Robust accuracy (%) under L-inf attacks", "", f"| model | attack | {eps} |",
            "|---|---|" + "---|" * len(header_eps), *lines]


def summary_markdown(out_dir: Path, figures_dir: Path, times: Path | None) -> str:
    lines = ["# Pipeline summary", "", "| model | dataset | epochs | best val acc (%) | test acc at best val (%) | test AUC "
             "| parameters | training time (s) |", "|---|---|---|---|---|---|---|---|"]
    for r in training_rows(out_dir, figures_dir):
        model = r["model"] + (" (random init)" if r["pretrained"] is False else "")
        params = f"{r['params']:,d}" if r["params"] else "–"
        lines.append(f"| {model} | {r['dataset']} | {r['epochs']} | {_fmt(r['best_val_acc'])} | {_fmt(r['test_acc'])} | "
                     f"{_fmt(r['auc'], '.4f')} | {params} | {r['train_s']:.0f} |")
    lines += robustness_rows(figures_dir)
    if times is not None and times.is_file():
        steps = read_step_times(times)
        total = sum(s for _, s in steps)
        lines += ["", "## Wall time per step", "", "| step | seconds |", "|---|---|"]
        lines += [f"| {name} | {s:.0f} |" for name, s in steps] + [f"| **total** | **{total:.0f}** |"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> Path:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_output_flags(p, out="folder of the JSON logs", figures="folder of the analysis JSONs")
    p.add_argument("--times", type=Path, help="tab-separated 'step<TAB>seconds' lines written by run_me.sh")
    args = p.parse_args(argv)
    text = summary_markdown(args.out_dir, args.figures_dir, args.times)
    path = args.out_dir / "summary.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    print(text)
    print(f"saved {path}")
    return path


if __name__ == "__main__":
    main()
