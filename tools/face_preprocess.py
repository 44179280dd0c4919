"""Turn videos or photos into aligned face crops (facenet-pytorch MTCNN) plus a catalog.csv the suite can train on.

    python tools/face_preprocess.py --video-dir videos/ --out-dir data/crops --fps 1
    python tools/face_preprocess.py --video-dir videos/ --out-dir data --layout assignment --dataset fakes_dataset
    python tools/face_preprocess.py --image-dir photos/ --out-dir data/crops --label-from none

Labels come from folder names in a source's path (real/original/pristine -> 0, fake/manipulated/deepfakes/... -> 1).
Every source is assigned to one split (train/val/test, by a hash of its path and --seed), so frames of one video, which
are near duplicates, never leak across splits. `--layout assignment` writes the crops straight into
<out>/<dataset>/{train,val,test}/{real,fake}/; the default `flat` layout writes <out>/<real|fake|unlabelled>/.
catalog.csv (path relative to --out-dir, source, frame_index, timestamp, box, detection probability, label, split) is
appended per source, so an interrupted run resumes where it stopped; unreadable files are reported and skipped.
face_preprocess.json records the settings that shape the crops (margin, size, split fractions, seed, ...): training
reads the crops' framing from it, and a resumed run with other settings is refused. The tool's own outputs (anything
under --out-dir, even when it lies inside the source folder) and hidden files are never sources.
Frames are read with ffmpeg when it is on PATH, else with OpenCV's VideoCapture (--extractor picks one).
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from cli import (
    UserError,
    add_device_flag,
    add_progress_flag,
    cli_main,
    non_negative_float,
    positive_float,
    positive_int,
    probability,
    writable_dir,
)
from common import CLASS_NAMES, DATASETS, DEFAULT_SEED, IMAGE_EXTENSIONS
from face_detection import (
    DEFAULT_MARGIN,
    DEFAULT_MIN_PROB,
    VIDEO_EXTENSIONS,
    FaceDetector,
    crop_face,
    frame_reader,
    square_box,
)
from faces_dataset import CATALOG_COLUMNS, label_from_path, list_files_under, load_rgb
from files import atomic_write, atomic_write_json

SPLIT_NAMES = ("train", "val", "test")


def split_of(source: str, fractions: tuple[float, float, float], seed: int) -> str:
    """A stable split for a source: a hash of (seed, source) mapped into the cumulative fractions."""
    digest = hashlib.sha256(f"{seed}:{source}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    edges = np.cumsum(fractions) / sum(fractions)
    return SPLIT_NAMES[int(np.searchsorted(edges, u, side="right"))]


def crop_stem(relative: Path) -> str:
    """The file-name stem of a source's crops: its path joined with '_' (extension included, so clip.mp4 and clip.avi
    differ) and 8 hex digits of the path's hash (so real/a/clip.mp4 and real/a_clip.mp4 differ too)."""
    readable = "_".join(relative.parts).replace(".", "_")
    return f"{readable}_{hashlib.sha256(relative.as_posix().encode()).hexdigest()[:8]}"


def read_catalog(path: Path) -> tuple[list[dict], set[str]]:
    """Rows of an existing catalog and the sources already in it (for resuming). A last line cut short by a kill is
    removed from the file with every row of its source, so that source is done again and the next row is not glued
    onto it."""
    if not path.is_file():
        return [], set()
    with open(path, newline="") as f:
        text = f.read()
    if text and not text.endswith("\n"):
        complete, _, cut = text.rpartition("\n")
        cut_fields = next(csv.reader([cut]), [])
        rows = list(csv.DictReader(io.StringIO(complete + "\n")))
        source = cut_fields[1] if len(cut_fields) > 1 else (rows[-1]["source"] if rows else None)
        rows = [r for r in rows if r["source"] != source]
        atomic_write(path, lambda tmp: write_rows(Path(tmp), rows))
        print(f"note: line {text.count(chr(10)) + 1} of {path} was cut short (an interrupted run); its source's rows "
              "are removed and it will be done again")
        return rows, {r["source"] for r in rows}
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return rows, {r["source"] for r in rows}


def write_rows(path: Path, rows: list[dict]) -> None:
    """A whole catalog: header and rows."""
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CATALOG_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def append_rows(path: Path, rows: list[dict]) -> None:
    """Add one source's rows to the catalog (the header first when it is new)."""
    new = not path.is_file()
    with open(path, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CATALOG_COLUMNS)
        if new:
            writer.writeheader()
        writer.writerows(rows)


