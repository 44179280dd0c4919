"""Is this photo or video fake? Score every face in your own images, videos, folders or globs with a trained detector.

    python detect.py photo.jpg -cpp checkpoints/fakes_dataset_EfficientNetLite0_Adam.pt
    python detect.py clips/ "shots/*.png" -cpp checkpoints/bonus.pt --out results.csv --annotate annotated/
    python detect.py clip.mp4 -cpp CKPT --frames 64 --aggregate confident --threshold 0.6
    python detect.py shots/ -cpp CKPT --threshold val-eer:my_labelled_crops/   # a threshold chosen on data like yours
    python detect.py selfie.png -cpp CKPT --annotate annotated/ --cam      # with each face's Grad-CAM beside it

The model is rebuilt from the checkpoint (-m is optional and checked) and sees each face as it saw its training data:
MTCNN boxes grown by the training crops' margin (face_detection.py, shared with tools/face_preprocess.py), resized to
the model's image size and normalised its way. Videos: --frames N evenly spaced frames (default 32, as DeepfakeBench
evaluates) or --fps; a frame scores as its most fake face, and a video as the aggregate of its frames: `mean`, or the
DFDC winner's `confident` rule (when many frames are confidently fake, their mean; when nearly all are confidently
real, theirs; else the mean). The verdict uses --threshold, by default the validation EER threshold saved with the
checkpoint (0.5 for older checkpoints; the table says which). Unreadable files and files without a face are reported
and skipped; the exit status is 2 when nothing could be scored. Outputs are written atomically. Annotated copies are
named <input name>.annotated.png (.mp4), numbered past any existing file, so they never replace an input, each other
or a file of yours, and folders given as inputs pass over them (a second run does not score its own copies).
"""
from __future__ import annotations

import argparse
import csv
import glob
import json
import os
import re
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from tqdm import tqdm

from analysis import compute_cams, eer_threshold_on, overlay
from cli import (
    UserError,
    add_batch_size_flag,
    add_checkpoint_flag,
    add_device_flag,
    add_progress_flag,
    cli_main,
    crop_margin,
    positive_float,
    positive_int,
    probability,
    writable_dir,
)
from common import IMAGE_EXTENSIONS, SHIPPED_DETECTOR
from detector import Scorer, load_model_from_checkpoint
from face_detection import (
    DEFAULT_MARGIN,
    DEFAULT_MIN_PROB,
    VIDEO_EXTENSIONS,
    Face,
    FaceDetector,
    crop_face,
    frame_reader,
    sample_frames,
    square_box,
)
from faces_dataset import DatasetError, FacesDataset, is_hidden, load_rgb
from files import atomic_write, json_safe
from metrics import AGGREGATES, Threshold, aggregate
from models import MODEL_NAMES
from utils import get_device


@dataclass
class FaceRow:
    """One scored face: where it was (file, frame, time, box) and what the detector said (and, for a fused detector,
    what each member said: members[name] = its own P(fake))."""

    file: str
    frame: int
    time: float
    box: list[int]
    face_prob: float
    p_fake: float
    members: dict[str, float] = field(default_factory=dict)


@dataclass
class FileResult:
    """One input: its faces, its aggregate P(fake) (None when nothing was scored) and the verdict or the reason."""

    file: str
    kind: str
    frames: int = 0
    faces: list[FaceRow] = field(default_factory=list)
    score: float | None = None
    verdict: str = ""

    def summary(self) -> dict:
        return {"file": self.file, "kind": self.kind, "frames": self.frames, "faces": len(self.faces),
                "p_fake": self.score, "verdict": self.verdict}


def faces_by_frame(faces: list[FaceRow]) -> dict[int, list[FaceRow]]:
    """The face rows grouped by frame index."""
    grouped: dict[int, list[FaceRow]] = {}
    for f in faces:
        grouped.setdefault(f.frame, []).append(f)
    return grouped


def frame_scores(faces: list[FaceRow]) -> np.ndarray:
    """Per frame, the P(fake) of its most fake face (a frame is as fake as the worst face in it), in frame order."""
    grouped = faces_by_frame(faces)
    return np.array([max(f.p_fake for f in grouped[k]) for k in sorted(grouped)])


