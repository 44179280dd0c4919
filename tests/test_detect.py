"""detect.py on photos and videos made from scikit-image's astronaut, with a small constructed detector."""
from __future__ import annotations

import csv
import json

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data
from test_face_preprocess import FACE, overlap
from torch import nn

import detect
from checkpoints import save_checkpoint
from face_detection import evenly_spaced_indices
from faces_dataset import get_transforms
from metrics import aggregate, confident_strategy
from normalization import Normalization

SIZE = 64
NORM = Normalization((0.3, 0.5, 0.7), (0.2, 0.3, 0.4))  # not the default: detect.py must use the checkpoint's


class Redness(nn.Module):
    """P(fake) grows with the crop's mean red minus blue: a deterministic 'detector' whose output the test can recompute."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 1, 1)  # red - blue, times 4
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([4.0, 0.0, -4.0]).view(1, 3, 1, 1))
            self.conv.bias.zero_()

    def forward(self, x):
        s = self.conv(x).mean(dim=(1, 2, 3))
        return torch.stack([-s, s], dim=1)


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    root = tmp_path_factory.mktemp("media")
    photo = data.astronaut()
    Image.fromarray(photo).save(root / "astronaut.png")
    Image.new("RGB", (320, 240), (90, 140, 200)).save(root / "sky.png")  # no face
    (root / "broken.mp4").write_bytes(b"not a video" * 100)
    writer = cv2.VideoWriter(str(root / "clip.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 10, (512, 512))
    for k in range(20):
        writer.write(np.roll(photo[:, :, ::-1], 2 * k, axis=1))
    writer.release()
    return root


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, monkeypatch_module):
    """A checkpoint of the constructed detector, rebuilt through the model registry like any trained one."""
    import models

    monkeypatch_module.setitem(models.MODEL_SPECS, "Redness", models.ModelSpec(lambda **_: Redness(), image_size=SIZE,
                                                                                  cam_layer=lambda m: m.conv))
    path = tmp_path_factory.mktemp("ckpt") / "redness.pt"
    save_checkpoint({"model": Redness().state_dict(), "model_name": "Redness", "model_kwargs": {"image_size": SIZE},
                     "normalization": NORM.to_dict(),
                     "threshold": {"value": 0.42, "source": "validation EER"}}, path)
    return path


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


def expected_p_fake(image: Image.Image, box: list[int]) -> float:
    crop = image.crop(tuple(box)).resize((SIZE, SIZE), Image.LANCZOS)
    x = get_transforms(False, SIZE, NORM)(crop)[None]
    with torch.no_grad():
        return float(torch.softmax(Redness()(x), 1)[0, 1])


def test_photo_face_found_scored_as_the_model_scores_its_crop(media, checkpoint, tmp_path):
    results = detect.main([str(media / "astronaut.png"), "-cpp", str(checkpoint), "--out", str(tmp_path / "r.json"),
                           "--no-progress"])
    (result,) = results
    assert len(result.faces) == 1 and overlap(result.faces[0].box, FACE) > 0.9
    image = Image.open(media / "astronaut.png").convert("RGB")
    assert result.faces[0].p_fake == pytest.approx(expected_p_fake(image, result.faces[0].box), abs=1e-5)
    saved = json.loads((tmp_path / "r.json").read_text())
    assert saved["threshold"] == 0.42 and saved["threshold_source"] == "validation EER"  # the checkpoint's threshold
    assert saved["faces"][0]["p_fake"] == pytest.approx(result.faces[0].p_fake)
    assert saved["files"][0]["verdict"] == ("fake" if result.score >= 0.42 else "real")


def test_video_frames_csv_rows_and_mean_aggregate(media, checkpoint, tmp_path):
    (result,) = detect.main([str(media / "clip.mp4"), "-cpp", str(checkpoint), "--frames", "5", "--out",
                             str(tmp_path / "r.csv"), "--no-progress", "--threshold", "0.5"])
    frames = sorted({f.frame for f in result.faces})
    assert frames == evenly_spaced_indices(20, 5) == [2, 6, 10, 14, 18]
    assert result.score == pytest.approx(np.mean([f.p_fake for f in result.faces]))  # one face per frame
    rows = list(csv.DictReader(open(tmp_path / "r.csv")))
    faces = [r for r in rows if r["row"] == "face"]
    files = [r for r in rows if r["row"] == "file"]
    assert len(faces) == 5 and len(files) == 1 and files[0]["verdict"] == ("fake" if result.score >= 0.5 else "real")
    assert [float(r["p_fake"]) for r in faces] == pytest.approx([f.p_fake for f in result.faces], abs=1e-6)
    cap = cv2.VideoCapture(str(media / "clip.mp4"))
    cap.set(cv2.CAP_PROP_POS_FRAMES, 10)
    ok, bgr = cap.read()
    frame10 = Image.fromarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    face10 = [f for f in result.faces if f.frame == 10][0]
    assert face10.p_fake == pytest.approx(expected_p_fake(frame10, face10.box), abs=1e-5)


def test_aggregation_rules_on_hand_made_scores():
    assert aggregate(np.array([0.2, 0.4, 0.9]), "mean") == pytest.approx(0.5)
    many_fake = np.array([0.9] * 12 + [0.1] * 8)  # 12 > 11 and 12 > 20 / 2.5: mean of the confident fakes
    assert confident_strategy(many_fake) == pytest.approx(0.9)
    few_fake = np.array([0.9] * 10 + [0.1] * 10)  # only 10 confident fakes: plain mean
    assert confident_strategy(few_fake) == pytest.approx(0.5)
    nearly_all_real = np.array([0.1] * 19 + [0.6])  # 95 % confidently real: their mean
    assert confident_strategy(nearly_all_real) == pytest.approx(0.1)
    rows = [detect.FaceRow("v", 3, 0.1, [0, 0, 1, 1], 1.0, 0.7), detect.FaceRow("v", 3, 0.1, [0, 0, 1, 1], 1.0, 0.2),
            detect.FaceRow("v", 1, 0.0, [0, 0, 1, 1], 1.0, 0.4)]
    assert detect.frame_scores(rows).tolist() == [0.4, 0.7]  # frame order; a frame is its most fake face


def test_annotated_copies(media, checkpoint, tmp_path):
    detect.main([str(media / "astronaut.png"), str(media / "clip.mp4"), "-cpp", str(checkpoint), "--frames", "4",
                 "--annotate", str(tmp_path / "ann"), "--no-progress"])
    image = Image.open(tmp_path / "ann" / "astronaut.png.annotated.png")
    assert image.size == (512, 512)
    box_colour = np.asarray(image)[FACE[1] - 30:FACE[3] + 30, FACE[0] - 30:FACE[2] + 30]
    assert (np.abs(box_colour.astype(int) - np.asarray(data.astronaut())[FACE[1] - 30:FACE[3] + 30,
                                                                          FACE[0] - 30:FACE[2] + 30]).sum(-1) > 0).any()
    cap = cv2.VideoCapture(str(tmp_path / "ann" / "clip.mp4.annotated.mp4"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 20  # every frame, boxes from the nearest sampled frame
    assert (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))) == (512, 512)
    detect.main([str(media / "astronaut.png"), "-cpp", str(checkpoint), "--annotate", str(tmp_path / "cam"), "--cam",
                 "--no-progress"])
    assert Image.open(tmp_path / "cam" / "astronaut.png.annotated.png").size == (512 + 256, 512)  # the CAM tile beside the photo
    detect.main([str(media / "clip.mp4"), "-cpp", str(checkpoint), "--frames", "3", "--annotate", str(tmp_path / "cam"),
                 "--cam", "--no-progress"])
    cap = cv2.VideoCapture(str(tmp_path / "cam" / "clip.mp4.annotated.mp4"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)) == 512 + 256 and int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 20


def test_bad_inputs_are_reported_and_skipped(media, checkpoint, tmp_path, capsys):
    results = detect.main([str(media), "-cpp", str(checkpoint), "--frames", "3", "--no-progress"])
    verdicts = {r.file.split("/")[-1]: r.verdict for r in results}
    assert verdicts["sky.png"] == "no face found" and verdicts["broken.mp4"] == "unreadable"
    assert verdicts["astronaut.png"] in ("real", "fake") and verdicts["clip.mp4"] in ("real", "fake")
    out = capsys.readouterr().out
    assert "sky.png: no face found" in out and "broken.mp4: cannot read it" in out
    with pytest.raises(SystemExit) as err:  # nothing scored: non-zero exit
        detect.main([str(media / "sky.png"), str(media / "broken.mp4"), str(tmp_path / "missing.jpg"), "-cpp",
                     str(checkpoint), "--no-progress"])
    assert err.value.code == 2
    assert "no input could be scored" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        detect.main([str(media / "*.png"), "-cpp", str(checkpoint), "--out", str(tmp_path / "r.txt")])


def test_glob_and_folder_expansion(media, tmp_path):
    found, problems = detect.expand_inputs([str(media / "*.png"), str(media), str(tmp_path / "none.jpg"), str(tmp_path)])
    assert [p.name for p in found] == ["astronaut.png", "sky.png", "broken.mp4", "clip.mp4"]
    assert problems == [f"{tmp_path / 'none.jpg'}: no such file or folder", f"{tmp_path}: no image or video in this folder"]


def test_a_720p_frame_is_detected_shrunk_and_boxed_in_full_resolution(media, checkpoint, tmp_path):
    """Frames above 640 px are shrunk for MTCNN; the box must come back in the frame's own pixels."""
    frame = Image.new("RGB", (1280, 720), (30, 30, 30))
    frame.paste(Image.open(media / "astronaut.png").convert("RGB"), (600, 150))
    frame.save(tmp_path / "wide.png")
    (result,) = detect.main([str(tmp_path / "wide.png"), "-cpp", str(checkpoint), "--no-progress"])
    shifted = (FACE[0] + 600, FACE[1] + 150, FACE[2] + 600, FACE[3] + 150)
    assert len(result.faces) == 1 and overlap(result.faces[0].box, shifted) > 0.9


