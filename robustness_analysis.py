"""How a trained detector holds up against adversarial perturbations: accuracy and AUC under FGSM/PGD per budget,
and Carlini-Wagner L2 success rate and perturbation size on a small subset of fakes.

    python robustness_analysis.py -m SimpleNet -cpp checkpoints/fakes_dataset_SimpleNet_Adam.pt -d fakes_dataset
    python robustness_analysis.py -m SimpleNet -cpp checkpoints/fakes_dataset_SimpleNet_Adam_advpgd.pt \
        -d fakes_dataset --tag advpgd --overlay figures/fakes_dataset_SimpleNet_robustness.json

Everyday distortions instead of (or beside) the attacks: --corruptions jpeg,blur,noise,resize scores the test split
under JPEG quality 95/75/50/30/10, Gaussian blur sigma 0.5/1/2/3, Gaussian noise sigma 2/5/10/20 grey levels and
down-then-up scaling 0.75/0.5/0.25, applied to the pixels before the model's own transform (--attacks none skips the
attacks); ..._corruption_curves.png draws AUC and accuracy per family, with --overlay runs for comparison (e.g. a
model trained with --augment).

Budgets (--epsilons) are L-inf in grey levels of 255 (8 means 8/255 on the [0,1] scale). Writes, under figures/,
<dataset>_<model>[_<tag>]_robustness.json, ..._robustness_curves.png (accuracy and AUC vs eps; --overlay adds the
curves of other runs' JSON for comparison) and ..._adversarial_examples.png (clean / PGD / amplified perturbation).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from torch import nn
from torch.utils.data import Dataset, Subset
from tqdm import tqdm

from analysis import AnalysisInputs, add_analysis_args, analysis_inputs_from_flags, get_soft_scores_and_true_labels
from attacks import CORRUPTIONS, Corruption, attack_batch, cw_attack
from cli import UserError, cli_main, comma_choices, finite_float, non_negative_int, positive_float, positive_int
from common import DEFAULT_PGD_STEPS, ROBUSTNESS_EPSILONS
from faces_dataset import dataset_labels, load_dataset
from files import atomic_write_json
from metrics import safe_auc
from models import MODEL_NAMES, p_fake
from normalization import Normalization, denormalize, normalize
from run_store import read_json_list
from utils import make_loader, new_figure, sample_batch, save_figure


def evaluate_under_attack(
    model: nn.Module, norm: Normalization, dataset: Dataset, attack: str, eps: float, steps: int, alpha: float | None,
    batch_size: int, device: torch.device, seed: int, progress: bool = True, num_workers: int | None = None,
) -> dict:
    """Accuracy (%), AUC and the fake->real evasion rate (%) on `dataset` attacked (untargeted) with budget eps.

    Scores are P(fake) (softmax output 1), pixels are undone and redone with the model's normalisation `norm`.
    """
    torch.manual_seed(seed)
    scores, labels = [], []
    desc = f"{attack} eps={eps * 255:.0f}/255"
    loader = make_loader(dataset, batch_size, False, device, num_workers)
    for images, y in tqdm(loader, desc=desc, leave=False, disable=not progress):
        x01, y = denormalize(images.to(device), norm), y.to(device)
        if eps > 0:
            x01 = attack_batch(attack, model, x01, y, eps=eps, alpha=alpha, steps=steps, norm=norm)
        with torch.no_grad():
            scores.append(p_fake(model(normalize(x01, norm))).cpu())
        labels.append(y.cpu())
    s, y = torch.cat(scores).numpy(), torch.cat(labels).numpy()
    predicted = (s >= 0.5).astype(int)
    fakes = y == 1
    return {
        "accuracy": float(100 * (predicted == y).mean()),
        "auc": float(roc_auc_score(y, s)) if len(np.unique(y)) == 2 else None,
        "fake_evasion_rate": float(100 * (predicted[fakes] == 0).mean()) if fakes.any() else None,
    }


def cw_summary(model: nn.Module, norm: Normalization, images01: torch.Tensor, labels: torch.Tensor, steps: int,
               search: int) -> dict:
    """C&W L2 on a few images: success rate (%) and the median / mean L2 of the successful perturbations."""
    adv = cw_attack(model, images01, labels, steps=steps, binary_search_steps=search, norm=norm)
    with torch.no_grad():
        clean_right = model(normalize(images01, norm)).argmax(1) == labels
        fooled = model(normalize(adv, norm)).argmax(1) != labels
    success = clean_right & fooled
    l2 = (adv - images01).flatten(1).norm(dim=1)[success]
    n = int(clean_right.sum())
    return {
        "n_images": len(labels),
        "n_correct_before": n,
        "success_rate": float(100 * success.sum() / n) if n else None,
        "median_l2": float(l2.median()) if len(l2) else None,
        "mean_l2": float(l2.mean()) if len(l2) else None,
        "steps": steps,
        "binary_search_steps": search,
    }


def plot_curves(result: dict, overlays: list[dict], title: str, path: Path, provenance: dict | None = None) -> Path:
    """Accuracy and AUC against eps (in /255), one line per attack and run; a series with no finite value is not drawn
    (nor listed in the legend), and an overlay that adds nothing is named once."""
    fig, axes = new_figure(1, 2, figsize=(11, 4.2))
    for run, style in [(result, "-o")] + [(o, "--s") for o in overlays]:
        label = run.get("tag") or "plain"
        drawn = 0
        for attack, rows in run.get("attacks", {}).items():
            eps = [r["eps_255"] for r in rows]
            for ax, key in zip(axes, ("accuracy", "auc")):
                values = [np.nan if r.get(key) is None else r[key] for r in rows]
                if np.isfinite(values).any():
                    ax.plot(eps, values, style, label=f"{attack.upper()} ({label})")
                    drawn += 1
        if not drawn and run is not result:
            print(f"note: the overlay {run.get('checkpoint', label)} holds no attack curve to draw (no finite accuracy or AUC)")
    axes[0].set_ylabel("accuracy (%)")
    axes[1].set_ylabel("AUC")
    for ax in axes:
        ax.set_xlabel("L-inf budget eps (grey levels of 255)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].axhline(50, color="grey", lw=0.8, ls=":")
    axes[1].axhline(0.5, color="grey", lw=0.8, ls=":")
    fig.suptitle(title)
    return save_figure(fig, path, provenance)


def evaluate_corruptions(inputs: AnalysisInputs, families: list[str], data_root: Path, catalog: Path | None,
                         limit: int | None, batch_size: int, progress: bool = True,
                         num_workers: int | None = None) -> dict[str, list[dict]]:
    """AUC and accuracy at 0.5 per family and severity, each distortion applied before the detector's transform."""
    detector, results = inputs.detector, {}
    for family in families:
        rows = []
        for severity in CORRUPTIONS[family]:
            data = load_dataset(inputs.dataset_name, "test", data_root, detector.image_size, limit, detector.normalization,
                                pixel_transform=Corruption(family, severity), catalog=catalog)
            _, scores, labels = get_soft_scores_and_true_labels(data, detector.module, batch_size, inputs.device, progress,
                                                                num_workers)
            rows.append({"severity": severity, "auc": safe_auc(labels, scores),
                         "accuracy": float(100 * ((scores >= 0.5) == labels).mean())})
            print(f"{family:6s} {severity:>5g}: accuracy {rows[-1]['accuracy']:6.2f}%  AUC {rows[-1]['auc']}")
        results[family] = rows
    return results


