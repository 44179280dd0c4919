"""Join several datasets' splits into one catalog.csv, so that one model trains on all their fakes at once (the joint
model of the shipped detector).

    python tools/join_datasets.py --data-root ../shared/data --datasets fakes_dataset synthetic_dataset \\
        --repeat synthetic_dataset=3 --out build/joint/catalog.csv
    python train_main.py --catalog build/joint/catalog.csv -m EfficientNetLite0 ...   # run name: catalog-joint_...

Every image of <root>/<dataset>/{train,val,test}/{real,fake}/ becomes one row (absolute path, the path under the root as
its source, label 0 real / 1 fake, its split), so each split stays the split it was: nothing moves between train, val
and test. --repeat NAME=K lists NAME's train images K times, so a small dataset weighs more in each epoch (val and test
rows are never repeated: their metrics stay those of the data as it is). An existing catalog is never written over.
"""
from __future__ import annotations

import argparse
import csv
import io
from pathlib import Path

from cli import UserError, add_data_flags, cli_main, positive_int
from common import CLASS_NAMES, DATASETS, SPLITS
from faces_dataset import dataset_dir, list_images
from files import atomic_write


def repeat_entry(text: str) -> tuple[str, int]:
    """NAME=K of --repeat: a dataset of the suite and a positive count."""
    name, sep, count = text.partition("=")
    if not sep or name not in DATASETS:
        raise argparse.ArgumentTypeError(f"expected NAME=K with NAME one of {', '.join(DATASETS)}, got {text!r}")
    return name, positive_int(count)


def catalog_rows(data_root: Path, datasets: list[str], repeat: dict[str, int]) -> list[dict[str, str]]:
    """The rows of the joined catalog, dataset by dataset, split by split, real before fake, each file in name order;
    a dataset's train rows each listed repeat[dataset] times in a row."""
    rows = []
    root = data_root.resolve()
    for name in datasets:
        for split in SPLITS:
            for label, folder in enumerate(CLASS_NAMES):
                class_dir = dataset_dir(name, split, root) / folder
                images = list_images(class_dir) if class_dir.is_dir() else []
                if not images:
                    raise UserError(f"{class_dir} holds no image: every dataset needs real and fake "
                                    "faces in train, val and test")
                times = repeat.get(name, 1) if split == "train" else 1
                for path in (p for p in images for _ in range(times)):
                    rows.append({"path": str(path), "source": path.relative_to(root).as_posix(), "label": str(label),
                                 "split": split})
    return rows


def write_catalog(path: Path, rows: list[dict[str, str]]) -> None:
    """The catalog as CSV, written atomically (a cut run leaves no half catalog)."""
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=("path", "source", "label", "split"), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(path, lambda tmp: Path(tmp).write_text(text.getvalue()), "catalog")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", nargs="+", choices=DATASETS, default=list(DATASETS), help="datasets to join "
                   "(default: all)")
    p.add_argument("--repeat", nargs="*", type=repeat_entry, default=[], metavar="NAME=K",
                   help="list NAME's train images K times (default: once)")
    p.add_argument("--out", type=Path, required=True, help="the catalog.csv to write (never written over); its "
                   "folder names the training run (catalog-<folder>)")
    add_data_flags(p, dataset=False)
    return p.parse_args(argv)


@cli_main
def main(argv: list[str] | None = None) -> Path:
    args = parse_args(argv)
    repeat = dict(args.repeat)
    if unknown := set(repeat) - set(args.datasets):
        raise UserError(f"--repeat names {', '.join(sorted(unknown))}, which --datasets does not join")
    if args.out.exists():
        raise UserError(f"{args.out} exists; a catalog is never written over: remove it or choose another --out")
    rows = catalog_rows(args.data_root, args.datasets, repeat)
    write_catalog(args.out, rows)
    counts = {split: sum(r["split"] == split for r in rows) for split in SPLITS}
    print(f"wrote {args.out}: " + ", ".join(f"{n} {split}" for split, n in counts.items()) + " rows")
    return args.out


if __name__ == "__main__":
    main()
