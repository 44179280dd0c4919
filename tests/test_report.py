"""tools/make_report.py: every number on the page is the one in the JSON it names, every image decodes to the figure it
names, a step that did not run is marked missing; the PDF is printed when Chromium is there."""
from __future__ import annotations

import base64
import html.parser
import io
import json
import os
import shutil
from pathlib import Path

import pytest
from PIL import Image

import make_report
from make_report import build_report, format_value, lookup


class ReportParser(html.parser.HTMLParser):
    """Collects the report's images, tagged numbers (with their text) and missing marks."""

    def __init__(self) -> None:
        super().__init__()
        self.images: list[dict] = []
        self.numbers: list[dict] = []
        self.missing: list[str] = []
        self._number: dict | None = None

    def handle_starttag(self, tag: str, attrs: list) -> None:
        a = dict(attrs)
        if tag == "img":
            self.images.append(a)
        elif tag == "span" and a.get("class") == "num":
            self._number = {**a, "text": ""}
        elif "data-missing" in a:
            self.missing.append(a["data-missing"])

    def handle_data(self, data: str) -> None:
        if self._number is not None:
            self._number["text"] += data

    def handle_endtag(self, tag: str) -> None:
        if tag == "span" and self._number is not None:
            self.numbers.append(self._number)
            self._number = None


def parse(page: str) -> ReportParser:
    parser = ReportParser()
    parser.feed(page)
    return parser


def check_page(page: str, report_dir: Path) -> ReportParser:
    """The checks any report must pass: images decode to their source files, numbers equal their JSON values."""
    parsed = parse(page)
    for img in parsed.images:
        assert img["src"].startswith("data:image/png;base64,")
        png = base64.b64decode(img["src"].split(",", 1)[1])
        Image.open(io.BytesIO(png)).verify()  # decodes
        source = report_dir / img["data-src"]
        if source.is_file():  # a figure from the figures folder (the report's own plot points at a folder)
            assert png == source.read_bytes(), img["data-src"]
    for number in parsed.numbers:
        if "data-src" not in number:
            continue
        data = json.loads((report_dir / number["data-src"]).read_text())
        assert number["text"] == format_value(lookup(data, number["data-key"]), number["data-fmt"]), number
    return parsed


def png_bytes(color: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 6), color).save(buffer, format="PNG")
    return buffer.getvalue()


def record(model: str, dataset: str, **extra) -> dict:
    """A training log record as train_main.py writes it (the keys the report reads)."""
    return {"model": model, "dataset": dataset, "val_acc": [60.0, 70.0, 65.0], "best_epoch": 2, "best_val_acc": 70.0,
            "test_acc_at_best_val": 68.25, "test_auc_at_best_val": 0.71234, "select_by": "acc", "run_id": "abc",
            "config": {"data_root": "/nowhere", "n_params": 1234,
                       "class_counts": {"train": [4320, 6480], "val": [840, 1260], "test": [840, 1260]}}, **extra}


@pytest.fixture()
def work(tmp_path) -> Path:
    """A work dir with SimpleNet's fakes_dataset log, metrics and curves, the Bonus and XceptionBased logs, and
    nothing else."""
    out, fig = tmp_path / "out", tmp_path / "figures"
    out.mkdir()
    fig.mkdir()
    older = record("SimpleNet", "fakes_dataset")
    older["test_acc_at_best_val"] = 1.0  # an earlier run of the same name: the report shows the last one
    (out / "fakes_dataset_SimpleNet_Adam.json").write_text(json.dumps([older, record("SimpleNet", "fakes_dataset")]))
    bonus = record("Bonus", "fakes_dataset")
    bonus["config"]["n_params"] = 27826
    (out / "fakes_dataset_Bonus_Adam.json").write_text(json.dumps([bonus]))
    (out / "synthetic_dataset_XceptionBased_Adam.json").write_text(json.dumps([record("XceptionBased", "synthetic_dataset")]))
    (fig / "fakes_dataset_SimpleNet_metrics.json").write_text(json.dumps({
        "auc": 0.65812, "eer": 0.3, "average_precision": 0.7, "auc_group_a_real_score": 0.34188, "accuracy": 0.6254,
        "accuracy_at_val_threshold": 0.6, "val_threshold": 0.5821, "ece": 0.023, "ci95": {"auc": [0.63, 0.68]}}))
    (fig / "fakes_dataset_Bonus_metrics.json").write_text(json.dumps({"auc": 0.73, "eer": 0.3}))
    (fig / "fakes_dataset_SimpleNet_losses_plot.png").write_bytes(png_bytes((200, 10, 10)))
    (fig / "datasets_samples.png").write_bytes(png_bytes((10, 200, 10)))
    return tmp_path