ANNOTATED = re.compile(r"\.annotated(-\d+)?\.(png|mp4)$")  # the names annotation_targets gives


def is_own_output(path: Path) -> bool:
    """Whether a file is one of detect.py's annotated copies or a hidden file (a writer's temp file, macOS ._*
    AppleDouble, faces_dataset.is_hidden): never an input."""
    return bool(ANNOTATED.search(path.name)) or is_hidden(path)


def expand_inputs(paths: list[str]) -> tuple[list[Path], list[str]]:
    """Images and videos named by files, folders (recursive) and glob patterns; plus a message per unusable path.
    Folders and patterns pass over detect.py's own annotated copies (a file named on its own is always taken)."""
    media = IMAGE_EXTENSIONS + VIDEO_EXTENSIONS
    found: list[Path] = []
    problems: list[str] = []
    own = 0
    for text in paths:
        path = Path(text)
        if any(ch in text for ch in "*?[") and not path.exists():
            matches = sorted(Path(m) for m in glob.glob(text, recursive=True))
            usable = [m for m in matches if m.is_file() and m.suffix.lower() in media]
            found += [m for m in usable if not is_own_output(m)]
            own += sum(is_own_output(m) for m in usable)
            if not matches:
                problems.append(f"{text}: no file matches this pattern")
        elif path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file() and not is_hidden(p, path))
            usable = [p for p in files if p.suffix.lower() in media]
            inside = [p for p in usable if not is_own_output(p)]
            own += len(usable) - len(inside)
            found += inside
            others = sorted({p.suffix.lower() or "(no extension)" for p in files if p.suffix.lower() not in media})
            if others:
                n = len(files) - len(usable)
                problems.append(f"{text}: {n} file(s) of kinds the suite does not read ({', '.join(others)}); convert "
                                f"them to one of {', '.join(media)} to score them")
            if not inside:
                problems.append(f"{text}: no image or video in this folder")
        elif path.is_file():
            if path.suffix.lower() in media:
                found.append(path)
            else:
                problems.append(f"{text}: not an image or video ({', '.join(media)})")
        else:
            problems.append(f"{text}: no such file or folder")
    if own:
        problems.append(f"{own} annotated cop{'y' if own == 1 else 'ies'} written by detect.py or hidden temp files "
                        "(name a file on its own to score it)")
    unique = list(dict.fromkeys(found))
    return unique, problems


def annotation_targets(inputs: list[Path], folder: Path) -> dict[Path, Path]:
    """Where each input's annotated copy goes in `folder`: <name>.annotated.png (.mp4 for a video), the input's own
    extension kept so beach.jpg and beach.png do not meet, numbered (-2, -3, ...) past any name already taken by another
    input's copy or by an existing file: no copy ever replaces an input, another copy or a file of the user's."""
    taken: set[Path] = set()
    targets = {}
    for path in inputs:
        suffix = ".mp4" if path.suffix.lower() in VIDEO_EXTENSIONS else ".png"
        k, target = 1, folder / f"{path.name}.annotated{suffix}"
        while target in taken or os.path.lexists(target):
            k += 1
            target = folder / f"{path.name}.annotated-{k}{suffix}"
        taken.add(target)
        targets[path] = target
    return targets


def score_frames(frames: Iterator[tuple[int, float, Image.Image]], name: str, detector: FaceDetector, scorer: Scorer,
                 margin: float, detect_batch: int, keep: dict | None = None) -> tuple[list[FaceRow], int]:
    """Detect and score the faces of a stream of frames; returns the face rows and the number of frames read.

    keep, when given, collects {frame index: (image, faces)} for annotation.
    """
    rows: list[FaceRow] = []
    crops: list[Image.Image] = []
    pending: list[tuple[int, float, Image.Image]] = []
    n_frames = 0

    def flush() -> None:
        for (index, ts, image), faces in zip(pending, detector.detect([p[2] for p in pending])):
            if keep is not None:
                keep[index] = (image, faces)
            for face in faces:
                crops.append(crop_face(image, face, margin, scorer.detector.image_size))
                rows.append(FaceRow(name, index, round(ts, 3), list(square_box(face.box, margin, *image.size)),
                                    round(face.prob, 4), 0.0))
        pending.clear()

    for frame in frames:
        n_frames += 1
        pending.append(frame)
        if len(pending) == detect_batch:
            flush()
    flush()
    scores, members = scorer(crops)
    for row, p, per_member in zip(rows, scores, members):
        row.p_fake = float(p)
        row.members = {name: round(float(q), 6) for name, q in zip(scorer.member_names, per_member)}
    return rows, n_frames


