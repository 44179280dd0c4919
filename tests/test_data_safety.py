"""Nothing the user owns is lost: annotated copies, same-named runs, crop names, cut catalogs, partial cross-evaluations,
a showcase step that fails at the end of a finished pipeline."""
from __future__ import annotations

import csv
import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data

import detect
import face_preprocess
import train_main
from checkpoints import read_checkpoint
from conftest import REPO
from files import run_lock
from test_detect import checkpoint, media, monkeypatch_module  # noqa: F401  (fixtures)


def digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def test_annotating_into_the_input_folder_changes_no_input_and_skips_its_own_copies(media, checkpoint, tmp_path):  # noqa: F811
    album = tmp_path / "album"
    album.mkdir()
    photo = Image.open(media / "astronaut.png").convert("RGB")
    photo.save(album / "beach.png")
    photo.transpose(Image.FLIP_LEFT_RIGHT).save(album / "beach.jpg", quality=90)  # same stem, another picture
    shutil.copy(media / "clip.mp4", album / "party.mp4")
    inputs = digest(album)
    argv = [str(album), "-cpp", str(checkpoint), "--frames", "3", "--annotate", str(album), "--no-progress"]
    first = detect.main(argv)
    after = digest(album)
    assert {k: after[k] for k in inputs} == inputs  # every original byte for byte
    assert sorted(set(after) - set(inputs)) == ["beach.jpg.annotated.png", "beach.png.annotated.png",
                                                "party.mp4.annotated.mp4"]
    alone = {r.file: r.score for r in detect.main([str(album / "beach.png"), str(album / "beach.jpg"), "-cpp",
                                                   str(checkpoint), "--no-progress"])}
    assert {r.file: r.score for r in first if r.file in alone} == alone  # each photo scored as itself
    second = detect.main(argv)  # the copies of the first run are not inputs; the new copies do not replace them
    assert sorted(Path(r.file).name for r in second) == ["beach.jpg", "beach.png", "party.mp4"]
    again = digest(album)
    assert {k: again[k] for k in after} == after
    assert sorted(set(again) - set(after)) == ["beach.jpg.annotated-2.png", "beach.png.annotated-2.png",
                                               "party.mp4.annotated-2.mp4"]


def test_two_inputs_of_one_name_get_two_annotated_copies(media, checkpoint, tmp_path):  # noqa: F811
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        shutil.copy(media / "astronaut.png", tmp_path / folder / "img.png")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "img.png.annotated.png").write_bytes(b"the user's own file")
    detect.main([str(tmp_path / "a" / "img.png"), str(tmp_path / "b" / "img.png"), "-cpp", str(checkpoint),
                 "--annotate", str(tmp_path / "out"), "--no-progress"])
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "img.png.annotated-2.png", "img.png.annotated-3.png", "img.png.annotated.png"]
    assert (tmp_path / "out" / "img.png.annotated.png").read_bytes() == b"the user's own file"
    targets = detect.annotation_targets([Path("x/v.mp4"), Path("y/v.mp4"), Path("v.mp4.png")], tmp_path / "new")
    assert [t.name for t in targets.values()] == ["v.mp4.annotated.mp4", "v.mp4.annotated-2.mp4", "v.mp4.png.annotated.png"]


TRAIN = ["-d", "fakes_dataset", "-m", "Bonus", "-e", "1", "-b", "8", "--image-size", "64", "--no-progress",
         "--num-workers", "0"]


