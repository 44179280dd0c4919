"""68 face landmarks per image (dlib's shape predictor), computed once per image and cached in the work dir.

Self-blended training (self_blend.py) draws its blending masks from the landmark hull of each real face. The model is
dlib's 68-point predictor as shipped inside the `face-recognition-models` package (installed from PyPI beside the
prebuilt `dlib-bin` wheel: no download at run time). The predictor was trained on iBUG 300-W, whose images are for
research use only (non-commercial): see README. Faces are found with dlib's HOG detector; a tight crop in which it
finds none (the face fills the frame, as in fakes_dataset) is fitted inside the image less a 7 % border, the median
box the detector returns on such crops.

The cache is one JSON file per image folder under <work dir>/cache/landmarks/ (never inside the data folder), keyed by
each file's name and a SHA-1 of its bytes, so a changed image is computed again and an unchanged one never is.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from tqdm import tqdm

from cli import UserError
from common import WORK_DIR
from faces_dataset import load_rgb
from files import atomic_write_json

PREDICTOR_FILE = "shape_predictor_68_face_landmarks.dat"
CACHE_DIR = WORK_DIR / "cache" / "landmarks"
TIGHT_CROP_BORDER = 0.07  # fakes_dataset: the HOG box's median inset on 224 px tight crops was 15 px
# index ranges of the 68-point layout (iBUG 300-W)
JAW, BROWS, NOSE, EYES, MOUTH = range(0, 17), range(17, 27), range(27, 36), range(36, 48), range(48, 68)


def predictor_path() -> Path:
    """The 68-point model file inside the installed face-recognition-models package (found without importing it:
    its __init__ needs pkg_resources, which recent setuptools no longer ship)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("face landmarks need dlib and its 68-point model: pip install dlib-bin face-recognition-models "
                        "(tools/setup_env.sh installs both)")
    return Path(spec.submodule_search_locations[0]) / "models" / PREDICTOR_FILE


class LandmarkDetector:
    """68 (x, y) landmarks of the largest face of an RGB image, in its pixels; None when no face fits."""

    def __init__(self) -> None:
        try:
            import dlib
        except ImportError as err:
            raise UserError("face landmarks need dlib: pip install dlib-bin face-recognition-models") from err
        self._dlib = dlib
        self.detector = dlib.get_frontal_face_detector()
        self.predictor = dlib.shape_predictor(str(predictor_path()))

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        return self.locate(rgb)[0]

    def locate(self, rgb: np.ndarray) -> tuple[np.ndarray, bool]:
        """(landmarks, whether the detector found a face): without one they are fitted to the image less a border."""
        h, w = rgb.shape[:2]
        rgb = np.ascontiguousarray(rgb)
        boxes = self.detector(rgb, 0) or self.detector(rgb, 1)  # upsampling once finds faces down to ~40 px
        if boxes:
            box = max(boxes, key=lambda r: r.width() * r.height())
        else:  # a tight crop: the face is the image
            bx, by = round(TIGHT_CROP_BORDER * w), round(TIGHT_CROP_BORDER * h)
            box = self._dlib.rectangle(bx, by, w - 1 - bx, h - 1 - by)
        shape = self.predictor(rgb, box)
        return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float32), bool(boxes)


def file_digest(path: Path) -> str:
    return hashlib.sha1(path.read_bytes()).hexdigest()


def cache_file(folder: Path) -> Path:
    """The cache of one image folder: named after its absolute path's hash (two folders never share one)."""
    key = hashlib.sha1(str(folder.resolve()).encode()).hexdigest()[:16]
    return CACHE_DIR / f"{folder.resolve().name}-{key}.json"


def folder_landmarks(paths: Iterable[Path], cache_dir: Path | None = None, progress: bool = True) -> dict[Path, np.ndarray]:
    """Landmarks (68 x 2) of each image, from the cache of its folder or computed (and then cached); the folder's cache
    is rewritten only when something was computed."""
    paths = list(paths)
    by_folder: dict[Path, list[Path]] = {}
    for p in paths:
        by_folder.setdefault(p.parent, []).append(p)
    detector: LandmarkDetector | None = None
    result: dict[Path, np.ndarray] = {}
    for folder, files in by_folder.items():
        store = (cache_dir / cache_file(folder).name) if cache_dir is not None else cache_file(folder)
        cached = _read_cache(store)
        changed = False
        for p in tqdm(files, desc=f"landmarks of {folder.name}", unit="img", disable=not progress, leave=False):
            digest = file_digest(p)
            entry = cached.get(p.name)
            if entry is None or entry.get("sha1") != digest or "found" not in entry:
                detector = detector or LandmarkDetector()
                points, found = detector.locate(np.asarray(load_rgb(p)))
                cached[p.name] = entry = {"sha1": digest, "points": np.round(points, 2).tolist(), "found": found}
                changed = True
            result[p] = np.asarray(entry["points"], dtype=np.float32)
        if changed:
            atomic_write_json(store, cached)
    return result


def faces_not_found(paths: Iterable[Path], cache_dir: Path | None = None) -> list[Path]:
    """The images among `paths` in which the detector found no face, from their folders' caches (call after
    folder_landmarks): their landmarks were fitted to the image, which is right for a tight face crop and wrong for
    anything else."""
    caches: dict[Path, dict] = {}
    missing = []
    for p in paths:
        if p.parent not in caches:
            store = (cache_dir / cache_file(p.parent).name) if cache_dir is not None else cache_file(p.parent)
            caches[p.parent] = _read_cache(store)
        if not caches[p.parent].get(p.name, {}).get("found", True):
            missing.append(p)
    return missing


def _read_cache(path: Path) -> dict:
    """A folder's cache, or an empty one when it is missing or unreadable (it is recomputed, never trusted blindly)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
