"""Plot the loss and accuracy curves (train / val / test per epoch) of a run from its JSON log.

    python plot_accuracy_and_loss.py -m SimpleNet -j out/fakes_dataset_SimpleNet_Adam.json -d fakes_dataset

Writes figures/<dataset>_<model>_losses_plot.png and figures/<dataset>_<model>_accuracies_plot.png.
The log holds one record per run; the last one is drawn unless --run picks another (0 = first, -1 = last).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from matplotlib.ticker import MaxNLocator

from cli import UserError, add_output_flags, add_progress_flag, cli_main, writable_dir
from common import DATASETS, run_name
from models import MODEL_NAMES
from run_store import read_json_list
from utils import new_figure, save_figure

SPLIT_STYLES = {"train": "o-", "val": "s-", "test": "^-"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-m", "--model", choices=MODEL_NAMES, help="model name (optional: taken from the log, and checked)")
    p.add_argument("-j", "--json", type=Path, required=True, help="the JSON log written by train_main.py")
    p.add_argument("-d", "--dataset", choices=DATASETS, help="dataset name (optional: taken from the log, and checked)")
    p.add_argument("--run", type=int, default=-1, help="which record of the log to draw (default: -1, the last)")
    add_output_flags(p, figures="output folder")
    add_progress_flag(p)  # accepted for symmetry with the other scripts (no bars here)
    return p.parse_args(argv)


def select_record(records: list[dict], index: int, path: Path) -> dict:
    """The chosen run record, checked for the per-epoch lists the plot needs."""
    if not records:
        raise UserError(f"JSON log {path} holds no runs")
    if not -len(records) <= index < len(records):
        raise UserError(f"--run {index} is out of range: {path} holds {len(records)} run(s)")
    record = records[index]
    for split in SPLIT_STYLES:
        for metric in ("loss", "acc"):
            values = record.get(f"{split}_{metric}")
            if not isinstance(values, list) or not values:
                raise UserError(f"run {index} of {path} has no '{split}_{metric}' list; is this a train_main.py log?")
    return record


def plot_metric(record: dict, metric: str, title: str, path: Path) -> Path:
    """One figure with the train/val/test curves of `metric` ('loss' or 'acc'), the best-val epoch marked."""
    fig, ax = new_figure(figsize=(6.4, 4.2))
    for split, style in SPLIT_STYLES.items():
        values = record[f"{split}_{metric}"]
        ax.plot(range(1, len(values) + 1), values, style, label=split)
    best = record.get("best_epoch")
    if best:
        ax.axvline(best, color="grey", linestyle=":", label=f"best val (epoch {best})")
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("accuracy (%)" if metric == "acc" else "loss (cross-entropy)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    return save_figure(fig, path)


def names_from_record(record: dict, model: str | None, dataset: str | None, path: Path) -> tuple[str, str]:
    """(model, dataset) of the run; a -m/-d that contradicts the log is an error (it would mislabel the figures)."""
    names = []
    for flag, given, key in (("-m", model, "model"), ("-d", dataset, "dataset")):
        logged = record.get(key)
        if given is not None and logged is not None and given != logged:
            raise UserError(f"{path} is a log of {key} {logged}, not {given}; drop {flag} or pass the right log")
        if (given or logged) is None:
            raise UserError(f"{path} does not name its {key}; pass {flag}")
        names.append(given or logged)
    return names[0], names[1]


@cli_main
def main(argv: list[str] | None = None) -> list[Path]:
    args = parse_args(argv)
    record = select_record(read_json_list(args.json), args.run, args.json)
    model, dataset = names_from_record(record, args.model, args.dataset, args.json)
    writable_dir(args.figures_dir, "--figures-dir")
    prefix = args.figures_dir / run_name(dataset, model, tag=record.get("tag", ""))
    title = f"{model} on {dataset}" + (f" ({record['tag']})" if record.get("tag") else "")
    return [
        plot_metric(record, "loss", f"{title}: loss", Path(f"{prefix}_losses_plot.png")),
        plot_metric(record, "acc", f"{title}: accuracy", Path(f"{prefix}_accuracies_plot.png")),
    ]


if __name__ == "__main__":
    main()