def plot_corruptions(result: dict, overlays: list[dict], title: str, path: Path, provenance: dict | None = None) -> Path:
    """One panel per family: AUC (solid) and accuracy / 100 (dotted) against severity, clean values as a line."""
    families = list(result["corruptions"])
    fig, axes = new_figure(1, len(families), figsize=(4.2 * len(families), 4.0), squeeze=False)
    axis_names = {"jpeg": "JPEG quality (lower is worse)", "blur": "Gaussian blur sigma (px)",
                  "noise": "Gaussian noise sigma (grey levels)", "resize": "down-scaling factor (lower is worse)"}
    for ax, family in zip(axes[0], families):
        for run, marker in [(result, "o")] + [(o, "s") for o in overlays]:
            rows = run.get("corruptions", {}).get(family)
            if not rows:
                continue
            label = run.get("tag") or "plain"
            x = [r["severity"] for r in rows]
            line = ax.plot(x, [r["auc"] if r["auc"] is not None else np.nan for r in rows], f"-{marker}", label=f"AUC ({label})")
            ax.plot(x, [r["accuracy"] / 100 for r in rows], f":{marker}", color=line[0].get_color(), label=f"accuracy ({label})")
            if run.get("clean_auc") is not None:
                ax.axhline(run["clean_auc"], color=line[0].get_color(), lw=0.8, alpha=0.5)
        if family in ("jpeg", "resize"):
            ax.invert_xaxis()  # worse to the right, as for the other families
        ax.set_xlabel(axis_names[family])
        ax.set_ylim(0.3, 1.0)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("AUC / accuracy (thin line: clean AUC)")
    fig.suptitle(title)
    return save_figure(fig, path, provenance)