def test_a_second_run_of_one_name_keeps_the_first_runs_checkpoints(demo_root, tmp_path):
    argv = TRAIN + ["--data-root", str(demo_root), "--out-dir", str(tmp_path), "--checkpoint-dir", str(tmp_path)]
    first = train_main.main(argv)
    best, last = read_checkpoint(tmp_path / "fakes_dataset_Bonus_Adam.pt"), read_checkpoint(tmp_path / "fakes_dataset_Bonus_Adam_last.pt")
    second = train_main.main(argv + ["--lr", "0.05", "--seed", "7"])
    kept = sorted(p.name for p in (tmp_path / "previous").iterdir())
    run_id = first["run_id"]
    assert kept == [f"fakes_dataset_Bonus_Adam__{run_id}.pt", f"fakes_dataset_Bonus_Adam__{run_id}_last.pt"]
    for name, original in ((kept[0], best), (kept[1], last)):
        moved = read_checkpoint(tmp_path / "previous" / name)
        assert moved["record"]["run_id"] == run_id
        assert all(torch.equal(moved["model"][k], original["model"][k]) for k in original["model"])
    now = read_checkpoint(tmp_path / "fakes_dataset_Bonus_Adam.pt")
    assert now["record"]["run_id"] == second["run_id"] != run_id
    assert [r["run_id"] for r in json.loads((tmp_path / "fakes_dataset_Bonus_Adam.json").read_text())] == [
        run_id, second["run_id"]]


def test_a_run_of_a_name_that_is_running_stops_before_touching_its_files(demo_root, tmp_path, capsys):
    argv = TRAIN + ["--data-root", str(demo_root), "--out-dir", str(tmp_path), "--checkpoint-dir", str(tmp_path)]
    temp = tmp_path / ".fakes_dataset_Bonus_Adam.pt.abc123.tmp"  # the running run's checkpoint being written
    temp.write_bytes(b"half a checkpoint")
    with run_lock(tmp_path / ".fakes_dataset_Bonus_Adam.run.lock", "x", "y"):
        with pytest.raises(SystemExit) as err:
            train_main.main(argv)
    assert err.value.code == 2
    message = capsys.readouterr().err
    assert "a run named fakes_dataset_Bonus_Adam is already running (pid" in message and "--checkpoint-dir" in message
    assert temp.read_bytes() == b"half a checkpoint"
    assert not (tmp_path / "fakes_dataset_Bonus_Adam.json").exists()
    train_main.main(argv)  # the lock is gone with its holder
    assert (tmp_path / "fakes_dataset_Bonus_Adam.pt").is_file()


@pytest.fixture(scope="module")
def colliding_photos(tmp_path_factory) -> Path:
    """Sources whose old crop names collided: clip.png / clip.jpg, and a/clip.png / a_clip.png."""
    root = tmp_path_factory.mktemp("photos")
    photo = Image.fromarray(data.astronaut())
    for relative in ("real/clip.png", "real/clip.jpg", "real/a/clip.png", "real/a_clip.png", "fake/b.png"):
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        photo.save(root / relative)
    return root


def test_colliding_source_names_give_distinct_crops_and_no_split_leak(colliding_photos, tmp_path):
    out = tmp_path / "crops"
    rows = face_preprocess.main(["--image-dir", str(colliding_photos), "--out-dir", str(out), "--no-progress",
                                 "--size", "64", "--split", "0.5", "0.5", "0"])
    catalog = list(csv.DictReader(open(out / "catalog.csv")))
    assert len(rows) == len(catalog) == 5
    paths = [r["path"] for r in catalog]
    assert len(set(paths)) == 5 and all((out / p).is_file() for p in paths)  # every reported crop exists
    assert len({(r["path"], r["split"]) for r in catalog}) == len(set(paths))  # no crop in two splits
    assert face_preprocess.crop_stem(Path("real/a/clip.mp4")) != face_preprocess.crop_stem(Path("real/a_clip.mp4"))
    assert face_preprocess.crop_stem(Path("real/clip.mp4")) != face_preprocess.crop_stem(Path("real/clip.avi"))


