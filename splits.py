"""A training run's data, from one entry point: the train/val/test splits of -d's folders or of a catalog, with the
dataset's own fakes, self-blends of real faces, or both; how the training faces are framed; and every check that
should stop a run before its first epoch (unreadable files, missing classes).

train_main.py calls build_splits(DataSettings, normalisation) and hands the three splits to the Trainer; nothing else
in the training path reads data folders.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image
from torch.utils.data import Dataset

from cli import UserError
from face_detection import Framing, measure_framing
from faces_dataset import (
    DatasetError,
    catalog_run_name,
    dataset_labels,
    evenly_spaced,
    get_transforms,
    load_dataset,
    real_faces_under,
    split_paths,
)
from landmarks import faces_not_found, folder_landmarks
from normalization import Normalization
from self_blend import HULLS, FakePairs, PairConcat, SelfBlendEvaluation, SelfBlendPairs

PREPROCESS_RECORD = "face_preprocess.json"  # written by tools/face_preprocess.py beside its crops


@dataclass(frozen=True)
class DataSettings:
    """What a run trains and is judged on (train_main.py's data flags, typed)."""

    dataset: str
    data_root: Path
    catalog: Path | None = None
    image_size: int = 256
    limit: int | None = None
    augment: bool | str = False
    decoder: str = "pil"
    random_crop: int | None = None
    fakes: str = "dataset"  # dataset | self-blend | both
    real_faces: Path | None = None
    blend_regions: tuple[str, ...] = tuple(HULLS)
    seed: int = 42

    @property
    def run_dataset_name(self) -> str:
        """The dataset part of the run's file names: -d, or 'catalog-<folder>' for a catalog (never -d's files)."""
        return self.dataset if self.catalog is None else catalog_run_name(self.catalog)


@dataclass
class RunSplits:
    """The three splits of a run, the face images the train split reads, and notes to tell the user once."""

    train: Dataset
    val: Dataset
    test: Dataset
    train_faces: list[Path]
    notes: list[str] = field(default_factory=list)


def build_splits(settings: DataSettings, norm: Normalization, progress: bool = True) -> RunSplits:
    """The run's splits (see the module's docstring): with fakes 'self-blend' the train split is (real, self-blend)
    pairs and val the self-blends of the val split's real faces; with 'both' the train pairs are followed by the
    dataset's own fakes two by two. Every file of every split is checked first, all problems in one message."""
    s = settings
    splits = [load_dataset(s.dataset, split, s.data_root, s.image_size, s.limit, norm, s.augment, catalog=s.catalog,
                           decoder=s.decoder, crop=s.random_crop) for split in ("train", "val", "test")]
    check_files([path for split in splits for label in (0, 1) for path in split_paths(split, label)])
    if s.fakes == "dataset":
        check_classes(splits[0], s.run_dataset_name)
        faces = split_paths(splits[0], 0) + split_paths(splits[0], 1)
        return RunSplits(*splits, faces, one_class_notes(splits[1], splits[2], s.run_dataset_name))
    plain = get_transforms(False, s.image_size, norm)
    limit = None if s.limit is None else max(1, s.limit // 2)
    reals = evenly_spaced(split_paths(splits[0], 0) if s.real_faces is None else real_faces_under(s.real_faces), limit)
    if not reals:
        raise UserError(f"no real face to self-blend in {s.real_faces or 'the train split'}")
    if s.real_faces is not None:
        check_files(reals)
    points = folder_landmarks(reals, progress=progress)
    notes = faceless_note(reals, s.real_faces or "the train split")
    train: Dataset = SelfBlendPairs(reals, points, plain, s.blend_regions)
    if s.fakes == "both":
        fakes = split_paths(splits[0], 1)
        train = PairConcat([train, FakePairs(fakes, get_transforms(True, s.image_size, norm, s.augment))])
        return RunSplits(train, splits[1], splits[2], reals + fakes, notes + one_class_notes(splits[1], splits[2],
                                                                                             s.run_dataset_name))
    val_reals = evenly_spaced(split_paths(splits[1], 0), limit)
    val = SelfBlendEvaluation(val_reals, folder_landmarks(val_reals, progress=progress), plain, s.seed, s.blend_regions)
    return RunSplits(train, val, splits[2], reals, notes + one_class_notes(val, splits[2], s.run_dataset_name))


def faceless_note(reals: list[Path], where: object) -> list[str]:
    """A note when dlib found no face in most of the real faces to blend (their masks then come from a box fitted to
    the image: right for tight face crops, wrong for anything that is not a face)."""
    missing = faces_not_found(reals)
    if len(missing) * 2 <= len(reals):
        return []
    return [f"dlib found no face in {len(missing)} of the {len(reals)} real faces of {where} (e.g. {missing[0]}); their "
            "blend masks come from a box fitted to the whole image, which is right only for tight face crops: check "
            "that these are faces"]


def check_classes(train: Dataset, name: str) -> None:
    """Refuse a train split that lacks a class: it would train silently to a constant answer."""
    present = set(dataset_labels(train))
    if present != {0, 1}:
        missing = "real" if 0 not in present else "fake"
        raise UserError(f"the {name} train split holds no {missing} images; a detector needs both classes")


def one_class_notes(val: Dataset, test: Dataset, name: str) -> list[str]:
    """What a val or test split holding one class means for the numbers the run prints, said once before training."""
    notes = []
    for split, dataset in (("val", val), ("test", test)):
        present = set(dataset_labels(dataset))
        if len(present) == 1:
            only = "real" if present == {0} else "fake"
            consequence = ("its AUC is undefined and no threshold can be chosen on real faces (checkpoints say so; "
                           "verdicts fall back to 0.5)" if split == "val" and only == "fake" else
                           "its AUC is undefined and its accuracy counts one class only")
            notes.append(f"the {name} {split} split holds {only} images only: {consequence}")
    return notes


def check_files(paths: list[Path]) -> None:
    """Every image decodable enough to be read later: its header opens and the file is not cut short (a JPEG ends with
    its end-of-image marker, a PNG with its IEND chunk). All problems are named in one message, before any epoch."""
    problems = []
    for path in paths:
        problem = file_problem(path)
        if problem:
            problems.append(f"{path} ({problem})")
    if problems:
        shown = "; ".join(problems[:10]) + (f"; and {len(problems) - 10} more" if len(problems) > 10 else "")
        raise DatasetError(f"{len(problems)} image file(s) cannot be read: {shown}. Replace or remove them (nothing was "
                           "trained)")


def file_problem(path: Path) -> str | None:
    """Why an image file cannot be used (missing, not an image, cut short), or None; reads the header and the tail."""
    try:
        with Image.open(path) as image:
            kind = image.format
        with open(path, "rb") as handle:
            handle.seek(0, 2)
            size = handle.tell()
            handle.seek(max(0, size - 32))
            tail = handle.read()
    except FileNotFoundError:
        return "missing"
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        return f"not a readable image: {err}"
    if kind == "JPEG" and b"\xff\xd9" not in tail:
        return "a JPEG cut short: no end-of-image marker"
    if kind == "PNG" and b"IEND" not in tail:
        return "a PNG cut short: no IEND chunk"
    return None


def training_framing(settings: DataSettings, train_faces: list[Path], device: str = "auto") -> Framing:
    """How the training faces are framed (detect.py cuts a user's faces the same way), from the data the run reads and
    never from a dataset's name: the record tools/face_preprocess.py left beside the crops (--margin), else measured
    on the train faces themselves (face_detection.measure_framing)."""
    where = settings.real_faces or settings.catalog or settings.data_root / settings.dataset
    folder = Path(where) if Path(where).is_dir() else Path(where).parent
    for candidate in (folder / PREPROCESS_RECORD, folder.parent / PREPROCESS_RECORD):
        record = read_record(candidate)
        if record is not None and record.get("margin") is not None and (
                candidate.parent == folder or record.get("dataset") == folder.name):
            return Framing(float(record["margin"]), f"{candidate} (tools/face_preprocess.py --margin)")
    return measure_framing(train_faces, f"the train faces of {where}", device)


def read_record(path: Path) -> dict | None:
    """face_preprocess.json's settings, or None when absent or unreadable."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