def plot_examples(model: nn.Module, norm: Normalization, images01: torch.Tensor, labels: torch.Tensor, eps: float,
                  steps: int, title: str, path: Path, provenance: dict | None = None) -> Path:
    """Rows: clean image, PGD adversarial image, perturbation amplified to the full range; titles carry P(fake)."""
    adv = attack_batch("pgd", model, images01, labels, eps=eps, steps=steps, norm=norm)
    with torch.no_grad():
        p_clean = p_fake(model(normalize(images01, norm))).cpu()
        p_adv = p_fake(model(normalize(adv, norm))).cpu()
    delta = (adv - images01).cpu()
    amplified = (delta / (2 * max(eps, 1e-12)) + 0.5).clamp(0, 1)
    n = len(labels)
    fig, axes = new_figure(3, n, figsize=(2.3 * n, 7.2), squeeze=False)
    rows = [(images01.cpu(), "clean", p_clean), (adv.cpu(), f"PGD {eps * 255:.0f}/255", p_adv), (amplified, "perturbation x", None)]
    for r, (batch, name, probs) in enumerate(rows):
        for k in range(n):
            ax = axes[r, k]
            ax.imshow(batch[k].permute(1, 2, 0).numpy())
            ax.axis("off")
            ax.set_title(f"{name}\nP(fake) = {probs[k]:.2f}" if probs is not None else "perturbation (amplified)", fontsize=8)
    fig.suptitle(title)
    return save_figure(fig, path, provenance)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_analysis_args(p, MODEL_NAMES)
    p.add_argument("--attacks", nargs="+", choices=("fgsm", "pgd", "none"), default=["fgsm", "pgd"],
                   help="attacks per budget ('none' skips them, e.g. with --corruptions)")
    p.add_argument("--corruptions", type=comma_choices(CORRUPTIONS), default=[], metavar="jpeg,blur,noise,resize",
                   help="everyday distortions to score the test split under (default: none)")
    p.add_argument("--epsilons", nargs="+", type=finite_float, default=[e * 255 for e in ROBUSTNESS_EPSILONS],
                   help="L-inf budgets in grey levels of 255 (default: 0 1 2 4 8)")
    p.add_argument("--steps", type=positive_int, default=DEFAULT_PGD_STEPS, help="PGD steps (default: %(default)s)")
    p.add_argument("--alpha", type=positive_float, help="PGD step in [0,1] units (default: 2.5 * eps / steps)")
    p.add_argument("--cw-samples", type=non_negative_int, default=8, help="fake images attacked by C&W (0 skips it; default: %(default)s)")
    p.add_argument("--cw-steps", type=positive_int, default=50, help="Adam steps per C&W search round (default: %(default)s)")
    p.add_argument("--cw-search", type=positive_int, default=4, help="C&W binary-search rounds over c (default: %(default)s)")
    p.add_argument("--n-examples", type=positive_int, default=4, help="images in the examples figure (default: %(default)s)")
    p.add_argument("--tag", default="", help="name of this variant in file names and legends (e.g. advpgd)")
    p.add_argument("--overlay", nargs="*", type=Path, default=[], help="robustness JSON files of other runs to draw too")
    args = p.parse_args(argv)
    args.attacks = [a for a in args.attacks if a != "none"]
    if any(e < 0 or e > 255 for e in args.epsilons):
        p.error("--epsilons are grey levels in [0, 255], e.g. 0 1 2 4 8")
    return args


def load_overlays(paths: list[Path]) -> list[dict]:
    """Other runs' robustness results (each file holds a one-element list)."""
    overlays = []
    for path in paths:
        if not path.is_file():
            raise UserError(f"--overlay {path} does not exist; run robustness_analysis.py on that checkpoint first")
        records = read_json_list(path)
        if not records or ("attacks" not in records[0] and "corruptions" not in records[0]):
            raise UserError(f"{path} is not a robustness JSON written by robustness_analysis.py")
        overlays.append(records[0])
    return overlays