@pytest.mark.skipif(__import__("shutil").which("ffmpeg") is None, reason="ffmpeg not on PATH (OpenCV decodes instead)")
def test_ffmpeg_and_opencv_sample_the_same_frames(media):
    from face_detection import sample_frames

    by_ffmpeg = list(sample_frames(media / "clip.mp4", 5, "ffmpeg"))
    by_opencv = list(sample_frames(media / "clip.mp4", 5, "opencv"))
    assert [f[0] for f in by_ffmpeg] == [f[0] for f in by_opencv] == [2, 6, 10, 14, 18]
    for (_, t1, a), (_, t2, b) in zip(by_ffmpeg, by_opencv):
        assert t1 == t2 and np.abs(np.asarray(a, dtype=int) - np.asarray(b, dtype=int)).mean() < 2


def test_a_threshold_calibrated_on_a_folder_of_labelled_crops_is_its_eer_threshold(media, checkpoint, tmp_path, capsys):
    from metrics import equal_error_rate

    rng = np.random.default_rng(0)
    labels, scores = [], []
    for label, folder in ((0, "real"), (1, "fake")):
        (tmp_path / "cal" / folder).mkdir(parents=True)
        for k in range(6):  # redder crops are faker for the constructed detector; the classes overlap
            tint = rng.uniform(0.3, 0.8) + 0.15 * label
            crop = Image.fromarray((np.asarray(data.astronaut()[60:200, 170:290], dtype=float) * [tint, 1, 1]).astype(np.uint8))
            crop.save(tmp_path / "cal" / folder / f"{k}.png")
            with torch.no_grad():
                x = get_transforms(False, SIZE, NORM)(Image.open(tmp_path / "cal" / folder / f"{k}.png").convert("RGB"))
                scores.append(float(torch.softmax(Redness()(x[None]), 1)[0, 1]))
            labels.append(label)
    expected = equal_error_rate(np.array(labels), np.array(scores))[1]
    detect.main([str(media / "astronaut.png"), "-cpp", str(checkpoint), "--no-progress", "--threshold",
                 f"val-eer:{tmp_path / 'cal'}", "--out", str(tmp_path / "r.json")])
    saved = json.loads((tmp_path / "r.json").read_text())
    assert saved["threshold"] == pytest.approx(expected, abs=1e-6) and saved["threshold"] != 0.42
    assert saved["threshold_source"] == f"EER on {tmp_path / 'cal'} (12 crops)"
    with pytest.raises(SystemExit):
        detect.parse_args(["x.jpg", "-cpp", "c.pt", "--threshold", f"val-eer:{tmp_path / 'nowhere'}"])