def test_a_catalog_cut_by_a_kill_loses_the_cut_source_only_and_it_is_redone(colliding_photos, tmp_path):
    out = tmp_path / "crops"
    argv = ["--image-dir", str(colliding_photos), "--out-dir", str(out), "--no-progress", "--size", "64"]
    face_preprocess.main(argv)
    text = (out / "catalog.csv").read_text()
    whole = list(csv.DictReader(open(out / "catalog.csv")))
    (out / "catalog.csv").write_text(text[: len(text) - 25])  # the last row cut in the middle
    face_preprocess.main(argv)
    again = list(csv.DictReader(open(out / "catalog.csv")))
    assert all(None not in r.values() and len(r) == len(face_preprocess.CATALOG_COLUMNS) for r in again)
    key = lambda r: (r["source"], r["path"], r["split"])  # noqa: E731
    assert sorted(map(key, again)) == sorted(map(key, whole))


def test_cross_eval_keeps_every_cell_tells_same_named_checkpoints_apart_and_refuses_a_root_without_test(
        demo_root, tmp_path, capsys):
    import cross_eval

    for folder, seed in (("a", "1"), ("b", "2")):
        train_main.main(TRAIN + ["--data-root", str(demo_root), "--out-dir", str(tmp_path / folder), "--checkpoint-dir",
                                 str(tmp_path / folder), "--seed", seed])
    ckpts = [str(tmp_path / f / "fakes_dataset_Bonus_Adam.pt") for f in ("a", "b")]
    one_class = tmp_path / "oneclass"
    shutil.copytree(demo_root / "fakes_dataset" / "test" / "real", one_class / "fakes_dataset" / "test" / "real")
    (one_class / "fakes_dataset" / "test" / "fake").mkdir()  # a test split without fakes
    rows = cross_eval.main(["--checkpoints", *ckpts, "--data-roots", str(one_class), str(demo_root), "-d",
                            "fakes_dataset", "--out-dir", str(tmp_path), "--figures-dir", str(tmp_path), "--no-progress",
                            "--bootstrap", "20"])
    assert [(r["checkpoint"], r["test_set"]) for r in rows] == [
        ("a/fakes_dataset_Bonus_Adam", "oneclass/fakes_dataset"), ("a/fakes_dataset_Bonus_Adam", f"{demo_root.name}/fakes_dataset"),
        ("b/fakes_dataset_Bonus_Adam", "oneclass/fakes_dataset"), ("b/fakes_dataset_Bonus_Adam", f"{demo_root.name}/fakes_dataset")]
    assert rows[0]["auc"] is None and "only real images" in rows[0]["note"]
    real_count = len(list((one_class / "fakes_dataset" / "test" / "real").iterdir()))
    assert rows[0]["n"] == real_count and 0 <= rows[0]["accuracy"] <= 1
    assert rows[1]["auc"] is not None and rows[3]["auc"] is not None and rows[1]["auc"] != rows[3]["auc"]
    grid = cross_eval.auc_grid(rows, [rows[0]["checkpoint"], rows[2]["checkpoint"]], [rows[0]["test_set"], rows[1]["test_set"]])
    assert np.isnan(grid[:, 0]).all() and grid[0, 1] == rows[1]["auc"] and grid[1, 1] == rows[3]["auc"]
    assert json.loads((tmp_path / "cross_eval.json").read_text()) == rows
    with pytest.raises(SystemExit) as err:
        cross_eval.main(["--checkpoints", ckpts[0], "--data-roots", str(demo_root), str(tmp_path / "a"),
                         "--out-dir", str(tmp_path), "--no-progress"])
    assert err.value.code == 2 and f"{tmp_path / 'a'} has no" in capsys.readouterr().err


