from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from PIL import Image

from cli import UserError
from conftest import make_split
from faces_dataset import CatalogDataset, DatasetError, FacesDataset, get_transforms, load_dataset


def test_length_labels_and_order(tmp_path):
    root = make_split(tmp_path, 2, 3)
    # files listed in sorted order, reals first, whatever the creation order
    Image.new("RGB", (8, 8)).save(root / "real" / "a_first.jpg")
    ds = FacesDataset(root)
    assert len(ds) == 6
    assert ds.labels == [0, 0, 0, 1, 1, 1]
    assert [ds.path_of(i).name for i in range(3)] == ["a_first.jpg", "real_0.png", "real_1.png"]
    image, label = ds[4]
    assert isinstance(image, Image.Image) and image.mode == "RGB" and label == 1
    assert ds[-1][1] == 1 and ds.path_of(-1).name == "fake_2.png"


def test_transform_gives_normalised_tensor(tmp_path):
    ds = FacesDataset(make_split(tmp_path), transform=get_transforms(train=False, image_size=16))
    image, label = ds[0]
    assert image.shape == (3, 16, 16) and image.dtype == torch.float32
    assert image.min() >= -1 and image.max() <= 1 and label == 0


def test_grayscale_and_rgba_are_converted(tmp_path):
    root = make_split(tmp_path, 0, 0)
    Image.new("L", (8, 8), 100).save(root / "real" / "g.png")
    Image.new("RGBA", (8, 8)).save(root / "fake" / "a.png")
    ds = FacesDataset(root)
    assert ds[0][0].mode == "RGB" and ds[1][0].mode == "RGB"


def test_other_extensions_are_ignored(tmp_path):
    root = make_split(tmp_path, 1, 1)
    (root / "real" / "notes.txt").write_text("not an image")
    (root / "fake" / ".DS_Store").write_bytes(b"\0")
    assert len(FacesDataset(root)) == 2


def test_missing_folder_names_the_path(tmp_path):
    (tmp_path / "real").mkdir()
    with pytest.raises(DatasetError, match=r"fake does not exist"):
        FacesDataset(tmp_path)


def test_empty_dataset_is_an_error(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "fake").mkdir()
    with pytest.raises(DatasetError, match="holds no images"):
        FacesDataset(tmp_path)


def test_corrupt_image_error_names_the_file(tmp_path):
    root = make_split(tmp_path, 1, 1)
    (root / "fake" / "fake_0.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    ds = FacesDataset(root)
    assert isinstance(ds[0][0], Image.Image)
    with pytest.raises(DatasetError, match=r"fake_0\.png.*corrupt"):
        ds[1]


def test_index_out_of_range(tmp_path):
    ds = FacesDataset(make_split(tmp_path, 1, 1))
    with pytest.raises(IndexError, match="out of range"):
        ds[2]


def test_load_dataset_errors_are_user_errors(tmp_path, demo_root):
    with pytest.raises(UserError, match="data root .* does not exist"):
        load_dataset("fakes_dataset", "train", tmp_path / "nowhere")
    with pytest.raises(UserError, match="unknown dataset"):
        load_dataset("faces", "train", demo_root)
    ds = load_dataset("fakes_dataset", "val", demo_root, image_size=32, limit=5)
    assert len(ds) == 5 and ds[0][0].shape == (3, 32, 32)


def test_catalog_dataset(tmp_path):
    root = make_split(tmp_path / "crops", 1, 2)
    csv = tmp_path / "catalog.csv"
    csv.write_text(
        "path,label,split\n"
        "crops/real/real_0.png,0,train\n"
        "crops/fake/fake_0.png,1,train\n"
        "crops/fake/fake_1.png,1,test\n"
        "crops/fake/fake_1.png,,train\n"
    )
    assert root.is_dir()
    ds = CatalogDataset(csv, split="train")
    assert len(ds) == 2 and ds.labels == [0, 1] and ds[1][1] == 1
    assert len(CatalogDataset(csv)) == 3
    with pytest.raises(DatasetError, match="no labelled rows in split 'val'"):
        CatalogDataset(csv, split="val")


def test_torchvision_decoder_gives_pillows_pixels_and_falls_back(tmp_path):
    from skimage import data as skdata

    from faces_dataset import load_image

    photo = Image.fromarray(skdata.astronaut())
    photo.save(tmp_path / "a.jpg", quality=85)
    photo.convert("CMYK").save(tmp_path / "cmyk.jpg")
    fast, slow = load_image(tmp_path / "a.jpg", "torchvision"), load_image(tmp_path / "a.jpg", "pil")
    assert isinstance(fast, torch.Tensor) and fast.dtype == torch.uint8 and fast.shape == (3, 512, 512)
    assert isinstance(slow, Image.Image)
    reference = torch.from_numpy(np.array(slow)).permute(2, 0, 1)
    assert (fast.int() - reference.int()).abs().max() <= 2  # both libjpeg(-turbo): within decoder tolerance
    transform = get_transforms(False, 96)  # the model's transform takes either, with the same resize
    assert (transform(fast) - transform(slow)).abs().max() <= 2 / 255 / 0.5 + 1e-6
    assert isinstance(load_image(tmp_path / "cmyk.jpg", "torchvision"), Image.Image)  # CMYK: Pillow converts it
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(DatasetError, match="bad.jpg.*corrupt"):
        load_image(tmp_path / "bad.jpg", "torchvision")


def test_a_catalog_row_that_leaves_the_catalogs_folder_is_refused(tmp_path):
    (tmp_path / "crops").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "crops" / "a.png")
    Image.new("RGB", (8, 8)).save(tmp_path / "outside.png")
    for bad in ("../outside.png", "sub/../../outside.png", "../crops/../../outside.png"):
        with open(tmp_path / "crops" / "catalog.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerows([["path", "label", "split"], ["a.png", "0", "train"], [bad, "1", "train"]])
        with pytest.raises(DatasetError) as err:
            CatalogDataset(tmp_path / "crops" / "catalog.csv")
        assert f"data row 2: the relative path {bad} leads outside the catalog's folder" in str(err.value)
        assert "delete" not in str(err.value)
    with open(tmp_path / "crops" / "catalog.csv", "w", newline="") as f:
        csv.writer(f).writerows([["path", "label", "split"], ["a.png", "0", "train"], ["./a.png", "1", "train"]])
    assert [p.name for p in CatalogDataset(tmp_path / "crops" / "catalog.csv").paths] == ["a.png", "a.png"]
    with open(tmp_path / "crops" / "catalog.csv", "w", newline="") as f:  # an absolute path names its file on purpose
        csv.writer(f).writerows([["path", "label", "split"], ["a.png", "0", "train"], [tmp_path / "outside.png", "1", "train"]])
    assert CatalogDataset(tmp_path / "crops" / "catalog.csv").paths[1] == tmp_path / "outside.png"