def colour(p_fake: float) -> tuple[int, int, int]:
    """Green for real through yellow to red for fake."""
    return int(round(255 * min(1.0, 2 * p_fake))), int(round(255 * min(1.0, 2 * (1 - p_fake)))), 0


def draw_faces(image: Image.Image, faces: list[FaceRow]) -> Image.Image:
    """A copy of the image with every face boxed and labelled with its P(fake)."""
    out = image.copy()
    draw = ImageDraw.Draw(out)
    width = max(2, out.size[0] // 300)
    for f in faces:
        c = colour(f.p_fake)
        draw.rectangle(f.box, outline=c, width=width)
        label = f"P(fake) {f.p_fake:.2f}"
        x, y = f.box[0], max(0, f.box[1] - 14)
        draw.rectangle((x, y, x + 7 * len(label), y + 13), fill=c)
        draw.text((x + 2, y + 1), label, fill=(0, 0, 0))
    return out


def cam_tiles(image: Image.Image, faces: list[FaceRow], scorer: Scorer, side: int) -> list[Image.Image]:
    """Each face's crop under its Grad-CAM for 'fake' (the evidence the model used), side x side."""
    detector, tiles = scorer.detector, []
    for f in faces:
        crop = crop_face(image, Face(np.array(f.box, dtype=np.float32), f.face_prob), 0.0, detector.image_size)
        x = scorer.transform(crop)[None].to(scorer.device)
        cam = compute_cams(detector.module, x, torch.tensor([1]), detector.name)[0]
        tiles.append(Image.fromarray(overlay(x[0].cpu(), cam, detector.normalization)).resize((side, side)))
    return tiles


def beside(image: Image.Image, tiles: list[Image.Image], side: int, slots: int) -> Image.Image:
    """The image with `slots` tile places of side x side to its right (unused places stay white)."""
    panel = Image.new("RGB", (image.size[0] + side * slots, image.size[1]), (255, 255, 255))
    panel.paste(image, (0, 0))
    for k, tile in enumerate(tiles[:slots]):
        panel.paste(tile, (image.size[0] + k * side, 0))
    return panel


def annotate_video(path: Path, out: Path, faces: list[FaceRow], sampled: list[int], only_sampled: bool,
                   fps_out: float | None, tiles: dict[int, list[Image.Image]] | None = None, side: int = 0) -> int:
    """Re-encode a video with boxes: every frame with the boxes of the nearest sampled frame (or only the sampled
    frames), and that frame's CAM tiles beside it when given. Returns the frames written (temp file, then rename)."""
    import cv2

    by_frame = faces_by_frame(faces)
    cap = cv2.VideoCapture(str(path))
    native = cap.get(cv2.CAP_PROP_FPS) or 25.0
    slots = max((len(t) for t in tiles.values()), default=0) if tiles else 0
    size = (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)) + side * slots, int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.stem}.tmp{out.suffix}")  # OpenCV picks the container from the extension
    writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), fps_out or native, size)
    sampled_sorted = np.array(sorted(sampled)) if sampled else np.array([0])
    written = index = 0
    try:
        while True:
            ok, bgr = cap.read()
            if not ok:
                break
            if only_sampled and index not in by_frame and index not in set(sampled):
                index += 1
                continue
            nearest = int(sampled_sorted[np.abs(sampled_sorted - index).argmin()])
            image = Image.fromarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
            drawn = draw_faces(image, by_frame.get(nearest, []))
            if slots:
                drawn = beside(drawn, tiles.get(nearest, []), side, slots)
            writer.write(cv2.cvtColor(np.asarray(drawn), cv2.COLOR_RGB2BGR))
            written += 1
            index += 1
    finally:
        cap.release()
        writer.release()
    os.replace(tmp, out)
    return written


