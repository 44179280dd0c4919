"""Write the run's report: one self-contained out/report.html with every figure and number, in the assignment's order.

    python tools/make_report.py                       # the default work dir (out/, figures/), as run_me.sh does last
    python tools/make_report.py --pdf                 # also out/report.pdf, printed by headless Chromium
    FMD_WORK_DIR=/content/drive/MyDrive/fmd python tools/make_report.py

Chapters follow the assignment (datasets, training, numerical analysis, Xception, saliency and Grad-CAM, the bonus
model), then what the suite adds (EfficientNet-Lite0, cross-dataset, generalization, distortions, adversarial
robustness, detect.py). Every number is read from the run's own JSON logs and metrics files (each carries data-src and
data-key attributes naming the file and the value it shows); the figures are embedded, so the page opens offline, on a
phone, and prints. A step that did not run is shown as missing, with the command that makes it. The questions that ask
for an explanation get a marked box: the explanations stay the student's to write.
"""
from __future__ import annotations

import argparse
import base64
import csv
import html
import io
import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cli import UserError, add_output_flags, cli_main, writable_dir
from common import DATASETS, SHIPPED_DETECTOR, run_name
from faces_dataset import is_demo_data
from files import atomic_write
from run_store import HISTORY_KEYS, last_record, read_step_times

OPTIMIZER = "Adam"  # run_me.sh trains every model with the assignment's optimizer
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
GENERATOR = "fmd tools/make_report.py"  # marks the pages this tool wrote: only those it writes over

CSS = """
body { font: 16px/1.5 system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 60rem; margin: 0 auto;
       padding: 0 1rem 4rem; color: #1b1b1b; }
h1 { margin-top: 1.5rem; } h2 { border-bottom: 2px solid #ddd; margin-top: 2.5rem; }
h3 { margin-top: 1.8rem; font-size: 1.05rem; }
figure { margin: 1rem 0; break-inside: avoid; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-size: .9rem; color: #444; }
code, figcaption, .answer, .missing { overflow-wrap: anywhere; }
.num { font-weight: 600; font-variant-numeric: tabular-nums; }
.answer { background: #f3f7fb; border-left: 4px solid #4a7bb7; padding: .4rem .8rem; }
.yours { border: 2px dashed #c9a227; padding: .6rem .8rem; min-height: 3rem; color: #7a6200; }
.missing { background: #fdf0ef; border-left: 4px solid #c0392b; padding: .4rem .8rem; }
.missing code { white-space: pre-wrap; word-break: break-all; }
.table { overflow-x: auto; } table { border-collapse: collapse; margin: .5rem 0; font-size: .92rem; }
td, th { border: 1px solid #ccc; padding: .25rem .5rem; text-align: left; } th { background: #f4f4f4; }
nav ol { columns: 2; font-size: .92rem; } @media (max-width: 40rem) { nav ol { columns: 1; } }
.note { color: #555; font-size: .92rem; }
h2, h3 { break-after: avoid-page; }
@media print { body { max-width: none; font-size: 11pt; } h2 { break-before: page; } .yours { min-height: 5rem; }
               figure img { max-height: 11cm; width: auto; } }
"""


@dataclass
class Run:
    """Where one run's files live, and the report's source references relative to the report's folder."""

    out_dir: Path
    figures_dir: Path
    report_dir: Path
    missing: list[str] = field(default_factory=list)
    chapters_with_gaps: list[str] = field(default_factory=list)
    chapter: str = ""

    def ref(self, path: Path) -> str:
        return os.path.relpath(path, self.report_dir)

    def log_path(self, dataset: str, model: str, tag: str = "") -> Path:
        return self.out_dir / f"{run_name(dataset, model, OPTIMIZER, tag)}.json"

    def figure(self, name: str) -> Path:
        return self.figures_dir / name


