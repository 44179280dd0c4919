"""tools/face_preprocess.py on short videos made from a real face photo (scikit-image's astronaut)."""
from __future__ import annotations

import csv

import cv2
import numpy as np
import pytest
from skimage import data

import face_preprocess
from face_preprocess import label_from_path, split_of, square_box
from faces_dataset import FacesDataset

# where the astronaut's face is in the 512x512 photo (checked by eye: forehead to chin, ear to ear)
FACE = (170, 60, 290, 200)


def write_video(path, frames=8, shift=2):
    img = data.astronaut()[:, :, ::-1]
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 5, (512, 512))
    for k in range(frames):
        writer.write(np.roll(img, k * shift, axis=1))
    writer.release()


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("videos")
    write_video(root / "real" / "r1.mp4")
    write_video(root / "fake" / "f1.mp4")
    (root / "fake" / "broken.mp4").write_bytes(b"this is not a video" * 50)
    return root


def overlap(a, b):
    """Intersection over the area of b (the known face box)."""
    w = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    return w * h / ((b[2] - b[0]) * (b[3] - b[1]))


def test_pure_helpers():
    from pathlib import Path

    assert label_from_path(Path("original_sequences/youtube/c23/videos/000.mp4")) == 0
    assert label_from_path(Path("manipulated_sequences/Deepfakes/000_003.mp4")) == 1
    assert label_from_path(Path("misc/clip.mp4")) is None
    assert square_box(np.array([10, 10, 30, 50]), 0.0, 100, 100) == (0, 10, 40, 50)
    left, top, right, bottom = square_box(np.array([80, 80, 100, 100]), 0.5, 100, 100)
    assert right - left == bottom - top == 40 and right <= 100 and bottom <= 100
    assert split_of("a.mp4", (0.7, 0.15, 0.15), 1) == split_of("a.mp4", (0.7, 0.15, 0.15), 1)
    counts = {s: 0 for s in ("train", "val", "test")}
    for i in range(2000):
        counts[split_of(f"v{i}.mp4", (0.7, 0.15, 0.15), 0)] += 1
    assert 1300 < counts["train"] < 1500 and 200 < counts["val"] < 400


def test_crops_contain_the_face_and_catalog_matches(videos, tmp_path):
    out = tmp_path / "out"
    rows = face_preprocess.main(["--video-dir", str(videos), "--out-dir", str(out), "--fps", "5", "--max-frames", "3",
                                 "--extractor", "opencv", "--size", "64"])
    assert len(rows) == 6  # 3 frames of each readable video; the broken one is skipped
    with open(out / "catalog.csv", newline="") as f:
        catalog = list(csv.DictReader(f))
    assert [r["path"] for r in catalog] == [r["path"] for r in rows]
    for r in catalog:
        assert (out / r["path"]).is_file()
        box = tuple(int(r[k]) for k in ("x1", "y1", "x2", "y2"))
        shift = 2 * int(r["frame_index"])
        assert overlap(box, (FACE[0] + shift, FACE[1], FACE[2] + shift, FACE[3])) > 0.9
        assert float(r["prob"]) >= 0.95
        assert r["label"] == ("0" if r["source"].startswith("real/") else "1")
    from PIL import Image

    assert Image.open(out / catalog[0]["path"]).size == (64, 64)


def test_corrupt_video_is_reported_and_skipped(videos, tmp_path, capsys):
    face_preprocess.main(["--video-dir", str(videos), "--out-dir", str(tmp_path), "--max-frames", "1", "--extractor", "opencv"])
    out = capsys.readouterr()
    assert "skipping" in out.out + out.err and "broken.mp4" in out.out + out.err
    assert "1 skipped" in out.out


def test_resume_skips_done_sources(videos, tmp_path, capsys):
    argv = ["--video-dir", str(videos), "--out-dir", str(tmp_path), "--max-frames", "2", "--extractor", "opencv"]
    first = face_preprocess.main(argv)
    second = face_preprocess.main(argv)
    assert len(second) == len(first)  # nothing appended twice
    assert "resuming: 2 of 3 sources already" in capsys.readouterr().out


def test_assignment_layout_splits_by_video_without_leaks(tmp_path):
    root = tmp_path / "v"
    for i in range(6):
        write_video(root / "real" / f"r{i}.mp4", frames=3)
        write_video(root / "fake" / f"f{i}.mp4", frames=3)
    out = tmp_path / "data"
    rows = face_preprocess.main(["--video-dir", str(root), "--out-dir", str(out), "--fps", "5", "--max-frames", "2",
                                 "--layout", "assignment", "--extractor", "opencv", "--size", "48"])
    by_source = {}
    for r in rows:
        by_source.setdefault(r["source"], set()).add(r["split"])
        cls = "real" if r["label"] == 0 else "fake"
        assert r["path"].startswith(f"fakes_dataset/{r['split']}/{cls}/")
    assert all(len(splits) == 1 for splits in by_source.values())  # no video in two splits
    assert len(by_source) == 12 and len({s for splits in by_source.values() for s in splits}) >= 2
    train = out / "fakes_dataset" / "train"
    assert len(FacesDataset(train)) == sum(1 for r in rows if r["split"] == "train")  # the suite reads the layout