def write_results(path: Path, results: list[FileResult], threshold: Threshold, members: list[str]) -> None:
    """One row per face and one per file, as CSV (a 'row' column tells them apart; a fused detector's members' own
    P(fake) in a column each, p_fake[<member>]) or JSON; written atomically."""
    atomic_write(path, lambda tmp: _write_results(tmp, path.suffix.lower(), results, threshold, members))


def _write_results(tmp: str, suffix: str, results: list[FileResult], threshold: Threshold, members: list[str]) -> None:
    with open(tmp, "w", newline="") as handle:
        if suffix == ".json":
            json.dump(json_safe({"threshold": threshold.value, "threshold_source": threshold.source,
                                 "uncertain_band": threshold.band, "members": members,
                                 "files": [r.summary() for r in results],
                                 "faces": [asdict(f) for r in results for f in r.faces]}), handle, indent=2, allow_nan=False)
            return
        member_columns = [f"p_fake[{name}]" for name in members]
        columns = ["row", "file", "kind", "frame", "time", "x1", "y1", "x2", "y2", "face_prob", "p_fake", *member_columns,
                   "faces", "frames", "verdict"]
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for r in results:
            for f in r.faces:
                writer.writerow({"row": "face", "file": f.file, "frame": f.frame, "time": f.time,
                                 **dict(zip(("x1", "y1", "x2", "y2"), f.box)), "face_prob": f.face_prob,
                                 "p_fake": round(f.p_fake, 6),
                                 **{column: f.members[name] for column, name in zip(member_columns, members)}})
            writer.writerow({"row": "file", "file": r.file, "kind": r.kind, "faces": len(r.faces), "frames": r.frames,
                             "p_fake": None if r.score is None else round(r.score, 6), "verdict": r.verdict})


def print_table(results: list[FileResult], threshold: Threshold) -> None:
    width = max([len(r.file) for r in results] + [4])
    print(f"\nthreshold on P(fake): {threshold.describe()}")
    print(f"{'file':{width}s}  {'faces':>5s}  {'P(fake)':>7s}  verdict")
    for r in results:
        score = "" if r.score is None else f"{r.score:.3f}"
        print(f"{r.file:{width}s}  {len(r.faces):5d}  {score:>7s}  {r.verdict}")


def threshold_arg(text: str) -> float | Path:
    """--threshold: a probability, or val-eer:DIR (a folder with real/ and fake/ face crops to calibrate on)."""
    if text.startswith("val-eer:"):
        folder = Path(text[len("val-eer:"):])
        if not ((folder / "real").is_dir() and (folder / "fake").is_dir()):
            raise argparse.ArgumentTypeError(f"{text}: {folder} must hold real/ and fake/ face crops")
        return folder
    try:
        return probability(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"must be a probability in [0, 1] or val-eer:DIR, got {text}") from err


def folder_threshold(folder: Path, scorer: Scorer) -> Threshold:
    """The EER threshold of the detector on a folder of labelled face crops (real/, fake/), and how it was chosen."""
    dataset = FacesDataset(folder, transform=scorer.transform)
    value = eer_threshold_on(dataset, scorer.detector.module, scorer.device, f"--threshold val-eer:{folder}",
                             scorer.batch_size, progress=False)
    return Threshold(value, f"EER on {folder} ({len(dataset)} crops)")