def read_json(path: Path) -> Any | None:
    """A JSON file's content, or None when it is absent or unreadable (the report then marks it missing)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        return None


def lookup(data: Any, key: str) -> Any:
    """The value at a '/'-separated key path ('-1/config/n_params'); integers index lists."""
    for part in key.split("/"):
        data = data[int(part)] if isinstance(data, list) else data[part]
    return data


def format_value(value: Any, fmt: str) -> str:
    """How the report writes a number: a format spec; a '%' spec shows a fraction as percent, without the sign (the
    page writes it after the number)."""
    return format(value, fmt).rstrip("%")


def num(run: Run, path: Path, data: Any, key: str, fmt: str) -> str:
    """A number read from `data` (the content of `path`) at `key`, tagged with where it came from."""
    value = lookup(data, key)
    return (f'<span class="num" data-src="{html.escape(run.ref(path))}" data-key="{html.escape(key)}" '
            f'data-fmt="{html.escape(fmt)}">{html.escape(format_value(value, fmt))}</span>')


def computed(value: int, how: str) -> str:
    """A number the report computes itself (parameter counts of models built without weights)."""
    return f'<span class="num" data-computed="{html.escape(how)}">{value:,d}</span>'


def missing(run: Run, what: str, how: str, path: Path | None = None) -> str:
    """A marked gap: what is missing and the command that makes it; when `path` exists the file is there but
    unreadable (corrupt JSON, or no log), which the mark says instead of "did not run"."""
    if what not in run.missing:
        run.missing.append(what)
    if run.chapter not in run.chapters_with_gaps:
        run.chapters_with_gaps.append(run.chapter)
    if path is not None and path.exists():
        return (f'<div class="missing" data-missing="{html.escape(what)}" data-corrupt="{html.escape(run.ref(path))}">'
                f'<b>Corrupt:</b> {html.escape(run.ref(path))} exists but is not readable as {html.escape(what)} '
                f'(cut short or edited?). Look at it, or make it again with <code>{html.escape(how)}</code>, then run '
                f'<code>python tools/make_report.py</code> again.</div>')
    return (f'<div class="missing" data-missing="{html.escape(what)}"><b>Missing:</b> {html.escape(what)} '
            f'(the step did not run or failed). Make it with <code>{html.escape(how)}</code>, then run '
            f'<code>python tools/make_report.py</code> again.</div>')


def figure(run: Run, name: str, caption: str, how: str) -> str:
    """An embedded PNG from the figures folder with its caption, or a missing mark."""
    path = run.figure(name)
    if not path.is_file():
        return missing(run, f"figure {name}", how)
    return image(path.read_bytes(), caption, run.ref(path))


def image(png: bytes, caption: str, source: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(caption)}" '
            f'data-src="{html.escape(source)}"><figcaption>{html.escape(caption)} '
            f'<span class="note">({html.escape(source)})</span></figcaption></figure>')


def question(number: int | None, text: str, answer: str = "", explain: bool = False) -> str:
    """A question of the assignment as a heading, the run's numbers beside it, and a marked box for the explanation."""
    title = f"Question {number}: {text}" if number is not None else text
    parts = [f"<h3>{html.escape(title)}</h3>"]
    if answer:
        parts.append(f'<p class="answer">{answer}</p>')
    if explain:
        parts.append('<div class="yours" contenteditable="true">Your explanation: (write it here, or in your copy '
                     "of this page before printing it)</div>")
    return "\n".join(parts)


def table(header: list[str], rows: list[list[str]]) -> str:
    """An HTML table; cells are HTML already (numbers are spans)."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f'<div class="table"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def train_command(dataset: str, model: str, epochs: int, extra: str = "") -> str:
    return f"python train_main.py -d {dataset} -m {model} --lr 0.001 -b 32 -e {epochs} -o Adam{extra}"


def analysis_command(script: str, dataset: str, model: str) -> str:
    return f"python {script} -m {model} -cpp checkpoints/{run_name(dataset, model, OPTIMIZER)}.pt -d {dataset}"


def curves_command(dataset: str, model: str) -> str:
    return f"python plot_accuracy_and_loss.py -m {model} -j out/{run_name(dataset, model, OPTIMIZER)}.json -d {dataset}"


# ---- chapters ---------------------------------------------------------------------------------------------------------
def datasets_chapter(run: Run) -> str:
    """Sample grid, split sizes and class proportions (from the class counts a training log records)."""
    parts = ["<h2 id='datasets'>1. Datasets</h2>",
             question(2, "the sample grid of both datasets"),
             figure(run, "datasets_samples.png", "Real and fake samples of each dataset: look for what tells them apart "
                    "by eye (GAN faces are aligned and smooth, face swaps have seams and blur).",
                    "python plot_samples_of_faces_dataset.py")]
    rows = []
    for dataset in DATASETS:
        path, record = class_counts_source(run, dataset)
        if record is None:
            rows.append([html.escape(dataset)] + ["–"] * 3)
            continue
        cells = [html.escape(dataset)]
        for split in ("train", "val", "test"):
            key = f"-1/config/class_counts/{split}"
            counts = record["config"]["class_counts"].get(split)
            if counts is None:
                cells.append("made on the fly (self-blends)")
                continue
            fake_share = counts[1] / max(1, sum(counts))
            cells.append(f"{num(run, path, [record], key + '/0', 'd')} / {num(run, path, [record], key + '/1', 'd')} "
                         f"<span class='note'>({100 * fake_share:.1f} % fake)</span>")
        rows.append(cells)
    parts.append("<p>Images per split as the run's training used them (a <code>--limit</code> run uses fewer):</p>")
    if any(cell != "–" for row in rows for cell in row[1:]):
        parts.append(table(["dataset", "train: real / fake", "val: real / fake", "test: real / fake"], rows))
    else:
        parts.append(missing(run, "split sizes (no training log records class counts)",
                             train_command("fakes_dataset", "SimpleNet", 5)))
    return "\n".join(parts)


def class_counts_source(run: Run, dataset: str) -> tuple[Path, dict | None]:
    """The log whose class counts describe `dataset`: its SimpleNet run, else any plain run of it."""
    candidates = [run.log_path(dataset, "SimpleNet")] + sorted(run.out_dir.glob(f"{dataset}_*_{OPTIMIZER}.json"))
    for path in candidates:
        record = last_record(path)
        if record and isinstance(record.get("config", {}).get("class_counts"), dict):
            return path, record
    return candidates[0], None


def proportion(run: Run, dataset: str) -> str:
    """The test split's fake-to-real proportion, with the counts it comes from."""
    path, record = class_counts_source(run, dataset)
    counts = record and record["config"]["class_counts"].get("test")
    if not counts:
        return missing(run, f"{dataset} test class counts", train_command(dataset, "SimpleNet", 5))
    key = "-1/config/class_counts/test"
    ratio = counts[1] / counts[0] if counts[0] else float("inf")
    return (f"{num(run, path, [record], key + '/1', 'd')} fake to {num(run, path, [record], key + '/0', 'd')} real "
            f"images: {ratio:.2f} fakes per real image ({100 * counts[1] / sum(counts):.1f} % fakes), so a detector "
            "that calls everything fake already scores that accuracy.")


