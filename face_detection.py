"""Faces in photos and video frames: MTCNN detection (facenet-pytorch), square margin crops, frame reading.

One code path for tools/face_preprocess.py (which makes training crops) and detect.py (which scores a user's media),
so a face is cut the same way when a model is trained and when it is asked about a new photo: the MTCNN box grown by
DEFAULT_MARGIN of its size on each side, made square, clipped to the frame. MTCNN's weights ship inside
facenet-pytorch, so nothing is downloaded. Frames come from ffmpeg when it is on PATH, else from OpenCV.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from common import WORK_DIR
from faces_dataset import evenly_spaced, load_rgb
from files import atomic_write_json
from utils import get_device

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")
DEFAULT_MARGIN = 0.3  # box growth per side, as a share of the box's larger side (the training crops' margin)
DEFAULT_MIN_PROB = 0.95  # MTCNN face probability below which a detection is ignored
DETECT_MAX_SIDE = 640  # frames are shrunk to this longer side for detection (boxes scaled back): 720p costs a third

Frame = tuple[int, float, Image.Image]  # (frame index, timestamp in seconds, RGB image)


@dataclass
class Face:
    """One detected face: its box (x1, y1, x2, y2) in the frame's pixels and MTCNN's face probability."""

    box: np.ndarray
    prob: float


def square_box(box: np.ndarray, margin: float, width: int, height: int) -> tuple[int, int, int, int]:
    """The detection box grown by `margin` (share of its larger side on each side), made square, clipped to the image."""
    x1, y1, x2, y2 = box
    side = max(x2 - x1, y2 - y1) * (1 + 2 * margin)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    side = min(side, width, height)
    left = int(round(min(max(cx - side / 2, 0), width - side)))
    top = int(round(min(max(cy - side / 2, 0), height - side)))
    return left, top, left + int(round(side)), top + int(round(side))


def framing_margin(image_size: tuple[int, int], box: np.ndarray) -> float:
    """The margin around an MTCNN box that a crop of the whole image has: (image side / box side - 1) / 2."""
    return float((image_size[0] / max(box[2] - box[0], box[3] - box[1]) - 1) / 2)


@dataclass(frozen=True)
class Framing:
    """How faces are cut, as a margin around an MTCNN box (share of the box side added per side; negative = tighter
    than the box), and where that number comes from; margin None when it is not known."""

    margin: float | None
    source: str

    def to_dict(self) -> dict:
        return {"margin": self.margin, "source": self.source}

    @classmethod
    def from_entry(cls, entry: object) -> Framing:
        """From a checkpoint's 'framing' entry; a checkpoint without one does not say how its faces were framed."""
        if isinstance(entry, dict) and entry.get("margin") is not None:
            return cls(float(entry["margin"]), str(entry.get("source", "checkpoint")))
        return cls(None, "the checkpoint does not say how its training faces were framed")


FRAMING_SAMPLE = 32  # images measured per set of face crops (median over them; MTCNN at ~20 images/s on 2 cores)


FRAMING_CACHE = WORK_DIR / "cache" / "framing"


def measure_framing(paths: list[Path], what: str, device: str = "auto", sample: int = FRAMING_SAMPLE) -> Framing:
    """The framing of a set of face crops, measured: the median framing_margin of up to `sample` evenly spaced images
    in which MTCNN finds a face (margin None, saying so, when it finds none). Cached under <work dir>/cache/framing by
    the sampled files' bytes, so the same crops are measured once."""
    chosen = evenly_spaced(list(paths), sample)
    key = hashlib.sha1("".join(p.name + hashlib.sha1(p.read_bytes()).hexdigest() for p in chosen).encode()).hexdigest()
    cached = FRAMING_CACHE / f"{key}.json"
    try:
        entry = json.loads(cached.read_text())
        return Framing(entry["margin"], entry["source"].replace("{what}", what))
    except (OSError, ValueError, KeyError, TypeError):
        pass
    framing = _measure(chosen, what, device)
    atomic_write_json(cached, {"margin": framing.margin, "source": framing.source.replace(what, "{what}")})
    return framing