def dash_named_files(argv: list[str]) -> list[str]:
    """Arguments before any -- that name an existing file but look like options (a photo called -me.png)."""
    head = argv[: argv.index("--")] if "--" in argv else argv
    return [a for a in head if a.startswith("-") and len(a) > 1 and Path(a).is_file()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    dashed = dash_named_files(argv)
    if dashed:
        p.error(f"{dashed[0]} is a file whose name starts with a dash, which reads as an option: put the files after --, "
                f"e.g. detect.py [options] -- {dashed[0]}")
    p.add_argument("paths", nargs="+", help="images, videos, folders (searched recursively) or glob patterns "
                   "(a name that starts with a dash goes after --: detect.py -- -photo.png)")
    add_checkpoint_flag(p, required=False, default=SHIPPED_DETECTOR, help="checkpoint written by train_main.py, "
                        "MesoNet's .h5 or a fused detector's .fused.json (default: the shipped detector, weights/README.md)")
    p.add_argument("-m", "--model", choices=MODEL_NAMES, help="model name (optional: checked against the checkpoint)")
    frames = p.add_mutually_exclusive_group()
    frames.add_argument("--frames", type=positive_int, default=32, help="evenly spaced frames per video (default: 32)")
    frames.add_argument("--fps", type=positive_float, help="or: frames sampled per second of video")
    p.add_argument("--aggregate", choices=AGGREGATES, default="mean", help="video score from frame scores (default: mean)")
    p.add_argument("--threshold", type=threshold_arg, metavar="P|val-eer:DIR",
                   help="P(fake) at or above which a file is called fake, or val-eer:DIR for the EER threshold of the "
                   "model on DIR's real/ and fake/ face crops, data like yours (default: the threshold saved with the "
                   "checkpoint, with its uncertain band; else 0.5)")
    p.add_argument("--out", type=Path, help="write one row per face and per file to a .csv or .json file")
    p.add_argument("--annotate", type=Path, help="folder for annotated copies, <name>.annotated.png/.mp4 with boxes and P(fake) drawn in "
                   "(an existing file is never replaced)")
    p.add_argument("--cam", action="store_true", help="with --annotate: each face's Grad-CAM beside the image")
    p.add_argument("--margin", type=crop_margin, help="face box growth per side, a share of its size (negative: tighter; "
                   f"default: how the checkpoint's training faces were framed, else {DEFAULT_MARGIN})")
    p.add_argument("--min-prob", type=probability, default=DEFAULT_MIN_PROB, help="minimum MTCNN face probability (default: %(default)s)")
    add_batch_size_flag(p, what="face crops per model batch")
    p.add_argument("--detect-batch", type=positive_int, default=8, help="frames per MTCNN batch (default: %(default)s)")
    p.add_argument("--extractor", choices=("auto", "ffmpeg", "opencv"), default="auto",
                   help="video decoder (default: ffmpeg when on PATH, else OpenCV)")
    p.add_argument("--fp32", action="store_true", help="score in float32 on the CPU instead of bfloat16 autocast "
                   "(bfloat16 is faster where the CPU has bfloat16 units and kept AUC within 0.002: README)")
    add_device_flag(p)
    add_progress_flag(p)
    args = p.parse_args(argv)
    if args.out is not None and args.out.suffix.lower() not in (".csv", ".json"):
        p.error("--out must end in .csv or .json")
    if args.cam and args.annotate is None:
        p.error("--cam draws into the annotated copies: add --annotate DIR")
    return args


@dataclass(frozen=True)
class DetectSettings:
    """How detect_file reads and scores one input (from the flags, once)."""

    frames: int = 32
    fps: float | None = None
    extractor: str = "auto"
    aggregate: str = "mean"
    margin: float = DEFAULT_MARGIN
    detect_batch: int = 8
    cam: bool = False
    progress: bool = True


def detect_file(path: Path, settings: DetectSettings, detector: FaceDetector, scorer: Scorer, threshold: Threshold,
                target: Path | None = None) -> FileResult:
    """Score one image or video (raising OSError/DatasetError when it cannot be read); with `target`, write the
    annotated copy there."""
    is_video = path.suffix.lower() in VIDEO_EXTENSIONS
    result = FileResult(str(path), "video" if is_video else "image")
    keep: dict = {}
    if is_video:
        if settings.fps is not None:
            read, _ = frame_reader(settings.extractor)
            frames = read(path, settings.fps, 10**6)
        else:
            frames = sample_frames(path, settings.frames, settings.extractor)
        frames = tqdm(frames, desc=path.name, unit="frame", leave=False, disable=not settings.progress)
    else:
        frames = iter([(0, 0.0, load_rgb(path))])
    result.faces, result.frames = score_frames(frames, str(path), detector, scorer, settings.margin, settings.detect_batch,
                                               keep)
    if not result.faces:
        result.verdict = "no face found"
        return result
    scores = frame_scores(result.faces)
    result.score = aggregate(scores, settings.aggregate) if is_video else float(scores.max())
    result.verdict = threshold.verdict(result.score)
    if target is not None:
        by_frame = faces_by_frame(result.faces)
        side = min(keep[min(keep)][0].size[1], 256)
        tiles = {k: cam_tiles(keep[k][0], rows, scorer, side) for k, rows in by_frame.items()} if settings.cam else {}
        if is_video:
            annotate_video(path, target, result.faces, sorted(keep), settings.fps is not None, settings.fps,
                           tiles, side)
        else:
            drawn = draw_faces(keep[0][0], result.faces)
            if settings.cam:
                drawn = beside(drawn, tiles[0], side, len(tiles[0]))
            atomic_write(target, lambda tmp: drawn.save(tmp, format="PNG"))
    return result


@cli_main
def main(argv: list[str] | None = None) -> list[FileResult]:
    args = parse_args(argv)
    device = get_device(args.device)
    inputs, problems = expand_inputs(args.paths)
    for problem in problems:
        print(f"skipping {problem}")
    if not inputs:
        raise UserError("no image or video to score (see the messages above)")
    if args.annotate is not None:
        writable_dir(args.annotate, "--annotate")
    if args.out is not None:
        writable_dir(args.out.parent, "--out's folder")
    if args.checkpoint_path == SHIPPED_DETECTOR:
        print(f"detector: the shipped one, {SHIPPED_DETECTOR.name} (weights/README.md; -cpp picks another)")
    loaded = load_model_from_checkpoint(args.checkpoint_path, device, expected_model=args.model)
    scorer = Scorer(loaded, device, args.batch_size, bf16=not args.fp32)
    margin = args.margin
    if margin is None:  # crop a user's faces the way the model's training faces were cropped
        if loaded.framing.margin is None:
            margin = DEFAULT_MARGIN
            print(f"face crops framed with margin {margin:+.2f}: {loaded.framing.source}; --margin overrides")
        else:
            margin = loaded.framing.margin
            print(f"face crops framed like the training faces: margin {margin:+.2f} ({loaded.framing.source}); "
                  "--margin overrides")
    if isinstance(args.threshold, Path):
        threshold = folder_threshold(args.threshold, scorer)
    elif args.threshold is not None:
        threshold = Threshold(args.threshold, "--threshold")
    else:
        threshold = loaded.threshold
    settings = DetectSettings(args.frames, args.fps, args.extractor, args.aggregate, margin, args.detect_batch, args.cam,
                              not args.no_progress)
    face_detector = FaceDetector(args.device, args.min_prob)
    targets = annotation_targets(inputs, args.annotate) if args.annotate is not None else {}
    results = []
    for path in tqdm(inputs, desc="inputs", unit="file", disable=args.no_progress or len(inputs) == 1):
        try:
            result = detect_file(path, settings, face_detector, scorer, threshold, targets.get(path))
        except (OSError, DatasetError, ValueError) as err:
            tqdm.write(f"skipping {path}: cannot read it ({err})")
            result = FileResult(str(path), "video" if path.suffix.lower() in VIDEO_EXTENSIONS else "image",
                                verdict="unreadable")
        if result.verdict == "no face found":
            tqdm.write(f"{path}: no face found (MTCNN probability below {args.min_prob})")
        results.append(result)
    print_table(results, threshold)
    if args.out is not None:
        write_results(args.out, results, threshold, scorer.member_names)
        print(f"saved {args.out}")
    if not any(r.score is not None for r in results):
        raise UserError("no input could be scored (no face found or unreadable)")
    return results


if __name__ == "__main__":
    main()