def test_faces_are_cut_the_way_the_checkpoints_training_faces_were(media, checkpoint, tmp_path, capsys, demo_root):
    from checkpoints import read_checkpoint
    from face_detection import square_box

    framed = tmp_path / "framed.pt"
    save_checkpoint({**read_checkpoint(checkpoint), "framing": {"margin": -0.15, "source": "fakes_dataset (measured)"}},
                    framed)
    photo = str(media / "astronaut.png")
    (own,) = detect.main([photo, "-cpp", str(framed), "--no-progress"])
    assert "margin -0.15 (fakes_dataset (measured))" in capsys.readouterr().out
    (given,) = detect.main([photo, "-cpp", str(framed), "--no-progress", "--margin", "-0.15"])
    (default,) = detect.main([photo, "-cpp", str(checkpoint), "--no-progress"])  # no framing saved: 0.3
    assert own.faces[0].box == given.faces[0].box != default.faces[0].box
    side = lambda box: box[2] - box[0]  # noqa: E731
    assert side(default.faces[0].box) / side(own.faces[0].box) == pytest.approx(1.6 / 0.7, rel=0.03)
    import train_main

    train_main.main(["-d", "synthetic_dataset", "-m", "Bonus", "-e", "1", "-b", "8", "--image-size", "64", "--data-root",
                     str(demo_root), "--out-dir", str(tmp_path), "--checkpoint-dir", str(tmp_path), "--no-progress",
                     "--num-workers", "0"])
    from face_detection import measure_framing
    from faces_dataset import list_files_under

    train = demo_root / "synthetic_dataset" / "train"  # measured on the faces it read, never taken from the name
    assert read_checkpoint(tmp_path / "synthetic_dataset_Bonus_Adam.pt")["framing"] == measure_framing(
        list_files_under(train / "real") + list_files_under(train / "fake"), f"the train faces of {demo_root / 'synthetic_dataset'}").to_dict()
    assert square_box(np.array([100, 100, 200, 200]), -0.15, 512, 512) == (115, 115, 185, 185)


def test_a_third_annotate_run_numbers_past_the_copies_already_there(media, checkpoint, tmp_path):
    folder = tmp_path / "ann"
    photo = str(media / "astronaut.png")
    for _ in range(3):
        detect.main([photo, "-cpp", str(checkpoint), "--annotate", str(folder), "--no-progress"])
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["astronaut.png.annotated-2.png", "astronaut.png.annotated-3.png", "astronaut.png.annotated.png"]
    first = (folder / "astronaut.png.annotated.png").read_bytes()
    detect.main([photo, "-cpp", str(checkpoint), "--annotate", str(folder), "--no-progress"])  # a fourth: -4, none replaced
    assert (folder / "astronaut.png.annotated.png").read_bytes() == first and (folder / "astronaut.png.annotated-4.png").is_file()