def training_answers(run: Run, dataset: str, model: str, number: int, epochs: int, extra: str = "") -> str:
    """Learning curves and the test accuracy at the best validation epoch of one training run."""
    path = run.log_path(dataset, model)
    record = last_record(path)
    parts = []
    if record is None:
        parts.append(missing(run, f"training log {path.name}", train_command(dataset, model, epochs, extra), path))
    for kind, what in (("losses_plot", "Loss per epoch: train falling while val rises means over-fitting."),
                       ("accuracies_plot", "Accuracy per epoch: the gap between train and val is what the model "
                                           "memorised; test follows val when the splits are alike.")):
        parts.append(figure(run, f"{run_name(dataset, model)}_{kind}.png", f"{model} on {dataset}. {what}",
                            curves_command(dataset, model)))
    if record is not None:
        data = [record]
        answer = (f"{num(run, path, data, '-1/test_acc_at_best_val', '.2f')} % test accuracy at epoch "
                  f"{num(run, path, data, '-1/best_epoch', 'd')} of {len(record['val_acc'])}, the epoch of the best "
                  f"validation {html.escape(record.get('select_by', 'acc'))} (val accuracy "
                  f"{num(run, path, data, '-1/best_val_acc', '.2f')} %).")
        parts.append(question(number, "What is the test accuracy corresponding to the highest validation accuracy?",
                              answer))
    return "\n".join(parts)


def metrics_answers(run: Run, dataset: str, model: str) -> str:
    """ROC, DET and reliability figures with AUC, EER, AP and ECE from numerical_analysis.py's metrics file."""
    how = analysis_command("numerical_analysis.py", dataset, model)
    parts = [figure(run, f"{run_name(dataset, model)}_roc_curve.png", f"ROC of {model} on {dataset}, score groups A (real "
                    "score) and B (fake score): with fake as the positive class, A's curve mirrors B's.", how),
             figure(run, f"{run_name(dataset, model)}_det_curve.png", "DET (normal-deviate axes): the closer to the lower left, "
                    "the fewer misses and false alarms together; where the curve crosses the diagonal is the EER.", how)]
    path = run.figure(f"{run_name(dataset, model)}_metrics.json")
    data = read_json(path)
    record = last_record(run.log_path(dataset, model))
    other = other_run(data, record)
    if other:
        parts.append(f'<div class="missing" data-other-run="{html.escape(path.name)}"><b>Not this run:</b> '
                     f'{html.escape(path.name)} was written for {html.escape(other)}, not for the run in '
                     f'{html.escape(run.log_path(dataset, model).name)} (run id {html.escape(str(record["run_id"]))}), so '
                     f'its numbers are not shown beside it. Make them with <code>{html.escape(how)}</code>.</div>')
    elif isinstance(data, dict):
        ci = data.get("ci95", {}).get("auc")
        interval = f" (95 % CI {ci[0]:.3f}-{ci[1]:.3f})" if ci else ""
        parts.append(f'<p class="answer">Group B (fake score): AUC {num(run, path, data, "auc", ".4f")}{interval}, '
                     f'EER {num(run, path, data, "eer", ".4f")}, AP {num(run, path, data, "average_precision", ".4f")}; '
                     f'group A (real score): AUC {num(run, path, data, "auc_group_a_real_score", ".4f")}. Accuracy '
                     f'{num(run, path, data, "accuracy", ".2%")} % at 0.5, '
                     f'{num(run, path, data, "accuracy_at_val_threshold", ".2%")} % at the validation threshold '
                     f'{num(run, path, data, "val_threshold", ".3f")}; ECE {num(run, path, data, "ece", ".4f")}.</p>')
    else:
        parts.append(missing(run, f"metrics {path.name}", how, path))
    parts.append(figure(run, f"{run_name(dataset, model)}_reliability.png", "Calibration: mean P(fake) against the share of "
                        "fakes per bin; on the diagonal, a score of 0.8 means fake 8 times in 10.", how))
    return "\n".join(parts)


def other_run(data: Any, record: dict | None) -> str | None:
    """When an analysis file was made from another checkpoint than the logged run's: which one (its path and run id);
    None when they match or the file does not say (files of versions before it recorded its checkpoint)."""
    if not isinstance(data, dict) or record is None or not data.get("run_id") or not record.get("run_id"):
        return None
    if data["run_id"] == record["run_id"]:
        return None
    return f"checkpoint {data.get('checkpoint', '?')} (run id {data['run_id']})"