def crop_folder(args: argparse.Namespace, label: int | None, split: str) -> Path:
    cls = CLASS_NAMES[label] if label is not None else "unlabelled"
    if args.layout == "assignment":
        return Path(args.dataset) / split / cls
    return Path(cls)


def process_source(args, detector: FaceDetector, path: Path, relative: Path, frames: Iterator) -> list[dict]:
    """Detect, crop and save the faces of one video or image; returns its catalog rows."""
    label = label_from_path(relative) if args.label_from == "folder" else None
    split = split_of(relative.as_posix(), tuple(args.split), args.seed)
    folder = crop_folder(args, label, split)
    try:
        (args.out_dir / folder).mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"cannot create {args.out_dir / folder} ({err.strerror or err}); pick another --out-dir") from err
    stem = crop_stem(relative)
    rows = []
    batch: list[tuple[int, float, Image.Image]] = []

    def flush() -> None:
        for (index, ts, image), faces in zip(batch, detector.detect([b[2] for b in batch])):
            if not faces:
                continue
            face = faces[0]  # the most confident face of the frame
            x1, y1, x2, y2 = square_box(face.box, args.margin, *image.size)
            name = folder / f"{stem}_f{index:06d}.png"
            save_output(crop_face(image, face, args.margin, args.size), args.out_dir / name)
            rows.append({"path": name.as_posix(), "source": relative.as_posix(), "frame_index": index,
                         "timestamp": round(ts, 3), "x1": x1, "y1": y1, "x2": x2, "y2": y2, "prob": round(face.prob, 4),
                         "label": "" if label is None else label, "split": split})
        batch.clear()

    for frame in frames:
        batch.append(frame)
        if len(batch) == args.batch_size:
            flush()
    if batch:
        flush()
    return rows


class OutputError(UserError):
    """Writing into --out-dir failed: not a bad source, so the run stops instead of skipping every source."""


def save_output(image: Image.Image, path: Path) -> None:
    """Save a crop; a full or read-only output folder stops the run with one sentence (OutputError)."""
    try:
        image.save(path)
    except OSError as err:
        path.unlink(missing_ok=True)  # no half-written crop
        raise OutputError(f"cannot write {path} ({err.strerror or err}); free space or pick another --out-dir") from err


CROP_NAME = re.compile(r"_[0-9a-f]{8}_f\d{6}\.png$")  # crop_stem(...) + _f<frame>.png, as process_source names crops


def list_sources(root: Path, extensions: tuple[str, ...], out_dir: Path, rows: list[dict]) -> list[Path]:
    """The videos or photos under root to crop: hidden files skipped, and never this tool's own outputs (a crop its
    catalog lists, or a file under --out-dir named as it names crops: one an interrupted run saved before its row),
    which a second run into the same folder would otherwise crop again into splits of their own, putting one face in
    two splits."""
    out = out_dir.resolve()
    listed = {(out / r["path"]).resolve() for r in rows}

    def own(path: Path) -> bool:
        resolved = path.resolve()
        return resolved in listed or (resolved.is_relative_to(out) and bool(CROP_NAME.search(path.name)))

    return [p for p in list_files_under(root, extensions) if not own(p)]


SETTINGS_FILE = "face_preprocess.json"
# the settings that shape the crops and their splits: a resumed run must share them with the run it continues
SHAPING = ("margin", "size", "split", "seed", "min_prob", "layout", "dataset", "label_from", "fps", "max_frames")


def settings_record(args: argparse.Namespace) -> dict:
    """What a run's crops are, for the folder's own record: how they were framed (the margin training reads) and split."""
    return {key: getattr(args, key) for key in SHAPING}


