"""How fast detect.py answers: a 10-second 720p video (made from a photo) and a folder of photos, on this device.

    python tools/bench_detect.py                                   # the bonus model, --frames 32 -> out/bench_detect.json
    python tools/bench_detect.py --checkpoint checkpoints/fakes_dataset_EfficientNetLite0_Adam.pt --frames 64

Reports frames/s and faces/s, split into decode (reading the sampled frames), detect (MTCNN) and score (the model on
the face crops, in float32 and in bfloat16 autocast), plus the end-to-end wall time of `detect.py` itself on the video
and images/s on the folder. Without --checkpoint an untrained bonus model stands in (the speed does not depend on the
weights). --data-root also scores each dataset's test split in float32 and in bfloat16 autocast: the AUC each gives
and the images/s (detect.py scores in bfloat16 where that kept AUC within 0.002).
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image

from checkpoints import save_checkpoint
from cli import add_data_flags, add_device_flag
from common import DATASETS, OUT_DIR
from common import REPO_ROOT as REPO
from detector import Detector, Scorer, load_model_from_checkpoint
from face_detection import DEFAULT_MARGIN, FaceDetector, crop_face, sample_frames
from faces_dataset import FacesDataset, dataset_dir, dataset_labels, evenly_spaced_subset
from files import atomic_write_json
from metrics import safe_auc
from models import build_untrained
from utils import get_device


def make_video(photo: np.ndarray, path: Path, seconds: float = 10, fps: int = 30, size=(1280, 720)) -> int:
    """A video of the photo drifting across a 720p frame; returns the frame count."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    h, w = photo.shape[:2]
    n = int(seconds * fps)
    for k in range(n):
        frame = np.full((size[1], size[0], 3), 40, np.uint8)
        x = int((size[0] - w) * k / max(n - 1, 1))
        frame[(size[1] - h) // 2:(size[1] - h) // 2 + h, x:x + w] = photo[:, :, ::-1]
        writer.write(frame)
    writer.release()
    return n


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def score_split(scorer: Scorer, dataset) -> tuple[np.ndarray, np.ndarray, float]:
    """(P(fake), labels, seconds) of the scorer over a test split's images as PIL crops, in batches."""
    images = [dataset[i][0] for i in range(len(dataset))]
    labels = np.array(dataset_labels(dataset))
    scores, seconds = timed(lambda: scorer(images)[0])
    return scores, labels, seconds


def precision_comparison(detector: Detector, device: torch.device, data_root: Path, limit: int) -> dict:
    """Per dataset under data_root: test AUC and scoring speed in float32 and in bfloat16 autocast (the same crops)."""
    out = {}
    for dataset in DATASETS:
        if not (data_root / dataset / "test").is_dir():
            continue
        split = evenly_spaced_subset(FacesDataset(dataset_dir(dataset, "test", data_root)), limit)  # PIL images
        row = {"n": len(split)}
        for name, bf16 in (("fp32", False), ("bf16", True)):
            scores, labels, seconds = score_split(Scorer(detector, device, 32, bf16=bf16), split)
            row[name] = {"auc": safe_auc(labels, scores), "images_per_s": round(len(split) / seconds, 1)}
        row["auc_change"] = row["bf16"]["auc"] - row["fp32"]["auc"]
        print(f"{dataset}: AUC {row['fp32']['auc']:.4f} float32, {row['bf16']['auc']:.4f} bfloat16 "
              f"({row['auc_change']:+.4f}); {row['fp32']['images_per_s']} vs {row['bf16']['images_per_s']} images/s")
        out[dataset] = row
    return out


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", type=Path, help="a trained checkpoint or fused detector (default: an untrained bonus model)")
    p.add_argument("--frames", type=int, default=32, help="sampled frames (default: %(default)s)")
    p.add_argument("--images", type=int, default=16, help="photos in the folder benchmark (default: %(default)s)")
    add_data_flags(p, dataset=False, root_default=None, root_help="also compare float32 and bfloat16 scoring (AUC, speed) on each "
                   "dataset's test split under this root")
    p.add_argument("--limit", type=int, default=400, help="test images per dataset for --data-root (default: %(default)s)")
    add_device_flag(p)
    p.add_argument("--out", type=Path, default=OUT_DIR / "bench_detect.json")
    args = p.parse_args(argv)
    from skimage import data

    device = get_device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ckpt = args.checkpoint
        if ckpt is None:
            ckpt = tmp / "bonus.pt"
            save_checkpoint({"model": build_untrained("Bonus").state_dict(), "model_name": "Bonus",
                             "model_kwargs": {"image_size": 256}}, ckpt)
        loaded = load_model_from_checkpoint(ckpt, device)
        scorer = Scorer(loaded, device, 32, bf16=False)
        detector = FaceDetector(str(device))
        video = tmp / "clip.mp4"
        n_video = make_video(data.astronaut(), video)

        frames, t_decode = timed(lambda: list(sample_frames(video, args.frames)))
        faces, t_detect = timed(lambda: [f for batch in range(0, len(frames), 8)
                                         for f in detector.detect([fr[2] for fr in frames[batch:batch + 8]])])
        crops = [crop_face(fr[2], f, DEFAULT_MARGIN, loaded.image_size) for fr, fs in zip(frames, faces) for f in fs]
        _, t_score = timed(lambda: scorer(crops))
        _, t_score_bf16 = timed(lambda: Scorer(loaded, device, 32, bf16=True)(crops))
        detect_py = [sys.executable, str(REPO / "detect.py"), "-cpp", str(ckpt), "--no-progress", "--device", args.device]
        _, t_cli = timed(lambda: subprocess.run([*detect_py, str(video), "--frames", str(args.frames)], check=True,
                                                capture_output=True))

        folder = tmp / "photos"
        folder.mkdir()
        for i in range(args.images):
            Image.fromarray(np.roll(data.astronaut(), 7 * i, axis=1)).save(folder / f"p{i:03d}.jpg")
        _, t_folder = timed(lambda: subprocess.run([*detect_py, str(folder)], check=True, capture_output=True))

    n_faces = len(crops)
    report = {
        "device": str(device), "threads": torch.get_num_threads(), "model": loaded.name,
        "video": {"frames_in_video": n_video, "resolution": "1280x720", "sampled_frames": len(frames), "faces": n_faces,
                  "decode_s": round(t_decode, 2), "detect_s": round(t_detect, 2), "score_s": round(t_score, 3),
                  "score_bf16_s": round(t_score_bf16, 3),
                  "frames_per_s": round(len(frames) / (t_decode + t_detect + t_score), 2),
                  "faces_per_s_scoring": round(n_faces / max(t_score, 1e-9), 1),
                  "detect_py_wall_s": round(t_cli, 2)},
        "folder": {"images": args.images, "size": "512x512 JPEG", "wall_s": round(t_folder, 2),
                   "images_per_s": round(args.images / t_folder, 2)},
    }
    v = report["video"]
    print(f"video {v['resolution']}, {n_video} frames, {v['sampled_frames']} sampled: decode {v['decode_s']} s, "
          f"detect {v['detect_s']} s, score {v['score_s']} s ({v['faces_per_s_scoring']} faces/s; bfloat16 "
          f"{v['score_bf16_s']} s); {v['frames_per_s']} frames/s; detect.py end to end {v['detect_py_wall_s']} s")
    print(f"folder of {args.images} photos: {report['folder']['wall_s']} s, {report['folder']['images_per_s']} images/s")
    if args.data_root is not None:
        report["precision"] = precision_comparison(loaded, device, args.data_root, args.limit)
    atomic_write_json(args.out, report)
    print(f"saved {args.out}")
    return report


if __name__ == "__main__":
    main()