def assignment_training_chapter(run: Run) -> str:
    parts = ["<h2 id='simplenet'>2. SimpleNet: training and numerical analysis</h2>",
             "<h3>Deepfakes (fakes_dataset)</h3>",
             question(6, "the JSON log: does it make sense?", log_summary(run, "fakes_dataset", "SimpleNet"), True),
             training_answers(run, "fakes_dataset", "SimpleNet", 8, 5),
             question(9, "What is the proportion of fake images to real images in the test set?",
                      proportion(run, "fakes_dataset")),
             question(10, "ROC and DET for score groups A and B"),
             metrics_answers(run, "fakes_dataset", "SimpleNet"),
             question(11, "Why do the graphs for the scores in (A) differ completely from those in (B)?", explain=True),
             "<h3>Synthetic faces (synthetic_dataset)</h3>",
             training_answers(run, "synthetic_dataset", "SimpleNet", 14, 5),
             question(15, "What is the proportion of synthetic images to real images in the test set?",
                      proportion(run, "synthetic_dataset")),
             metrics_answers(run, "synthetic_dataset", "SimpleNet"),
             question(16, "What kind of classifier did we get?", explain=True),
             question(17, "Looking at samples of both datasets, does this result make sense?", explain=True)]
    return "\n".join(parts)


def log_summary(run: Run, dataset: str, model: str) -> str:
    path = run.log_path(dataset, model)
    record = last_record(path)
    if record is None:
        return missing(run, f"training log {path.name}", train_command(dataset, model, 5))
    keys = ", ".join(k for k in HISTORY_KEYS if k in record)
    return (f"<code>{html.escape(run.ref(path))}</code> holds one record per run (this is run "
            f"{html.escape(str(record.get('run_id', '?')))}); each of {html.escape(keys)} has one value per epoch "
            f"({len(record['val_acc'])} epochs), beside the optimizer's settings and the run's configuration.")


def xception_chapter(run: Run) -> str:
    """Parameter counts computed from the architectures (no weights needed), then the XceptionBased run."""
    from models import FEATURE_DIM, get_xception_based_model, mlp_head_extra_params
    from utils import get_nof_params
    from xception import build_xception_backbone

    backbone = get_nof_params(build_xception_backbone(pretrained=False))
    based = get_nof_params(get_xception_based_model(pretrained=False))
    record = last_record(run.log_path("synthetic_dataset", "XceptionBased"))
    init = ""
    if record is not None and record.get("config", {}).get("no_pretrained"):
        init = ("<p class='note'>This run trained XceptionBased from random weights (the ImageNet file was not "
                "available; see README, Pretrained weights), so it is not the assignment's fine-tuning.</p>")
    parts = ["<h2 id='xception'>3. Fine-tuning Xception</h2>",
             question(18, "What is Xception pre-trained on?", explain=True),
             question(19, "What are the basic building blocks of Xception?", explain=True),
             question(21, "What is the input feature dimension to the final classification block fc?",
                      f"{computed(FEATURE_DIM, 'models.FEATURE_DIM')} features (the exit flow's global average pool)."),
             question(22, "How many parameters does Xception hold by default?",
                      f"{computed(backbone, 'get_nof_params(build_xception_backbone(pretrained=False))')} parameters "
                      "with its 1000-class fc (counted by get_nof_params on the architecture; compare the paper's "
                      "22.9 M)."),
             question(24, "How many parameters did the MLP add over the original Xception's count?",
                      f"{computed(mlp_head_extra_params(), 'models.mlp_head_extra_params()')} parameters: "
                      f"XceptionBased holds {computed(based, 'get_nof_params(get_xception_based_model(pretrained=False))')}."),
             init,
             training_answers(run, "synthetic_dataset", "XceptionBased", 27, 2),
             question(28, "numerical analysis of XceptionBased on synthetic_dataset"),
             metrics_answers(run, "synthetic_dataset", "XceptionBased"),
             question(None, "Why did we get better results than SimpleNet on synthetic_dataset?", explain=True)]
    return "\n".join(parts)


def explanation_chapter(run: Run) -> str:
    parts = ["<h2 id='saliency'>4. Saliency maps and Grad-CAM</h2>",
             question(29, "What are image-specific class saliency maps?", explain=True),
             question(30, "What are Grad-CAMs?", explain=True),
             question(32, "saliency maps of SimpleNet (fakes_dataset) and XceptionBased (synthetic_dataset)")]
    for dataset, model in (("fakes_dataset", "SimpleNet"), ("synthetic_dataset", "XceptionBased")):
        how = analysis_command("saliency_map.py", dataset, model)
        parts.append(figure(run, f"{run_name(dataset, model)}_saliency_maps_and_images_pairs.png",
                            f"{model} on {dataset}: test images above |d score / d pixel|; bright where a pixel moves "
                            "the true class's score most.", how))
        parts.append(figure(run, f"{run_name(dataset, model)}_mean_saliency_maps.png",
                            f"{model} on {dataset}: the mean map over real and over fake test images; a face-shaped "
                            "pattern means the model looks at the face, a frame or corner pattern at something else.",
                            how))
    parts.append(question(32, "explain the saliency maps", explain=True))
    parts.append(question(35, "Grad-CAM of SimpleNet (both datasets) and XceptionBased (synthetic_dataset)"))
    for dataset, model in (("fakes_dataset", "SimpleNet"), ("synthetic_dataset", "SimpleNet"),
                           ("synthetic_dataset", "XceptionBased")):
        how = analysis_command("grad_cam_analysis.py", dataset, model)
        for cls in ("Real", "Fake"):
            parts.append(figure(run, f"{run_name(dataset, model)}_{cls}_Image_grad_cam.png",
                                f"{model} on {dataset}, a {cls.lower()} test image: red where the last conv layer's "
                                "evidence for the image's class lies.", how))
    parts.append(question(35, "explain the Grad-CAMs", explain=True))
    return "\n".join(parts)


