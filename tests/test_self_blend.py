"""Landmarks on a real face photo, the self-blend's definitions, pair batches, and a toy swap the model never saw."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data
from torch import nn

import landmarks
import self_blend
from conftest import TinyNet
from self_blend import SelfBlendEvaluation, SelfBlendPairs, blend, post_augment
from trainer import LoggingParameters, Trainer

# the astronaut's features in the 512 x 512 photo, read off the photo by eye (pixels, x then y)
LEFT_EYE, RIGHT_EYE, NOSE_TIP, MOUTH = (203, 101), (247, 104), (225, 127), (223, 146)


def test_landmarks_fall_on_the_astronauts_eyes_nose_and_mouth():
    points = landmarks.LandmarkDetector()(data.astronaut())
    assert points.shape == (68, 2)
    for index, where, tolerance in ((landmarks.EYES[:6], LEFT_EYE, 6), (landmarks.EYES[6:], RIGHT_EYE, 6),
                                    ([30], NOSE_TIP, 6), (landmarks.MOUTH, MOUTH, 6)):
        centre = points[list(index)].mean(axis=0)
        assert np.hypot(*(centre - where)) < tolerance, (index, centre)
    jaw = points[list(landmarks.JAW)]
    assert jaw[:, 1].max() > MOUTH[1] + 20 and jaw[:, 0].min() < LEFT_EYE[0] - 10  # the chin below, the jaw outside


def test_landmark_cache_reuses_unchanged_images_recomputes_changed_ones_and_stays_out_of_the_data(tmp_path, monkeypatch):
    faces = tmp_path / "faces"
    faces.mkdir()
    photo = Image.fromarray(data.astronaut())
    photo.save(faces / "a.png")
    photo.transpose(Image.FLIP_LEFT_RIGHT).save(faces / "b.png")
    cache = tmp_path / "cache"
    first = landmarks.folder_landmarks([faces / "a.png", faces / "b.png"], cache, progress=False)
    assert sorted(p.name for p in faces.iterdir()) == ["a.png", "b.png"] and len(list(cache.iterdir())) == 1
    assert first[faces / "b.png"][list(landmarks.NOSE)[-1], 0] == pytest.approx(512 - 1 - first[faces / "a.png"][31, 0], abs=4)
    calls = []

    class Counting(landmarks.LandmarkDetector):
        def locate(self, rgb):
            calls.append(1)
            return super().locate(rgb)

    monkeypatch.setattr(landmarks, "LandmarkDetector", Counting)
    again = landmarks.folder_landmarks([faces / "a.png", faces / "b.png"], cache, progress=False)
    assert calls == [] and all(np.array_equal(again[k], first[k]) for k in first)
    photo.crop((100, 0, 512, 412)).resize((512, 512)).save(faces / "b.png")  # b changes, a does not
    changed = landmarks.folder_landmarks([faces / "a.png", faces / "b.png"], cache, progress=False)
    assert calls == [1] and np.array_equal(changed[faces / "a.png"], first[faces / "a.png"])
    assert not np.allclose(changed[faces / "b.png"], first[faces / "b.png"], atol=5)


def toy_points(size: int, cx: float, cy: float, rx: float, ry: float) -> np.ndarray:
    """68 points in the 300-W layout on a toy face: jaw on the lower half of the ellipse, brows, nose, eyes, mouth."""
    jaw = [(cx + rx * np.cos(a), cy + ry * np.sin(a)) for a in np.linspace(np.pi, 0, 17) * -1 + np.pi]
    brows = [(cx + rx * (t - 0.5) * 1.4, cy - 0.45 * ry) for t in np.linspace(0, 1, 10)]
    nose = [(cx, cy - 0.3 * ry + 0.1 * ry * k) for k in range(4)] + [(cx + 0.08 * rx * k, cy + 0.15 * ry) for k in range(-2, 3)]
    eyes = [(cx + s * 0.35 * rx + 0.1 * rx * np.cos(a), cy - 0.25 * ry + 0.05 * ry * np.sin(a))
            for s in (-1, 1) for a in np.linspace(0, 2 * np.pi, 6, endpoint=False)]
    mouth = [(cx + 0.3 * rx * np.cos(a), cy + 0.45 * ry + 0.1 * ry * np.sin(a)) for a in np.linspace(0, 2 * np.pi, 20, endpoint=False)]
    return np.clip(np.array(jaw + brows + nose + eyes + mouth, dtype=np.float32), 0, size - 1)


def toy_face(rng: np.random.Generator, size: int = 48) -> tuple[np.ndarray, np.ndarray]:
    """A noisy background with a skin-toned ellipse of fine texture (which resampling blurs away, as a swap's
    resolution mismatch does): (uint8 RGB, its 68 points)."""
    image = (rng.uniform(40, 200, 3) + rng.normal(0, 3, (size, size, 3))).clip(0, 255)
    cx, cy, rx, ry = size / 2 + rng.uniform(-2, 2), size / 2 + rng.uniform(-2, 2), size * 0.3, size * 0.38
    yy, xx = np.mgrid[:size, :size]
    inside = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1
    pores = 12 * np.sin(xx * rng.uniform(1.8, 2.2)) * np.sin(yy * rng.uniform(1.8, 2.2))  # fine skin texture
    skin = rng.uniform([150, 100, 80], [230, 180, 150]) + pores[..., None]
    image[inside] = skin[inside]
    return image.round().astype(np.uint8), toy_points(size, cx, cy, rx, ry)


def test_a_blend_is_the_target_where_the_mask_is_zero_and_only_differs_inside_it():
    rng = np.random.default_rng(0)
    face, points = toy_face(rng, 64)
    other = np.full_like(face, 7)
    mask = np.zeros(face.shape[:2], np.float32)
    mask[20:40, 10:30] = 0.5
    out = blend(other, face, mask)
    assert np.array_equal(out[mask == 0], face[mask == 0])
    assert np.array_equal(out[20:40, 10:30], np.round(0.5 * 7 + 0.5 * face[20:40, 10:30].astype(np.float32)).astype(np.uint8))
    for seed in range(6):  # with the source altered the target is the face itself: untouched outside the mask
        fake, m = self_blend.self_blend(face, points, np.random.default_rng(seed), alter_source=True)
        assert np.array_equal(fake[m == 0], face[m == 0]) and (m == 0).any()
        assert np.abs(fake.astype(int) - face.astype(int))[m > 0.5 * m.max()].max() > 0
        assert 0 <= m.min() and m.max() <= 1 and m.max() in [pytest.approx(r) for r in self_blend.BLEND_RATIOS]


def test_a_blend_ratio_of_zero_gives_the_target(monkeypatch):
    monkeypatch.setattr(self_blend, "BLEND_RATIOS", (0.0,))
    face, points = toy_face(np.random.default_rng(1), 64)
    fake, mask = self_blend.self_blend(face, points, np.random.default_rng(3), alter_source=True)
    assert mask.max() == 0 and np.array_equal(fake, face)


def test_the_alteration_always_moves_colour_or_sharpness_and_makes_faces_both_softer_and_sharper():
    face, _ = toy_face(np.random.default_rng(2), 64)

    def detail(x: np.ndarray) -> float:  # variance of the Laplacian: fine texture, which resampling removes
        return float(cv2.Laplacian(x.mean(axis=2).astype(np.float32), cv2.CV_32F).var())

    kinds = set()
    for seed in range(24):
        out = self_blend.alter(face, np.random.default_rng(seed))
        colour_moved = np.abs(out.mean(axis=(0, 1)) - face.mean(axis=(0, 1))).max() > 1
        ratio = detail(out) / detail(face)
        assert colour_moved or not 0.8 < ratio < 1.25, seed
        kinds.add("softer" if ratio < 0.8 else "sharper" if ratio > 1.25 else "same detail")
    assert {"softer", "sharper"} <= kinds, kinds


def test_blend_regions_limit_where_the_mask_can_reach():
    face, points = toy_face(np.random.default_rng(4), 64)
    jaw_ends = [tuple(np.round(points[k]).astype(int)) for k in (0, 16)]  # the jaw's ends, level with the face centre

    def reach(regions: tuple[str, ...]) -> float:
        masks = [self_blend.blend_mask(points, face.shape[:2], np.random.default_rng(s), regions) for s in range(12)]
        assert all(m.max() > 0 for m in masks)
        return max(float(m[y, x]) for m in masks for x, y in jaw_ends)

    assert reach(("eyes-nose-mouth",)) == 0 and reach(("inner", "eyes-nose-mouth")) == 0
    assert reach(("face",)) > 0.2 and reach(tuple(self_blend.HULLS)) > 0.2


def to_tensor(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(image, dtype=np.float32).copy()).permute(2, 0, 1) / 255


def toy_pairs(tmp_path, n: int, seed: int = 0) -> SelfBlendPairs:
    rng = np.random.default_rng(seed)
    paths, points = [], {}
    for k in range(n):
        face, pts = toy_face(rng)
        paths.append(tmp_path / f"face{k}.png")
        Image.fromarray(face).save(paths[-1])
        points[paths[-1]] = pts
    return SelfBlendPairs(paths, points, to_tensor)


def test_the_real_and_blended_image_of_a_pair_share_their_post_augmentation(tmp_path, monkeypatch):
    pairs = toy_pairs(tmp_path, 1)
    a = np.asarray(Image.open(pairs.paths[0]))
    for seed in range(8):
        same = post_augment([a, a.copy()], np.random.default_rng(seed))
        assert np.array_equal(same[0], same[1])
    seen_changed = False
    for seed in range(8):  # pairs whose blend is a no-op come out identical: every augmentation hit both alike
        monkeypatch.setattr(self_blend, "BLEND_RATIOS", (0.0,))
        monkeypatch.setattr(self_blend, "alter", lambda image, rng: image)
        np.random.seed(seed)
        x, y = pairs[0]
        assert y.tolist() == [0, 1] and x.shape == (2, 3, 48, 48) and torch.equal(x[0], x[1])
        monkeypatch.undo()
        np.random.seed(seed)
        x, _ = pairs[0]
        seen_changed |= not torch.equal(x[0], x[1])
        seen_changed |= not torch.equal(x[0], to_tensor(Image.open(pairs.paths[0])))
    assert seen_changed


def test_same_seed_same_pairs_for_0_and_2_workers(tmp_path):
    pairs = toy_pairs(tmp_path, 12)
    lp = LoggingParameters("Toy", "toy", "Adam")

    def run(workers: int) -> list[float]:
        torch.manual_seed(0)
        model = TinyNet()
        flat = SelfBlendEvaluation(pairs.paths, pairs.points, to_tensor)
        trainer = Trainer(model, torch.optim.Adam(model.parameters(), lr=0.01), nn.CrossEntropyLoss(), 8, pairs,
                          flat, flat, num_workers=workers, out_dir=tmp_path / str(workers),
                          checkpoint_dir=tmp_path / str(workers), progress=False)
        batches = [(x.shape[0], y.tolist()) for x, y in trainer._loader(pairs, shuffle=True)]
        assert batches[0] == (8, [0, 1, 0, 1, 0, 1, 0, 1])  # -b 8: four pairs, each real beside its blend
        return trainer.run(2, lp)["train_loss"]

    assert run(2) == run(0)


def test_flatten_pairs_keeps_each_image_beside_its_label():
    items = [(torch.stack([torch.full((1, 2, 2), 10.0 * k), torch.full((1, 2, 2), 10.0 * k + 1)]), torch.tensor([0, 1]))
             for k in range(3)]
    images, labels = self_blend.flatten_pairs(items)
    assert images[:, 0, 0, 0].tolist() == [0, 1, 10, 11, 20, 21] and labels.tolist() == [0, 1, 0, 1, 0, 1]


def test_train_main_self_blend_run_is_named_apart_validated_on_blends_and_logged(demo_root, tmp_path, monkeypatch, capsys):
    import train_main

    monkeypatch.setattr(landmarks, "CACHE_DIR", tmp_path / "cache")
    argv = ["-d", "fakes_dataset", "-m", "Bonus", "-e", "1", "-b", "8", "--image-size", "64", "--data-root", str(demo_root),
            "--out-dir", str(tmp_path), "--checkpoint-dir", str(tmp_path), "--no-progress", "--num-workers", "0"]
    record = train_main.main(argv + ["--fakes", "self-blend"])
    n_real = {s: len(list((demo_root / "fakes_dataset" / s / "real").iterdir())) for s in ("train", "val")}
    assert record["config"]["fakes"] == "self-blend" and record["tag"] == "selfblend"
    assert (tmp_path / "fakes_dataset_Bonus_Adam_selfblend.pt").is_file()
    assert not (tmp_path / "fakes_dataset_Bonus_Adam.pt").exists() and not (tmp_path / "bonus.pt").exists()
    assert f"{2 * n_real['train']} train / {2 * n_real['val']} val" in capsys.readouterr().out
    assert len(list((tmp_path / "cache").iterdir())) == 2  # train/real and val/real, outside the data folder
    both = train_main.main(argv + ["--fakes", "both"])
    assert both["tag"] == "selfblend+dataset"
    drawn = []
    monkeypatch.setattr(self_blend, "blend_mask", lambda points, shape, rng, regions: drawn.append(regions) or
                        np.zeros(shape, np.float32))
    inner = train_main.main(argv + ["--fakes", "self-blend", "--blend-regions", "inner,eyes-nose-mouth"])
    assert inner["tag"] == "selfblend-inner+eyes-nose-mouth" and inner["config"]["blend_regions"] == ["inner", "eyes-nose-mouth"]
    assert drawn and set(drawn) == {("inner", "eyes-nose-mouth")}  # training pairs and validation blends alike
    assert (tmp_path / "fakes_dataset_Bonus_Adam_selfblend.pt").is_file()  # the all-regions run keeps its own files
    with pytest.raises(SystemExit):
        train_main.parse_args(argv + ["--blend-regions", "inner"])  # only for self-blends
    for refused in (["--balance", "weights"], ["--random-crop", "48"]):
        with pytest.raises(SystemExit):
            train_main.parse_args(argv + ["--fakes", "self-blend", *refused])


def toy_swap(rng: np.random.Generator, size: int = 48) -> np.ndarray:
    """A toy face swap: another toy face (its own skin tone and texture), rendered at a generator's lower resolution,
    pasted into the target through a feathered ellipse over eyes, nose and mouth — no landmark hull, no self-blend."""
    target, points = toy_face(rng, size)
    source, _ = toy_face(rng, size)
    small = cv2.resize(source, (round(size * rng.uniform(0.4, 0.7)),) * 2, interpolation=cv2.INTER_AREA)
    source = cv2.resize(small, (size, size), interpolation=cv2.INTER_LINEAR)
    centre = (round(points[27:36, 0].mean()), round(points[36:68, 1].mean()))
    mask = np.zeros((size, size), np.float32)
    cv2.ellipse(mask, centre, (round(size * 0.22), round(size * 0.27)), 0, 0, 360, 1.0, -1)
    return blend(source, target, cv2.GaussianBlur(mask, (7, 7), 0))


class BlendNet(nn.Module):
    """Three 3 x 3 conv layers with batch norm and a global max over positions: small, but able to find a local trace."""

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for k, (a, b) in enumerate(((3, 16), (16, 16), (16, 32))):
            layers += [nn.Conv2d(a, b, 3, padding=1), nn.BatchNorm2d(b), nn.ReLU()] + ([nn.MaxPool2d(2)] if k == 1 else [])
        self.features, self.fc = nn.Sequential(*layers), nn.Linear(32, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).amax(dim=(2, 3)))


def swap_detection_auc(tmp_path, ratios: tuple[float, ...], monkeypatch) -> float:
    """Test AUC on 100 toy faces and 100 toy swaps of a BlendNet trained by the Trainer on self-blends of 64 other toy
    faces (blend ratios `ratios`; (0,) makes every 'fake' identical to its real face) for 30 epochs."""
    monkeypatch.setattr(self_blend, "BLEND_RATIOS", ratios)
    tmp_path.mkdir()
    pairs = toy_pairs(tmp_path, 64, seed=1)
    rng = np.random.default_rng(1001)
    faces = [toy_face(rng)[0] for _ in range(100)] + [toy_swap(rng) for _ in range(100)]
    swaps = torch.utils.data.TensorDataset(torch.stack([to_tensor(Image.fromarray(x)) for x in faces]),
                                           torch.tensor([0] * 100 + [1] * 100))
    blends = SelfBlendEvaluation(pairs.paths[:8], pairs.points, to_tensor)  # validation: self-blends, as in training
    torch.manual_seed(1)
    model = BlendNet()
    trainer = Trainer(model, torch.optim.Adam(model.parameters(), lr=3e-3), nn.CrossEntropyLoss(), 16, pairs, blends, swaps,
                      num_workers=0, out_dir=tmp_path, checkpoint_dir=tmp_path, progress=False, seed=1)
    return trainer.run(30, LoggingParameters("Toy", "toy", "Adam"))["test_auc"][-1]


@pytest.fixture
def one_thread():
    """Convolutions this small gain nothing from a second thread, and lose much when another process holds the CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_a_model_trained_on_self_blends_of_toy_faces_detects_a_toy_swap_it_never_saw(tmp_path, monkeypatch, one_thread):
    trained = swap_detection_auc(tmp_path / "blends", self_blend.BLEND_RATIOS, monkeypatch)
    control = swap_detection_auc(tmp_path / "no-op", (0.0,), monkeypatch)  # same training, blends that change nothing
    print(f'toy swap AUC {trained:.3f} trained on self-blends, {control:.3f} on no-op blends')
    assert trained >= 0.8 and control <= 0.65, (trained, control)