def _measure(chosen: list[Path], what: str, device: str) -> Framing:
    detector = FaceDetector(device)
    margins = []
    for path in chosen:
        image = load_rgb(path)
        faces = detector.detect([image])[0]
        if faces:
            margins.append(framing_margin(image.size, faces[0].box))
    if not margins:
        return Framing(None, f"not measured: MTCNN found no face in the {len(chosen)} images sampled from {what}")
    return Framing(round(float(np.median(margins)), 3),
                   f"measured on {what}: median of {len(margins)} of {len(chosen)} sampled images")


def crop_face(image: Image.Image, face: Face, margin: float, size: int) -> Image.Image:
    """The square margin crop of a face, resized to size x size."""
    return image.crop(square_box(face.box, margin, *image.size)).resize((size, size), Image.LANCZOS)


class FaceDetector:
    """MTCNN on a batch of images; every face at or above min_prob, most confident first, boxes in the image's pixels.

    Images larger than max_side are shrunk for detection only (crops are cut from the full-resolution image).
    """

    def __init__(self, device: str = "auto", min_prob: float = DEFAULT_MIN_PROB, max_side: int = DETECT_MAX_SIDE):
        from facenet_pytorch import MTCNN  # imported here: it takes seconds

        self.mtcnn = MTCNN(keep_all=True, device=get_device(device), post_process=False)
        self.min_prob = min_prob
        self.max_side = max_side

    def detect(self, images: list[Image.Image]) -> list[list[Face]]:
        """The faces of each image (possibly none)."""
        if not images:
            return []
        if len({im.size for im in images}) > 1:  # MTCNN batches only same-size images
            return [faces for im in images for faces in self.detect([im])]
        scale = min(1.0, self.max_side / max(images[0].size))
        if scale < 1.0:
            size = (round(images[0].size[0] * scale), round(images[0].size[1] * scale))
            images = [im.resize(size, Image.BILINEAR) for im in images]
        boxes, probs = self.mtcnn.detect(images)
        found = []
        for b, p in zip(boxes, probs):
            if b is None:
                found.append([])
                continue
            b = np.asarray(b, dtype=np.float32).reshape(-1, 4)  # facenet returns object arrays
            p = np.asarray(p, dtype=np.float32).reshape(-1)
            order = np.argsort(-p)
            found.append([Face(b[i] / scale, float(p[i])) for i in order if p[i] >= self.min_prob])
        return found


def frames_opencv(path: Path, fps: float, max_frames: int) -> Iterator[Frame]:
    """Frames at about `fps` per second, read with OpenCV."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise OSError("OpenCV cannot open it")
    native = cap.get(cv2.CAP_PROP_FPS) or 25.0
    step = max(1, int(round(native / fps)))
    index = taken = 0
    try:
        while taken < max_frames:
            if not cap.grab():
                break
            if index % step == 0:
                ok, bgr = cap.retrieve()
                if not ok:
                    break
                taken += 1
                yield index, index / native, Image.fromarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
            index += 1
    finally:
        cap.release()
    if taken == 0:
        raise OSError("no frame could be decoded")


def ffmpeg_images(path: Path, options: list[str]) -> Iterator[Image.Image]:
    """The RGB frames the ffmpeg binary writes for `options` (its filter and frame flags), in order."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = ["ffmpeg", "-v", "error", "-nostdin", "-i", str(path), *options, str(Path(tmp) / "f%06d.png")]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        files = sorted(Path(tmp).glob("f*.png"))
        if proc.returncode != 0 or not files:
            last = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "no frames"
            raise OSError(f"ffmpeg could not read it: {last}")
        for file in files:
            with Image.open(file) as img:
                yield img.convert("RGB")