def bonus_chapter(run: Run) -> str:
    """The bonus model's AUC and size, and every fakes_dataset model on one AUC-vs-parameters plot."""
    parts = ["<h2 id='bonus'>5. Bonus: a small model for fakes_dataset</h2>"]
    path = run.figure("fakes_dataset_Bonus_metrics.json")
    data = read_json(path)
    log = run.log_path("fakes_dataset", "Bonus")
    record = last_record(log)
    if isinstance(data, dict) and record is not None and not other_run(data, record):
        parts.append(f'<p class="answer">Test AUC {num(run, path, data, "auc", ".4f")} with '
                     f'{num(run, log, [record], "-1/config/n_params", ",d")} parameters (checkpoints/bonus.pt).</p>')
    else:
        parts.append(missing(run, "the bonus model's metrics", "python train_main.py -d fakes_dataset -m Bonus --lr 0.01 "
                             "-e 12 --scheduler cosine --warmup-epochs 1 --select-by auc, then "
                             + analysis_command("numerical_analysis.py", "fakes_dataset", "Bonus")))
    points = auc_vs_params(run)
    if points:
        parts.append(image(auc_vs_params_png(points), "Test AUC against parameters for every model trained on "
                           "fakes_dataset (AUC at the best validation epoch, from each log): up and to the left is "
                           "better; the bonus model trades AUC for size.", run.ref(run.out_dir)))
        parts.append(table(["model", "parameters", "test AUC at best val"],
                           [[html.escape(name), num(run, p, [r], "-1/config/n_params", ",d"),
                             num(run, p, [r], "-1/test_auc_at_best_val", ".4f")] for name, p, r in points]))
    parts.append(question(None, "How did you design and train the architecture?", explain=True))
    return "\n".join(parts)


def auc_vs_params(run: Run) -> list[tuple[str, Path, dict]]:
    """(label, log, record) of every fakes_dataset run whose log holds a test AUC and a parameter count."""
    points = []
    for path in sorted(run.out_dir.glob("fakes_dataset_*.json")):
        record = last_record(path)
        if record and record.get("test_auc_at_best_val") is not None and record.get("config", {}).get("n_params"):
            tag = record.get("tag", "")
            points.append((record["model"] + (f" ({tag})" if tag else ""), path, record))
    return points