def test_a_failing_showcase_step_does_not_fail_the_pipeline(tmp_path):
    function = subprocess.run(["sed", "-n", "/^showcase() {/,/^}/p", str(REPO / "run_me.sh")], capture_output=True,
                              text=True, check=True).stdout
    assert function.startswith("showcase()")
    script = f'{function}\nTIMES={tmp_path}/t.tsv\nshowcase "demo ok" true\nshowcase "demo" false\necho "went on"\n'
    proc = subprocess.run(["bash", "-euo", "pipefail", "-c", script], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.rstrip().endswith("went on")
    assert "showcase step 'demo' did not succeed (exit 1" in proc.stderr
    steps = [line.split("\t")[0] for line in (tmp_path / "t.tsv").read_text().splitlines()]
    assert steps == ["demo ok", "demo (did not succeed)"]


def test_read_catalog_drops_every_row_of_the_source_whose_last_row_was_cut(tmp_path):
    path = tmp_path / "catalog.csv"
    rows = [{c: "" for c in face_preprocess.CATALOG_COLUMNS} | {"path": f"real/{s}_{k}.png", "source": s, "split": "train"}
            for s, n in (("a.mp4", 2), ("b.mp4", 3)) for k in range(n)]
    face_preprocess.write_rows(path, rows)
    text = path.read_text()
    path.write_text(text[:-8])  # b.mp4's third row cut short
    kept, done = face_preprocess.read_catalog(path)
    assert [r["path"] for r in kept] == ["real/a.mp4_0.png", "real/a.mp4_1.png"] and done == {"a.mp4"}
    assert face_preprocess.read_catalog(path) == (kept, done)  # the file itself was repaired
    assert path.read_text().endswith("\n")


def test_cross_eval_target_val_thresholds_are_the_eer_of_each_target_val_split(demo_root, tmp_path):
    import cross_eval
    from detector import load_model_from_checkpoint
    from faces_dataset import load_dataset
    from metrics import equal_error_rate
    from numerical_analysis import get_soft_scores_and_true_labels

    train_main.main(TRAIN + ["--data-root", str(demo_root), "--out-dir", str(tmp_path), "--checkpoint-dir", str(tmp_path)])
    ckpt = tmp_path / "fakes_dataset_Bonus_Adam.pt"
    rows = cross_eval.main(["--checkpoints", str(ckpt), "--data-roots", str(demo_root), "--out-dir", str(tmp_path),
                            "--figures-dir", str(tmp_path), "--no-progress", "--bootstrap", "10", "--threshold", "target-val"])
    detector = load_model_from_checkpoint(ckpt)
    model = detector.module
    for row in rows:
        val = load_dataset(row["test_set"], "val", demo_root, 64, norm=detector.normalization)
        _, scores, labels = get_soft_scores_and_true_labels(val, model, progress=False)
        assert row["threshold"] == pytest.approx(equal_error_rate(labels, scores)[1])
        assert row["threshold_source"] == f"EER on {demo_root.name}/{row['test_set']}/val"
    assert rows[0]["threshold"] != rows[1]["threshold"]


def test_cross_eval_keeps_a_checkpoints_earlier_cells_when_a_later_test_set_fails(demo_root, tmp_path, monkeypatch):
    import shutil

    import cross_eval
    import train_main

    train_main.main(TRAIN + ["--data-root", str(demo_root), "--out-dir", str(tmp_path), "--checkpoint-dir", str(tmp_path)])
    root = tmp_path / "root"
    shutil.copytree(demo_root, root)
    real_load = cross_eval.load_dataset

    def fail_on_synthetic(dataset, split, *args, **kwargs):
        if dataset == "synthetic_dataset" and split == "test":
            raise OSError("the disk went away")
        return real_load(dataset, split, *args, **kwargs)

    monkeypatch.setattr(cross_eval, "load_dataset", fail_on_synthetic)
    with pytest.raises(OSError):
        cross_eval.main(["--checkpoints", str(tmp_path / "fakes_dataset_Bonus_Adam.pt"), "--data-roots", str(root),
                         "--out-dir", str(tmp_path / "o"), "--figures-dir", str(tmp_path / "f"), "--no-progress",
                         "--bootstrap", "10"])
    saved = json.loads((tmp_path / "o" / "cross_eval.json").read_text())
    assert [cell["test_set"] for cell in saved] == ["fakes_dataset"] and saved[0]["n"] == 8
