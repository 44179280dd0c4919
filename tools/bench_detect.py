"""How fast detect.py answers: a 10-second 720p video (made from a photo) and a folder of photos, on this device.

    python tools/bench_detect.py                                   # the bonus model, --frames 32 -> out/bench_detect.json
    python tools/bench_detect.py --checkpoint checkpoints/fakes_dataset_EfficientNetLite0_Adam.pt --frames 64

Reports frames/s and faces/s, split into decode (reading the sampled frames), detect (MTCNN) and score (the model on
the face crops), plus the end-to-end wall time of `detect.py` itself on the video and images/s on the folder. Without
--checkpoint an untrained bonus model stands in (the speed does not depend on the weights).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import detect  # noqa: E402
from checkpoints import save_checkpoint  # noqa: E402
from common import OUT_DIR  # noqa: E402
from face_detection import DEFAULT_MARGIN, FaceDetector, crop_face, sample_frames  # noqa: E402
from models import build_model, load_model_from_checkpoint  # noqa: E402
from utils import atomic_write_json, get_device  # noqa: E402


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


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", type=Path, help="a trained checkpoint (default: an untrained bonus model)")
    p.add_argument("--frames", type=int, default=32, help="sampled frames (default: %(default)s)")
    p.add_argument("--images", type=int, default=16, help="photos in the folder benchmark (default: %(default)s)")
    p.add_argument("--device", default="auto")
    p.add_argument("--out", type=Path, default=OUT_DIR / "bench_detect.json")
    args = p.parse_args(argv)
    from skimage import data

    device = get_device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ckpt = args.checkpoint
        if ckpt is None:
            ckpt = tmp / "bonus.pt"
            model = build_model("Bonus")
            save_checkpoint({"model": model.state_dict(), "model_name": "Bonus", "model_kwargs": {"image_size": 256},
                             "normalization": model.normalization.to_dict()}, ckpt)
        model, _ = load_model_from_checkpoint(ckpt, device)
        scorer = detect.Scorer(model, model.image_size, device, 32)
        detector = FaceDetector(str(device))
        video = tmp / "clip.mp4"
        n_video = make_video(data.astronaut(), video)

        frames, t_decode = timed(lambda: list(sample_frames(video, args.frames)))
        faces, t_detect = timed(lambda: [f for batch in range(0, len(frames), 8)
                                         for f in detector.detect([fr[2] for fr in frames[batch:batch + 8]])])
        crops = [crop_face(fr[2], f, DEFAULT_MARGIN, scorer.image_size) for fr, fs in zip(frames, faces) for f in fs]
        _, t_score = timed(lambda: scorer(crops))
        _, t_cli = timed(lambda: detect.main([str(video), "-cpp", str(ckpt), "--frames", str(args.frames), "--no-progress",
                                              "--device", args.device]))

        folder = tmp / "photos"
        folder.mkdir()
        for i in range(args.images):
            Image.fromarray(np.roll(data.astronaut(), 7 * i, axis=1)).save(folder / f"p{i:03d}.jpg")
        _, t_folder = timed(lambda: detect.main([str(folder), "-cpp", str(ckpt), "--no-progress", "--device", args.device]))

    n_faces = len(crops)
    report = {
        "device": str(device), "threads": torch.get_num_threads(), "model": model.model_name,
        "video": {"frames_in_video": n_video, "resolution": "1280x720", "sampled_frames": len(frames), "faces": n_faces,
                  "decode_s": round(t_decode, 2), "detect_s": round(t_detect, 2), "score_s": round(t_score, 3),
                  "frames_per_s": round(len(frames) / (t_decode + t_detect + t_score), 2),
                  "faces_per_s_scoring": round(n_faces / max(t_score, 1e-9), 1),
                  "detect_py_wall_s": round(t_cli, 2)},
        "folder": {"images": args.images, "size": "512x512 JPEG", "wall_s": round(t_folder, 2),
                   "images_per_s": round(args.images / t_folder, 2)},
    }
    v = report["video"]
    print(f"video {v['resolution']}, {n_video} frames, {v['sampled_frames']} sampled: decode {v['decode_s']} s, "
          f"detect {v['detect_s']} s, score {v['score_s']} s ({v['faces_per_s_scoring']} faces/s); "
          f"{v['frames_per_s']} frames/s; detect.py end to end {v['detect_py_wall_s']} s")
    print(f"folder of {args.images} photos: {report['folder']['wall_s']} s, {report['folder']['images_per_s']} images/s")
    atomic_write_json(args.out, report)
    print(f"saved {args.out}")
    return report


if __name__ == "__main__":
    main()