def auc_vs_params_png(points: list[tuple[str, Path, dict]]) -> bytes:
    from utils import new_figure

    fig, ax = new_figure(figsize=(6, 4))
    for label, _, record in points:
        x, y = record["config"]["n_params"], record["test_auc_at_best_val"]
        ax.scatter(x, y, s=30)
        ax.annotate(label, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set(xscale="log", xlabel="parameters (log scale)", ylabel="test AUC", title="fakes_dataset: AUC vs model size")
    ax.grid(alpha=.3)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return buffer.getvalue()


def lite_chapter(run: Run) -> str:
    parts = ["<h2 id='lite'>6. Beyond the assignment: EfficientNet-Lite0, pretrained and offline</h2>",
             "<p class='note'>The pretrained comparison that always works offline: its ImageNet weights ship with its "
             "pip package (README, Pretrained weights).</p>"]
    for dataset in ("synthetic_dataset", "fakes_dataset"):
        parts.append(f"<h3>EfficientNet-Lite0 on {dataset}</h3>")
        parts.append(training_answers(run, dataset, "EfficientNetLite0", None, 3,
                                      " (run_me.sh: --lr 2e-4 --scheduler cosine --warmup-epochs 1 --select-by auc)"))
        parts.append(metrics_answers(run, dataset, "EfficientNetLite0"))
        parts.append(figure(run, f"{run_name(dataset, 'EfficientNetLite0')}_saliency_maps_and_images_pairs.png",
                            f"Saliency of EfficientNet-Lite0 on {dataset}.",
                            analysis_command("saliency_map.py", dataset, "EfficientNetLite0")))
        for cls in ("Real", "Fake"):
            parts.append(figure(run, f"{run_name(dataset, 'EfficientNetLite0')}_{cls}_Image_grad_cam.png",
                                f"Grad-CAM of EfficientNet-Lite0 on a {cls.lower()} {dataset} test image.",
                                analysis_command("grad_cam_analysis.py", dataset, "EfficientNetLite0")))
    return "\n".join(parts)


def cross_dataset_chapter(run: Run) -> str:
    parts = ["<h2 id='cross'>7. Cross-dataset: each detector on the other's test set</h2>"]
    path = run.out_dir / "cross_eval.json"
    cells = read_json(path)
    how = ("python tools/cross_eval.py --checkpoints checkpoints/fakes_dataset_EfficientNetLite0_Adam.pt "
           "checkpoints/synthetic_dataset_EfficientNetLite0_Adam.pt --data-roots data")
    if isinstance(cells, list) and cells:
        rows = []
        for i, cell in enumerate(cells):
            if cell.get("auc") is None:
                rows.append([html.escape(cell["checkpoint"]), html.escape(cell["test_set"]), "n/a", "n/a", "n/a"])
                continue
            rows.append([html.escape(cell["checkpoint"]), html.escape(cell["test_set"]),
                         num(run, path, cells, f"{i}/n", "d"), num(run, path, cells, f"{i}/auc", ".4f"),
                         num(run, path, cells, f"{i}/accuracy", ".1%") + " %"])
        parts.append(table(["checkpoint", "test set", "images", "AUC", "accuracy at its threshold"], rows))
    else:
        parts.append(missing(run, "out/cross_eval.json", how))
    parts.append(figure(run, "cross_eval_auc.png", "AUC of every checkpoint (rows) on every test set (columns): the "
                        "diagonal is in-domain; off-diagonal cells near 0.5 mean the detector does not transfer.", how))
    return "\n".join(parts)


def generalization_chapter(run: Run) -> str:
    parts = ["<h2 id='generalization'>8. Generalization: training on self-blended fakes</h2>",
             figure(run, "self_blend_triplets.png", "Real face, its self-blend and the blend mask: the fakes "
                    "train_main.py --fakes self-blend trains on, made from real faces only (no manipulation tool's "
                    "fingerprint to memorise).", "python tools/show_self_blends.py -d fakes_dataset -n 6")]
    runs = [(p, last_record(p)) for p in sorted(run.out_dir.glob("*_selfblend*.json")) if "_adv" not in p.name]
    runs = [(p, r) for p, r in runs if r is not None]
    if runs:
        parts.append(table(["run", "epochs", "val AUC (self-blends) at best", "test AUC at best val"],
                           [[html.escape(p.stem), html.escape(str(len(r["val_acc"]))),
                             num(run, p, [r], "-1/best_val_auc", ".4f") if r.get("best_val_auc") is not None else "–",
                             num(run, p, [r], "-1/test_auc_at_best_val", ".4f")
                             if r.get("test_auc_at_best_val") is not None else "–"] for p, r in runs]))
    else:
        parts.append("<p class='note'>run_me.sh does not train a self-blended model (an hour or more on a CPU); "
                     "README, Generalization, gives the commands and the measured results.</p>")
    return "\n".join(parts)


def distortions_chapter(run: Run) -> str:
    parts = ["<h2 id='distortions'>9. Everyday distortions</h2>"]
    found = sorted(run.figures_dir.glob("*_corruption_curves.png"))
    for path in found:
        parts.append(figure(run, path.name, f"{path.stem.replace('_corruption_curves', '')}: AUC and accuracy as JPEG "
                            "quality falls, blur, noise and down-scaling grow; a flat curve is a robust detector.", ""))
    if not found:
        parts.append("<p class='note'>Not part of run_me.sh. Run <code>python robustness_analysis.py -m MODEL -cpp "
                     "CHECKPOINT -d DATASET --attacks none --corruptions jpeg,blur,noise,resize</code> to draw them."
                     "</p>")
    return "\n".join(parts)


def robustness_chapter(run: Run) -> str:
    parts = ["<h2 id='adversarial'>10. Adversarial robustness</h2>"]
    for model in ("SimpleNet", "Bonus"):
        for tag, what in (("", "plain"), ("advpgd", "PGD-trained")):
            name = run_name("fakes_dataset", model, tag=tag)
            path = run.figure(f"{name}_robustness.json")
            data = read_json(path)
            parts.append(f"<h3>{model} on fakes_dataset, {what}</h3>")
            how = (f"python robustness_analysis.py -m {model} -cpp checkpoints/{run_name('fakes_dataset', model, OPTIMIZER, tag)}"
                   f".pt -d fakes_dataset" + (f" --tag {tag}" if tag else ""))
            if isinstance(data, list) and data and isinstance(data[0].get("attacks"), dict):
                rows = []
                for attack, points in data[0]["attacks"].items():
                    rows.append([html.escape(attack.upper())] + [
                        f"ε {p['eps_255']:g}/255: " + num(run, path, data, f"0/attacks/{attack}/{j}/accuracy", ".1f")
                        + " %" for j, p in enumerate(points)])
                width = max(len(r) for r in rows)
                parts.append(table(["attack"] + ["accuracy"] * (width - 1), [r + [""] * (width - len(r)) for r in rows]))
            else:
                parts.append(missing(run, f"robustness of {name}", how))
            parts.append(figure(run, f"{name}_robustness_curves.png", "Accuracy and AUC as the attack budget ε grows: "
                                "a curve that falls to 0 at a few /255 is a detector any attacker can fool.", how))
            parts.append(figure(run, f"{name}_adversarial_examples.png", "Clean image, its PGD version and the "
                                "amplified perturbation: the change is invisible at the budgets that flip the answer.",
                                how))
    return "\n".join(parts)


def detect_chapter(run: Run) -> str:
    parts = ["<h2 id='detect'>11. Is this photo fake? detect.py</h2>"]
    found = False
    for dataset in DATASETS:
        path = run.out_dir / f"detect_{dataset}.csv"
        if not path.is_file():
            continue
        found = True
        lines = [row for row in csv.reader(path.read_text().splitlines()) if row]
        if lines:
            parts.append(f"<h3>{html.escape(dataset)} test images</h3>")
            parts.append(table(lines[0], [[html.escape(c) for c in row] for row in lines[1:]]))
        for picture in sorted(run.figure(f"detect_{dataset}").glob("*.png"))[:4]:
            parts.append(image(picture.read_bytes(), f"detect.py's annotated copy of {picture.name}: box, verdict and "
                               "P(fake), with the Grad-CAM of the face.", run.ref(picture)))
    if not found:
        parts.append("<p class='note'>detect.py ran on no image in this run (run_me.sh runs it on real faces only; "
                     "MTCNN finds no face in the demo drawings). README, Check your own photos, shows how.</p>")
    return "\n".join(parts)


def shipped_chapter(run: Run) -> str:
    """The card of the detector the repository ships (weights/card.json, tools/detector_card.py): what detect.py uses
    when no checkpoint is given."""
    parts = ["<h2 id='shipped'>12. The shipped detector (detect.py without -cpp)</h2>"]
    path = SHIPPED_DETECTOR.parent / "card.json"
    card = read_json(path)
    if not isinstance(card, dict) or not isinstance(card.get("test"), dict):
        parts.append(missing(run, "the shipped detector's card", "bash tools/build_detector.sh", path))
        return "\n".join(parts)
    t = card["threshold"]
    parts.append(f"<p>{html.escape(card['file'])}: {html.escape('; '.join(card['what']))}. A face is called fake at "
                 f"P(fake) &ge; {num(run, path, card, 'threshold/value', '.4f')} ({html.escape(t['source'])})"
                 + (f", uncertain from {num(run, path, card, 'threshold/band/0', '.4f')} to "
                    f"{num(run, path, card, 'threshold/band/1', '.4f')}" if t.get("band") else "") + ".</p>")
    rows = []
    for name, r in card["test"].items():
        key = f"test/{name}"
        rows.append([html.escape(name), num(run, path, card, f"{key}/n", "d"), num(run, path, card, f"{key}/auc", ".4f"),
                     num(run, path, card, f"{key}/accuracy", ".1%") + " %",
                     num(run, path, card, f"{key}/false_alarms", ".1%") + " %",
                     (num(run, path, card, f"{key}/uncertain", ".1%") + " %") if r.get("uncertain") is not None else "n/a"])
    parts.append(table(["test set", "images", "AUC", "accuracy at its threshold", "real faces called fake", "uncertain"],
                       rows))
    parts.append(f"<p class='note'>The whole card, with intervals, recipe, latency and checksums: "
                 f"<code>{html.escape(run.ref(path.with_name('README.md')))}</code>.</p>")
    return "\n".join(parts)


def times_chapter(run: Run) -> str:
    path = run.out_dir / "run_me_times.tsv"
    if not path.is_file():
        return "<h2 id='times'>Wall time per step</h2><p class='note'>No run_me_times.tsv (not run by run_me.sh).</p>"
    steps = read_step_times(path)
    total = sum(s for _, s in steps)
    rows = [[html.escape(name), f"{s:.0f}"] for name, s in steps] + [["<b>total</b>", f"<b>{total:.0f}</b>"]]
    return "<h2 id='times'>Wall time per step</h2>" + table(["step", "seconds"], rows)


def header(run: Run) -> str:
    """Title, what data the run used, and when the report was made."""
    record = next((r for r in (last_record(p) for p in sorted(run.out_dir.glob("*.json"))) if r and "config" in r), None)
    root = record["config"].get("data_root", "?") if record else "?"
    demo = ""
    if record is not None and is_demo_data(Path(str(root))):
        demo = (" <b>These are the built-in demo drawings, not real faces: the numbers only show that the pipeline "
                "runs.</b>")
    return (f"<h1>Facial manipulation detection: run report</h1><p class='note'>Logs from "
            f"<code>{html.escape(str(run.out_dir.resolve()))}</code>, figures from "
            f"<code>{html.escape(str(run.figures_dir.resolve()))}</code>, "
            f"data <code>{html.escape(str(root))}</code>; report written {time.strftime('%Y-%m-%d %H:%M')}.{demo}</p>")


CHAPTERS = (datasets_chapter, assignment_training_chapter, xception_chapter, explanation_chapter, bonus_chapter,
            lite_chapter, cross_dataset_chapter, generalization_chapter, distortions_chapter, robustness_chapter,
            detect_chapter, shipped_chapter, times_chapter)
CONTENTS = (("datasets", "Datasets"), ("simplenet", "SimpleNet"), ("xception", "Xception"),
            ("saliency", "Saliency and Grad-CAM"), ("bonus", "Bonus model"), ("lite", "EfficientNet-Lite0"),
            ("cross", "Cross-dataset"), ("generalization", "Generalization"), ("distortions", "Distortions"),
            ("adversarial", "Adversarial robustness"), ("detect", "detect.py"), ("shipped", "The shipped detector"),
            ("times", "Wall time"))


def build_report(out_dir: Path, figures_dir: Path, report_dir: Path) -> tuple[str, list[str]]:
    """The report's HTML and the list of what was missing."""
    run = Run(out_dir, figures_dir, report_dir)
    body = [header(run)]
    for chapter, (anchor, _) in zip(CHAPTERS, CONTENTS):
        run.chapter = anchor
        body.append(chapter(run))
    titles = dict(CONTENTS)
    contents = "".join(f"<li><a href='#{anchor}'>{title}</a></li>" for anchor, title in CONTENTS)
    where = ", ".join(f"<a href='#{a}'>{titles[a]}</a>" for a in run.chapters_with_gaps)
    gaps = (f"<p class='missing'>{len(run.missing)} item(s) missing, marked like this below, in: {where}.</p>"
            if run.missing else "<p class='note'>Every step's output is present.</p>")
    page = (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><meta name='generator' content='{GENERATOR}'>"
            "<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>Run report</title><style>{CSS}</style></head><body>{body[0]}{gaps}<nav><ol>{contents}</ol></nav>"
            + "\n".join(body[1:]) + "</body></html>\n")
    return page, run.missing


def find_chromium() -> str:
    """The headless browser that prints the PDF: $CHROMIUM, else the first Chromium/Chrome on PATH."""
    names = [os.environ["CHROMIUM"]] if os.environ.get("CHROMIUM") else list(CHROMIUM_NAMES)
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    raise UserError("--pdf prints with headless Chromium, which is not installed: `sudo apt-get install chromium` "
                    "(Debian/Ubuntu), or set CHROMIUM to a Chrome/Chromium binary; nothing was written: without --pdf "
                    "the HTML report is written, and it prints from any browser")


def chromium_command(browser: str, profile: str) -> list[str]:
    """Headless, offline flags: no first-run, no background network (the machine may have none)."""
    return [browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", f"--user-data-dir={profile}"]


def print_pdf(html_path: Path, pdf_path: Path) -> Path:
    """Print the report to PDF with headless Chromium (written to a temp file first, then moved into place)."""
    browser = find_chromium()
    with tempfile.TemporaryDirectory() as profile:
        partial = pdf_path.with_name(f".{pdf_path.name}.partial")
        cmd = chromium_command(browser, profile) + ["--no-pdf-header-footer", f"--print-to-pdf={partial}",
                                                    html_path.resolve().as_uri()]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        if proc.returncode != 0 or not partial.is_file() or partial.stat().st_size == 0:
            partial.unlink(missing_ok=True)
            raise UserError(f"Chromium could not print the PDF (exit {proc.returncode}): "
                            f"{(proc.stderr.strip().splitlines() or ['no message'])[-1]}")
        os.replace(partial, pdf_path)
    return pdf_path


def written_by_us(path: Path) -> bool:
    """Whether `path` is absent or a report this tool wrote (the only files it may write over)."""
    if not path.exists():
        return True
    try:
        return path.is_file() and GENERATOR in path.read_text(encoding="utf-8", errors="ignore")[:1000]
    except OSError:
        return False


def check_outputs(html_path: Path, pdf: bool) -> None:
    """Refuse, before any work, to write over a file of the user's: an HTML file this tool did not write, or a PDF
    beside an HTML file that is not (yet) one of its reports."""
    if not written_by_us(html_path):
        raise UserError(f"{html_path} exists and is not a report of this suite; pass another --output (nothing was written)")
    if pdf and html_path.with_suffix(".pdf").exists() and not html_path.exists():
        raise UserError(f"{html_path.with_suffix('.pdf')} exists and is not this report's PDF; pass another --output "
                        "(nothing was written)")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pdf", action="store_true", help="also print it to PDF beside the HTML (needs Chromium)")
    p.add_argument("--output", type=Path, help="the HTML file (default: <out-dir>/report.html)")
    add_output_flags(p, out="folder of the JSON logs", figures="folder of the figures")
    return p.parse_args(argv)


@cli_main
def main(argv: list[str] | None = None) -> Path:
    """Write the report (and with --pdf its PDF); returns the HTML file's path."""
    args = parse_args(argv)
    output = args.output or args.out_dir / "report.html"
    if not args.out_dir.is_dir():
        raise UserError(f"--out-dir {args.out_dir} does not exist: run the pipeline first (./run_me.sh), or point "
                        "--out-dir and --figures-dir at a run's folders")
    writable_dir(output.parent, "the report's folder")  # a read-only folder: one sentence, before any work
    check_outputs(output, args.pdf)
    if args.pdf:
        find_chromium()  # before the page is built, so a missing browser is said at once
    page, gaps = build_report(args.out_dir, args.figures_dir, output.parent)
    atomic_write(output, lambda tmp: Path(tmp).write_text(page, encoding="utf-8"))
    print(f"saved {output} ({len(page) / 1e6:.1f} MB, {len(gaps)} missing item(s))")
    if args.pdf:
        print(f"saved {print_pdf(output, output.with_suffix('.pdf'))}")
    return output


if __name__ == "__main__":
    main()