def test_each_kind_of_alteration_occurs_and_none_is_never_drawn(monkeypatch):
    """Colour only, sharpness only and both each happen (about 1/2, 1/4, 1/4 of the draws), never neither."""
    kinds = []
    seen: list[str] = []
    monkeypatch.setattr(self_blend, "alter_colour", lambda image, rng: seen.append("colour") or image)
    monkeypatch.setattr(self_blend, "alter_frequency", lambda image, rng: seen.append("frequency") or image)
    image = np.zeros((8, 8, 3), np.uint8)
    for seed in range(400):
        seen.clear()
        self_blend.alter(image, np.random.default_rng(seed))
        kinds.append("+".join(seen))
    counts = {kind: kinds.count(kind) for kind in set(kinds)}
    assert set(counts) == {"colour", "frequency", "colour+frequency"}
    assert 150 < counts["colour"] < 250 and 60 < counts["frequency"] < 140 and 60 < counts["colour+frequency"] < 140


def test_with_fakes_both_every_dataset_fake_of_a_batch_is_labelled_fake(tmp_path):
    faces, fakes = [], []
    rng = np.random.default_rng(0)
    for k in range(3):
        image, _ = toy_face(rng)
        faces.append(tmp_path / f"real{k}.png")
        Image.fromarray(image).save(faces[-1])
    for k in range(5):  # an odd count: the last pair repeats the last fake
        fakes.append(tmp_path / f"fake{k}.png")
        Image.fromarray(np.full((48, 48, 3), 30 * k, np.uint8)).save(fakes[-1])
    points = {p: toy_points(48, 24, 24, 14, 18) for p in faces}
    to_tensor = lambda image: torch.from_numpy(np.asarray(image, dtype=np.float32)).permute(2, 0, 1) / 255  # noqa: E731
    data = self_blend.PairConcat([SelfBlendPairs(faces, points, to_tensor), self_blend.FakePairs(fakes, to_tensor)])
    loader = torch.utils.data.DataLoader(data, batch_size=4, shuffle=False, collate_fn=data.collate)
    images, labels = (torch.cat(parts) for parts in zip(*loader))
    grey = [30 * k / 255 for k in (0, 1, 2, 3, 4, 4)]  # 5 fakes in 3 pairs: the last pair repeats the last fake
    assert torch.allclose(images[6:].amax(dim=(1, 2, 3)), torch.tensor(grey)) and images[6:].std(dim=(1, 2, 3)).max() == 0
    assert labels.tolist() == [0, 1] * 3 + [1] * 6  # the dataset's fakes, after the real/blend pairs, all fake


def test_validation_blends_of_two_faces_are_different_draws_and_the_same_every_time(tmp_path):
    """Two files of one face: their validation blends differ (each face draws from its own seed), and each is the
    same on every call (a fixed validation set)."""
    image, points = toy_face(np.random.default_rng(1))
    paths = [tmp_path / "a.png", tmp_path / "b.png"]
    for path in paths:
        Image.fromarray(image).save(path)
    to_tensor = lambda image: torch.from_numpy(np.asarray(image, dtype=np.float32)).permute(2, 0, 1)  # noqa: E731
    val = SelfBlendEvaluation(paths, {p: points for p in paths}, to_tensor, seed=3)
    first, second = val[1][0], val[3][0]  # the blends of face 0 and face 1
    assert not torch.equal(first, second)
    assert torch.equal(val[1][0], first) and torch.equal(val[0][0], val[2][0])  # repeatable; the reals are the same image
