"""ImageNet weights that work offline (EfficientNet-Lite from registry packages), key mappings, per-model normalisation."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from analysis import load_analysis_inputs
from attacks import NormalizedModel, fgsm_attack, pgd_attack
from checkpoints import save_checkpoint
from faces_dataset import get_transforms, load_dataset
from models import MODEL_SPECS, build_model, efficientnet_lite_imagenet, get_nof_params
from normalization import IMAGENET_NORM, Normalization, denormalize, normalize, to_display
from pretrained import efficientnet_lite_key_map, efficientnet_lite_weight_file, read_state_dict
from xception import build_xception_backbone

CAT_CLASSES = range(281, 286)  # ImageNet: tabby, tiger cat, Persian, Siamese, Egyptian cat


@pytest.mark.parametrize("variant", ["lite0", "lite2"])
def test_registry_weights_are_the_real_imagenet_ones(variant):
    """The pretrained 1000-class model calls scikit-image's chelsea a cat, fed through the model's own transform."""
    from PIL import Image
    from skimage import data

    model = efficientnet_lite_imagenet(variant).eval()
    size = MODEL_SPECS[f"EfficientNet{variant.capitalize()}"].image_size
    x = get_transforms(False, size, IMAGENET_NORM)(Image.fromarray(data.chelsea()))[None]
    with torch.no_grad():
        probs = model(x).softmax(1)[0]
    assert int(probs.argmax()) in CAT_CLASSES
    assert float(probs[list(CAT_CLASSES)].sum()) > 0.8


def test_efficientnet_lite_key_map_covers_every_key_and_keeps_values():
    state = read_state_dict(efficientnet_lite_weight_file("lite0"), "EfficientNet-Lite0")
    model = efficientnet_lite_imagenet("lite0", pretrained=False)
    mapped = efficientnet_lite_key_map(state, [len(stage) for stage in model.blocks])
    assert set(mapped) == set(model.state_dict())  # one-to-one, nothing left over
    assert torch.equal(mapped["blocks.1.0.conv_pw.weight"], state["_blocks.1._expand_conv.weight"])  # stage 1 block 0
    assert torch.equal(mapped["blocks.0.0.conv_pw.weight"], state["_blocks.0._project_conv.weight"])  # separable block
    assert torch.equal(mapped["blocks.6.0.conv_pwl.weight"], state["_blocks.15._project_conv.weight"])  # last block
    assert torch.equal(mapped["classifier.bias"], state["_fc.bias"])


def test_efficientnet_zoo_models_have_two_outputs_imagenet_norm_and_freeze():
    model = build_model("EfficientNetLite0", pretrained=False, freeze_backbone=True)
    assert model.classifier.out_features == 2 and MODEL_SPECS["EfficientNetLite0"].norm == IMAGENET_NORM
    trainable = {n.split(".")[0] + ("." + n.split(".")[1] if n.startswith("blocks") else "")
                 for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"blocks.5", "blocks.6", "conv_head", "bn2", "classifier"}
    assert get_nof_params(build_model("EfficientNetLite0", pretrained=False)) == 3_373_570
    with torch.no_grad():
        assert model.eval()(torch.randn(1, 3, 96, 96)).shape == (1, 2)


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_timm_legacy_xception_weights_load_into_ours(tmp_path, suffix):
    """A randomly initialised timm legacy_xception, saved as timm would, gives the same outputs once loaded into ours."""
    import timm

    torch.manual_seed(0)
    reference = timm.create_model("legacy_xception", pretrained=False).eval()
    for m in reference.modules():  # non-trivial BatchNorm statistics, so a mis-mapped buffer would show
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    path = tmp_path / f"legacy_xception{suffix}"
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, str(path))
    else:
        torch.save(reference.state_dict(), path)
    ours = build_xception_backbone(pretrained=True, weights=path).eval()
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        assert torch.allclose(ours(x), reference(x), atol=1e-5)


class ReluSum(torch.nn.Module):
    def forward(self, x):
        s = torch.relu(x).sum(dim=(1, 2, 3))
        return torch.stack([-s, s], dim=1)


def test_normalisation_reaches_the_attacks():
    """Attacks undo and redo the normalisation they are given: NormalizedModel(x01) = model((x01 - mean) / std)."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 2))
    x = torch.rand(4, 3, 8, 8)
    mean = torch.tensor(IMAGENET_NORM.mean).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_NORM.std).view(1, 3, 1, 1)
    assert torch.allclose(NormalizedModel(model, IMAGENET_NORM)(x), model((x - mean) / std), atol=1e-6)
    assert not torch.allclose(NormalizedModel(model, IMAGENET_NORM)(x), model((x - 0.5) / 0.5), atol=1e-3)
    y = torch.tensor([0, 1, 0, 1])
    # FGSM moves every pixel by exactly eps (unless clipped) in [0,1] units, whatever the model's std
    adv = fgsm_attack(model, x, y, eps=4 / 255, norm=IMAGENET_NORM)
    moved = (adv - x).abs()
    assert torch.allclose(moved[(adv > 0) & (adv < 1)], torch.tensor(4 / 255), atol=1e-6)
    # a ReLU model's gradient exists only where the normalised pixel is positive, i.e. above the model's own mean:
    # FGSM with the model's normalisation moves the blue pixels between 0.406 (ImageNet mean) and 0.5; with 0.5 it cannot
    relu_model = ReluSum()
    blue = torch.full((1, 3, 4, 4), 0.45)
    fake = torch.tensor([1])
    assert torch.all((fgsm_attack(relu_model, blue, fake, eps=0.01, norm=IMAGENET_NORM) - blue)[:, 2] != 0)
    assert torch.all((fgsm_attack(relu_model, blue, fake, eps=0.01, norm=Normalization()) - blue)[:, 2] == 0)
    assert (pgd_attack(model, x, y, eps=4 / 255, steps=3, norm=IMAGENET_NORM) - x).abs().max() <= 4 / 255 + 1e-6


def test_normalisation_reaches_displays_and_datasets(demo_root, tmp_path):
    x = torch.rand(3, 16, 16)
    shown = to_display(normalize(x[None], IMAGENET_NORM)[0], IMAGENET_NORM)
    assert np.allclose(shown, x.permute(1, 2, 0).numpy(), atol=1e-6)
    assert torch.allclose(denormalize(normalize(x[None], IMAGENET_NORM), IMAGENET_NORM), x[None], atol=1e-6)
    # a checkpoint's normalisation reaches the test split an analysis script loads
    model = build_model("SimpleNet", image_size=64)
    custom = Normalization((0.2, 0.3, 0.4), (0.5, 0.6, 0.7))
    ckpt = tmp_path / "c.pt"
    save_checkpoint({"model": model.state_dict(), "model_name": "SimpleNet", "model_kwargs": {"image_size": 64},
                     "normalization": custom.to_dict()}, ckpt)

    inputs = load_analysis_inputs(ckpt, dataset="fakes_dataset", data_root=demo_root, device="cpu", seed=0, limit=4)
    dataset = inputs.dataset
    # the model's name comes from the checkpoint when -m is not given
    assert inputs.detector.normalization == custom and inputs.detector.name == "SimpleNet"
    raw = load_dataset("fakes_dataset", "test", demo_root, 64, 4, norm=Normalization((0, 0, 0), (1, 1, 1)))
    image, _ = dataset[0]
    expected = (raw[0][0] - torch.tensor(custom.mean).view(3, 1, 1)) / torch.tensor(custom.std).view(3, 1, 1)
    assert torch.allclose(image, expected, atol=1e-5)
