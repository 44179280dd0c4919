"""The detector shipped in weights/: it loads, every file is the one its card names, it gives the scores its card
stored on scikit-image's photos, detect.py uses it without -cpp, and (where ../shared/data is present) its AUC on 64
test images of each set is the card's."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from common import SHIPPED_DETECTOR
from conftest import REPO
from detector import Scorer, file_sha256, load_model_from_checkpoint

CARD = json.loads((SHIPPED_DETECTOR.parent / "card.json").read_text())
SHARED = REPO.parent / "shared" / "data"


def test_every_shipped_file_is_the_one_its_card_names_and_fits_the_budget():
    folder = SHIPPED_DETECTOR.parent
    for entry in CARD["files"]:
        assert file_sha256(folder / entry["file"]) == entry["sha256"], entry["file"]
    assert sum((folder / e["file"]).stat().st_size for e in CARD["files"]) <= 25e6
    detector = load_model_from_checkpoint(SHIPPED_DETECTOR)  # the fused file checks its members' checksums too
    assert detector.threshold.to_entry() == CARD["threshold"] and detector.threshold.band is not None
    assert detector.framing.margin is not None and f"margin {detector.framing.margin:g} " in " ".join(CARD["what"])


def test_the_shipped_weights_reproduce_the_scores_their_card_stored():
    import detector_card

    detector = load_model_from_checkpoint(SHIPPED_DETECTOR)
    crops = detector_card.reference_crops()
    scores, _ = Scorer(detector, torch.device("cpu"), 8, bf16=False)(list(crops.values()))
    stored = CARD["reference_scores"]
    assert list(stored) == list(crops)
    np.testing.assert_allclose(scores, [stored[name] for name in crops], atol=1e-4)


def test_detect_without_a_checkpoint_uses_the_shipped_detector(tmp_path, capsys):
    from PIL import Image
    from skimage import data

    import detect

    photo = tmp_path / "astronaut.png"
    Image.fromarray(data.astronaut()).save(photo)
    (result,) = detect.main([str(photo), "--no-progress", "--fp32", "--out", str(tmp_path / "r.csv")])
    out = capsys.readouterr().out
    assert f"detector: the shipped one, {SHIPPED_DETECTOR.name}" in out
    assert f"threshold on P(fake): {CARD['threshold']['value']:.3f}" in out
    assert result.verdict in ("real", "uncertain", "fake") and len(result.faces) == 1
    header = (tmp_path / "r.csv").read_text().splitlines()[0].split(",")
    members = [m["file"] for m in json.loads(SHIPPED_DETECTOR.read_text())["members"]]
    assert [f"p_fake[{m}]" for m in members] == [h for h in header if h.startswith("p_fake[")]


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data is not here (the card's AUC is checked where it is)")
@pytest.mark.parametrize("dataset", ["fakes_dataset", "synthetic_dataset"])
def test_the_cards_auc_on_64_test_images_of_each_set(dataset):
    import detector_card

    from metrics import safe_auc

    detector = load_model_from_checkpoint(SHIPPED_DETECTOR)
    labels, scores, _ = detector_card.score_test(detector, SHARED, dataset, detector_card.SUBSET, 32, False, False)
    assert len(labels) == detector_card.SUBSET
    assert safe_auc(labels, scores) == pytest.approx(CARD["float32_auc_on_64_test_images"][dataset], abs=1e-4)


def test_the_card_is_the_one_its_tool_writes():
    import detector_card

    text = (SHIPPED_DETECTOR.parent / "README.md").read_text()
    assert text == detector_card.card_markdown(CARD) and Path(CARD["file"]).name == SHIPPED_DETECTOR.name