def check_resume(out_dir: Path, record: dict, resuming: bool) -> None:
    """Refuse a resumed run whose shaping settings differ from the record of the run it continues (its crops and
    splits would mix two recipes); write the record for a new run."""
    path = out_dir / SETTINGS_FILE
    if path.is_file():
        try:
            saved = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise UserError(f"{path} is not readable ({err}); it records how the crops in {out_dir} were made: restore it, "
                            "or use a new --out-dir") from err
        changed = [f"--{k.replace('_', '-')} {saved[k]!r} -> {record[k]!r}" for k in SHAPING
                   if k in saved and saved[k] != record[k]]
        if changed:
            raise UserError(f"{out_dir} holds crops made with other settings ({', '.join(changed)}); resuming would mix "
                            "two recipes in one catalog: run with the same settings, or write into a new --out-dir")
        return
    if resuming:
        print(f"note: {out_dir} has a catalog but no {SETTINGS_FILE} (an older version wrote it); its settings are not "
              "checked against this run's")
    atomic_write_json(path, record)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--video-dir", type=Path, help="folder of videos (searched recursively)")
    src.add_argument("--image-dir", type=Path, help="folder of photos (searched recursively)")
    p.add_argument("--out-dir", type=Path, required=True, help="where crops and catalog.csv go")
    p.add_argument("--fps", type=positive_float, default=1.0, help="frames sampled per second of video (default: %(default)s)")
    p.add_argument("--max-frames", type=positive_int, default=32, help="at most this many frames per video (default: %(default)s)")
    p.add_argument("--size", type=positive_int, default=256, help="side of the saved square crops (default: %(default)s)")
    p.add_argument("--margin", type=non_negative_float, default=DEFAULT_MARGIN, help="box growth per side, share of its size (default: %(default)s)")
    p.add_argument("--min-prob", type=probability, default=DEFAULT_MIN_PROB, help="minimum MTCNN face probability (default: %(default)s)")
    p.add_argument("--batch-size", type=positive_int, default=16, help="frames per MTCNN batch (default: %(default)s)")
    add_device_flag(p)
    p.add_argument("--label-from", choices=("folder", "none"), default="folder", help="label source (default: folder)")
    p.add_argument("--layout", choices=("flat", "assignment"), default="flat", help="output layout (default: flat)")
    p.add_argument("--dataset", choices=DATASETS, default=DATASETS[0], help="dataset folder for --layout assignment")
    p.add_argument("--split", type=non_negative_float, nargs=3, default=[0.7, 0.15, 0.15], metavar=("TRAIN", "VAL", "TEST"),
                   help="split fractions by source (default: 0.7 0.15 0.15)")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED, help="seed of the split assignment (default: %(default)s)")
    p.add_argument("--extractor", choices=("auto", "ffmpeg", "opencv"), default="auto", help="frame reader (default: auto)")
    add_progress_flag(p)
    args = p.parse_args(argv)
    if args.layout == "assignment" and args.label_from != "folder":
        p.error("--layout assignment needs labels: use --label-from folder")
    if min(args.split) < 0 or sum(args.split) <= 0:
        p.error("--split fractions must be non-negative and not all zero")
    return args


@cli_main
def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    root = args.video_dir or args.image_dir
    if not root.is_dir():
        raise UserError(f"{root} is not a folder")
    videos = args.video_dir is not None
    read, extractor = frame_reader(args.extractor)
    if videos:
        print(f"reading frames with {extractor}" + (" (ffmpeg not on PATH)" if extractor == "opencv" else ""))
    writable_dir(args.out_dir, "--out-dir")  # before any video is decoded
    catalog = args.out_dir / "catalog.csv"
    rows, done = read_catalog(catalog)
    check_resume(args.out_dir, settings_record(args), bool(rows))
    sources = list_sources(root, VIDEO_EXTENSIONS if videos else IMAGE_EXTENSIONS, args.out_dir, rows)
    if not sources:
        raise UserError(f"no {'videos' if videos else 'images'} found under {root} (besides this tool's own outputs)")
    todo = [s for s in sources if s.relative_to(root).as_posix() not in done]
    if done:
        print(f"resuming: {len(sources) - len(todo)} of {len(sources)} sources already in {catalog}")
    detector = FaceDetector(args.device, args.min_prob)
    skipped = []
    for path in tqdm(todo, desc="sources", unit="file", disable=args.no_progress):
        relative = path.relative_to(root)
        if args.label_from == "folder" and label_from_path(relative) is None:
            tqdm.write(f"warning: no real/fake folder in {relative}; its crops get no label")
        try:
            if videos:
                frames = read(path, args.fps, args.max_frames)
            else:
                frames = iter([(0, 0.0, load_rgb(path))])  # the training loader's: EXIF orientation, 16-bit
            new_rows = process_source(args, detector, path, relative, frames)
        except OutputError:
            raise
        except (OSError, SyntaxError, ValueError) as err:
            tqdm.write(f"skipping {path}: {err}")
            skipped.append(str(path))
            continue
        if not new_rows:
            tqdm.write(f"no face above probability {args.min_prob} in {relative}")
        try:
            append_rows(catalog, new_rows)
        except OSError as err:
            raise OutputError(f"cannot write {catalog} ({err.strerror or err}); free space or pick another --out-dir") from err
        rows += new_rows
    print(f"{len(rows)} face crops from {len(sources) - len(skipped)} sources in {catalog}; {len(skipped)} skipped")
    if not rows and skipped and len(skipped) == len(todo):
        raise UserError(f"none of the {len(todo)} sources could be read (see the messages above); nothing was written")
    return rows


if __name__ == "__main__":
    main()