def test_numbers_come_from_the_json_they_name_and_images_decode(work):
    page, gaps = build_report(work / "out", work / "figures", work / "out")
    parsed = check_page(page, work / "out")
    texts = {(n.get("data-src"), n.get("data-key")): n["text"] for n in parsed.numbers}
    log = "fakes_dataset_SimpleNet_Adam.json"
    # the last record of the log, not the first; percent formats of fractions; the test split's counts
    assert texts[(log, "-1/test_acc_at_best_val")] == "68.25"
    assert texts[("../figures/fakes_dataset_SimpleNet_metrics.json", "accuracy")] == "62.54"
    assert texts[("../figures/fakes_dataset_SimpleNet_metrics.json", "auc")] == "0.6581"
    assert texts[(log, "-1/config/class_counts/test/1")] == "1260"
    assert texts[("fakes_dataset_Bonus_Adam.json", "-1/config/n_params")] == "27,826"
    # the fake-to-real proportion of the test split: 1260 / 840
    assert "1.50 fakes per real image (60.0 % fakes)" in page
    # the figures that exist are embedded, byte for byte
    sources = {img["data-src"] for img in parsed.images}
    assert {"../figures/datasets_samples.png", "../figures/fakes_dataset_SimpleNet_losses_plot.png"} <= sources
    # what did not run is marked, once per item, and counted at the top
    assert "figure fakes_dataset_SimpleNet_roc_curve.png" in parsed.missing
    assert "training log synthetic_dataset_SimpleNet_Adam.json" in parsed.missing
    assert "figure fakes_dataset_SimpleNet_losses_plot.png" not in parsed.missing
    assert len(gaps) == len(set(gaps))
    assert f"{len(gaps)} item(s) missing" in page


def test_parameter_counts_are_computed_from_the_architectures(work):
    page, _ = build_report(work / "out", work / "figures", work / "out")
    computed = {n["data-computed"]: n["text"] for n in parse(page).numbers if "data-computed" in n}
    # Xception as published: 22,855,952 parameters with its 1000-class fc on 2048 features; the assignment's MLP
    # head (2048-1000-256-64-2) holds 2,322,834, 272,834 more than the fc it replaces
    assert computed["models.FEATURE_DIM"] == "2,048"
    assert computed["get_nof_params(build_xception_backbone(pretrained=False))"] == "22,855,952"
    assert computed["models.mlp_head_extra_params()"] == "272,834"
    assert computed["get_nof_params(get_xception_based_model(pretrained=False))"] == "23,128,786"


def test_auc_vs_parameters_plot_holds_every_fakes_dataset_run(work):
    points = make_report.auc_vs_params(make_report.Run(work / "out", work / "figures", work / "out"))
    assert [(label, r["config"]["n_params"], r["test_auc_at_best_val"]) for label, _, r in points] == [
        ("Bonus", 27826, 0.71234), ("SimpleNet", 1234, 0.71234)]


def test_format_and_lookup_definitions():
    assert format_value(0.8625, ".1%") == "86.2"  # a fraction shown as percent (round half to even on 86.25)
    assert format_value(0.86251, ".1%") == "86.3"
    assert format_value(1234567, ",d") == "1,234,567"
    assert lookup([{"a": [1, 2]}, {"a": [3, 4]}], "-1/a/0") == 3
    assert lookup({"x": {"0": "key, not index"}}, "x/0") == "key, not index"


def test_a_corrupt_log_is_marked_missing_not_a_crash(work):
    (work / "out" / "fakes_dataset_SimpleNet_Adam.json").write_text('[{"model": "SimpleNet", "val_acc": [')
    page, gaps = build_report(work / "out", work / "figures", work / "out")
    assert "training log fakes_dataset_SimpleNet_Adam.json" in parse(page).missing
    assert len(gaps) == len(set(gaps))  # two chapters read that log: it is counted once
    check_page(page, work / "out")