@cli_main
def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    overlays = load_overlays(args.overlay)
    inputs = analysis_inputs_from_flags(args)
    model, test_dataset, device = inputs.model, inputs.dataset, inputs.device
    norm, model_name, dataset_name = inputs.detector.normalization, inputs.detector.name, inputs.dataset_name
    # a variant's own checkpoint already names its tag (analysis.output_prefix); --tag labels the legends either way
    name = inputs.prefix if not args.tag or inputs.prefix.endswith(f"_{args.tag}") else f"{inputs.prefix}_{args.tag}"
    result: dict = {"model": model_name, "dataset": dataset_name, "checkpoint": str(args.checkpoint_path), "tag": args.tag,
                    "checkpoint_sha256": inputs.detector.sha256,
                    "n_test": len(test_dataset), "pgd_steps": args.steps, "attacks": {}}
    for attack in args.attacks:
        rows = []
        for eps255 in args.epsilons:
            r = evaluate_under_attack(model, norm, test_dataset, attack, eps255 / 255, args.steps, args.alpha, args.batch_size,
                                      device, args.seed, not args.no_progress, args.num_workers)
            rows.append({"eps_255": eps255, **r})
            print(f"{attack.upper():4s} eps {eps255:4.1f}/255: accuracy {r['accuracy']:6.2f}%  AUC "
                  f"{r['auc'] if r['auc'] is None else round(r['auc'], 4)}  fakes passed as real {r['fake_evasion_rate']}%")
        result["attacks"][attack] = rows

    labels = np.asarray(dataset_labels(test_dataset))
    fake_subset = Subset(test_dataset, np.flatnonzero(labels == 1).tolist())
    if args.attacks and args.cw_samples > 0 and len(fake_subset):
        images, y = sample_batch(fake_subset, min(args.cw_samples, len(fake_subset)), args.seed)
        result["cw"] = cw_summary(model, norm, denormalize(images.to(device), norm), y.to(device), args.cw_steps, args.cw_search)
        print(f"C&W L2 on {result['cw']['n_images']} fakes: success {result['cw']['success_rate']}%, "
              f"median L2 {result['cw']['median_l2']}")
    if args.corruptions:
        _, clean_scores, clean_labels = get_soft_scores_and_true_labels(test_dataset, model, args.batch_size, device,
                                                                        not args.no_progress, args.num_workers)
        distorted = {"model": model_name, "dataset": dataset_name, "checkpoint": str(args.checkpoint_path),
                     "tag": args.tag, "n_test": len(test_dataset), "clean_auc": safe_auc(clean_labels, clean_scores),
                     "corruptions": evaluate_corruptions(inputs, args.corruptions, args.data_root, args.catalog, args.limit,
                                                         args.batch_size, not args.no_progress, args.num_workers)}
        atomic_write_json(args.figures_dir / f"{name}_corruptions.json", [distorted])
        plot_corruptions(distorted, overlays, f"{model_name} on {dataset_name}" + (f" ({args.tag})" if args.tag else "")
                         + ": everyday distortions", args.figures_dir / f"{name}_corruption_curves.png", inputs.provenance)
        result["corruptions"] = distorted["corruptions"]
    if not args.attacks:
        return result

    atomic_write_json(args.figures_dir / f"{name}_robustness.json", [result])
    title = f"{model_name} on {dataset_name}" + (f" ({args.tag})" if args.tag else "") + f": robustness, PGD-{args.steps}"
    plot_curves(result, overlays, title, args.figures_dir / f"{name}_robustness_curves.png", inputs.provenance)
    if len(fake_subset):
        images, y = sample_batch(fake_subset, min(args.n_examples, len(fake_subset)), args.seed + 1)
        plot_examples(model, norm, denormalize(images.to(device), norm), y.to(device), max(args.epsilons) / 255, args.steps,
                      f"Fake test images pushed towards 'real' ({model_name}, {dataset_name})",
                      args.figures_dir / f"{name}_adversarial_examples.png", inputs.provenance)
    return result


if __name__ == "__main__":
    main()