def frames_ffmpeg(path: Path, fps: float, max_frames: int) -> Iterator[Frame]:
    """Like frames_opencv, through the ffmpeg binary (frame index counts the sampled frames; timestamp = k / fps)."""
    for k, image in enumerate(ffmpeg_images(path, ["-vf", f"fps={fps}", "-frames:v", str(max_frames)])):
        yield k, k / fps, image


def image_format(path: Path) -> str | None:
    """The still-image format of a file (JPEG, PNG, ...) when Pillow recognises it as one, else None."""
    try:
        with Image.open(path) as image:
            return image.format if getattr(image, "n_frames", 1) == 1 else None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return None


def video_info(path: Path) -> tuple[int, float]:
    """(frame count, frames per second) of a video, from OpenCV's container metadata."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise OSError("OpenCV cannot open it")
        return int(cap.get(cv2.CAP_PROP_FRAME_COUNT)), cap.get(cv2.CAP_PROP_FPS) or 25.0
    finally:
        cap.release()


def evenly_spaced_indices(total: int, n: int) -> list[int]:
    """n frame indices spread evenly over [0, total), each at the centre of its share (all frames if n >= total)."""
    if total <= n:
        return list(range(total))
    return [int((k + 0.5) * total / n) for k in range(n)]


def count_frames(path: Path) -> int:
    """The frames a video really holds, counted by reading them (container headers can say 0, or far too few or too
    many)."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise OSError("OpenCV cannot open it")
        count = 0
        while cap.grab():
            count += 1
        return count
    finally:
        cap.release()


def sample_frames(path: Path, n: int, extractor: str = "auto") -> Iterator[Frame]:
    """n frames evenly spaced over the frames the video really holds (DeepfakeBench evaluates 32 per video; a header
    that disagrees is reported), decoded by ffmpeg when it is on PATH (or asked for), else by OpenCV."""
    still = image_format(path)
    if still is not None:
        raise OSError(f"it is a {still} image named like a video; rename it to its own extension (.{still.lower()})")
    header, native = video_info(path)
    total = count_frames(path)
    if total == 0:
        raise OSError("no frame could be decoded")
    if header < 0:  # OpenCV's answer for a container without a count
        tqdm.write(f"note: {path.name}'s header does not say how many frames it holds; it holds {total}")
    elif header != total:
        tqdm.write(f"note: {path.name}'s header says {header} frames, it holds {total}: sampled over the {total}")
    indices = evenly_spaced_indices(total, n)
    read = sample_frames_ffmpeg if frame_reader(extractor)[1] == "ffmpeg" else sample_frames_opencv
    yield from read(path, indices, native)


def sample_frames_ffmpeg(path: Path, indices: list[int], native: float) -> Iterator[Frame]:
    """The frames of these indices through the ffmpeg binary: its select filter keeps exactly those frame numbers."""
    select = "+".join(f"eq(n\\,{i})" for i in indices)
    for index, image in zip(indices, ffmpeg_images(path, ["-vf", f"select={select}", "-vsync", "0"])):
        yield index, index / native, image


def sample_frames_opencv(path: Path, indices: list[int], native: float) -> Iterator[Frame]:
    """The frames of these indices with OpenCV: grab every frame up to the last one, decode only the chosen ones."""
    import cv2

    wanted = set(indices)
    cap = cv2.VideoCapture(str(path))
    taken = 0
    try:
        index = 0
        while index <= max(wanted):
            if not cap.grab():
                break
            if index in wanted:
                ok, bgr = cap.retrieve()
                if ok:
                    taken += 1
                    yield index, index / native, Image.fromarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
            index += 1
    finally:
        cap.release()
    if taken == 0:
        raise OSError("no frame could be decoded")


def frame_reader(extractor: str = "auto"):
    """frames_ffmpeg when ffmpeg is on PATH (or asked for), else frames_opencv; with the name of the one chosen."""
    if extractor == "auto":
        extractor = "ffmpeg" if shutil.which("ffmpeg") else "opencv"
    return (frames_ffmpeg if extractor == "ffmpeg" else frames_opencv), extractor