def test_cli_writes_the_report_and_refuses_a_missing_browser_before_any_work(work, monkeypatch, capsys):
    path = make_report.main(["--out-dir", str(work / "out"), "--figures-dir", str(work / "figures")])
    assert path == work / "out" / "report.html" and path.read_text().startswith("<!DOCTYPE html>")
    path.unlink()
    monkeypatch.setenv("CHROMIUM", str(work / "no-such-browser"))
    with pytest.raises(SystemExit) as stop:
        make_report.main(["--out-dir", str(work / "out"), "--figures-dir", str(work / "figures"), "--pdf"])
    assert stop.value.code == 2 and "headless Chromium" in capsys.readouterr().err
    assert not path.exists()
    with pytest.raises(SystemExit) as stop:
        make_report.main(["--out-dir", str(work / "nothing")])
    assert stop.value.code == 2


@pytest.mark.skipif(not any(shutil.which(n) for n in make_report.CHROMIUM_NAMES), reason="Chromium is not installed")
def test_pdf_is_printed_by_chromium(work, monkeypatch):
    monkeypatch.delenv("CHROMIUM", raising=False)
    make_report.main(["--out-dir", str(work / "out"), "--figures-dir", str(work / "figures"), "--pdf"])
    pdf = work / "out" / "report.pdf"
    assert pdf.read_bytes().startswith(b"%PDF") and pdf.stat().st_size > 10_000
    assert not [p for p in os.listdir(work / "out") if p.endswith(".partial")]


def test_detect_table_reads_the_csv_as_csv(work):
    (work / "out" / "detect_fakes_dataset.csv").write_text('file,verdict,p_fake\n"beach, day 2.png",fake,0.91\n')
    page, _ = build_report(work / "out", work / "figures", work / "out")
    assert "<td>beach, day 2.png</td><td>fake</td><td>0.91</td>" in page  # a comma inside a quoted name is no column


def test_a_file_of_the_users_is_never_written_over(work, tmp_path):
    notes = tmp_path / "notes.html"
    notes.write_text("my notes")
    with pytest.raises(SystemExit) as stop:
        make_report.main(["--out-dir", str(work / "out"), "--figures-dir", str(work / "figures"), "--output", str(notes)])
    assert stop.value.code == 2 and notes.read_text() == "my notes"
    mine = tmp_path / "mine.html"
    (tmp_path / "mine.pdf").write_bytes(b"my pdf")
    with pytest.raises(SystemExit):
        make_report.main(["--out-dir", str(work / "out"), "--figures-dir", str(work / "figures"), "--output", str(mine),
                          "--pdf"])
    assert (tmp_path / "mine.pdf").read_bytes() == b"my pdf" and not mine.exists()
    # its own report it writes again
    for _ in range(2):
        make_report.main(["--out-dir", str(work / "out"), "--figures-dir", str(work / "figures"), "--output", str(mine)])
    assert make_report.GENERATOR in mine.read_text()


def test_the_cross_dataset_chapter_shows_cross_evals_accuracies_as_percentages(tmp_path):
    """A cross_eval.json as tools/cross_eval.py writes it (accuracy a fraction): the chapter shows 87.5, not 0.875 (the
    value is checked against the format the chapter means, computed here, not against the one the page declares);
    an empty file is a missing step."""
    out, figures = tmp_path / "out", tmp_path / "figures"
    out.mkdir()
    figures.mkdir()
    cells = [{"checkpoint": "a", "test_set": "fakes_dataset", "n": 8, "auc": 0.93751, "accuracy": 0.875},
             {"checkpoint": "a", "test_set": "synthetic_dataset", "n": 8, "auc": None, "accuracy": 0.5}]
    (out / "cross_eval.json").write_text(json.dumps(cells))
    page, _ = build_report(out, figures, out)
    shown = {n["data-key"]: n["text"] for n in parse(page).numbers if n.get("data-src") == "cross_eval.json"}
    assert shown == {"0/n": "8", "0/auc": "0.9375", "0/accuracy": f"{100 * 0.875:.1f}"}
    (out / "cross_eval.json").write_text("[]")
    page, _ = build_report(out, figures, out)
    assert any("cross_eval" in item for item in parse(page).missing)
