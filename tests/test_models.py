from __future__ import annotations

import pytest
import torch

from bonus_model import BonusNet, my_bonus_model
from cli import UserError
from detector import load_model_from_checkpoint
from models import (
    SimpleNet,
    build_model,
    cam_target_layer,
    get_resnet50_model,
    get_xception_based_model,
    mlp_head_extra_params,
)
from utils import get_nof_params
from xception import XCEPTION_FILES, Xception, build_xception_backbone, load_xception_state_dict


def test_parameter_counts():
    assert get_nof_params(SimpleNet()) == 16_901_762
    assert get_nof_params(build_xception_backbone(pretrained=False)) == 22_855_952
    assert get_nof_params(get_xception_based_model(pretrained=False)) == 23_128_786
    assert mlp_head_extra_params() == 272_834
    assert get_nof_params(BonusNet()) < 50_000


def test_simplenet_layers_and_shapes():
    net = SimpleNet()
    assert net.fc1.in_features == 24 * 26 * 26
    assert [m.kernel_size for m in (net.conv1, net.conv2, net.conv3)] == [(7, 7)] * 3
    assert [(m.in_features, m.out_features) for m in (net.fc1, net.fc2, net.fc3)] == [(16224, 1024), (1024, 256), (256, 2)]
    out = net(torch.randn(2, 3, 256, 256))
    assert out.shape == (2, 2) and torch.isfinite(out).all()
    assert SimpleNet(image_size=64)(torch.randn(1, 3, 64, 64)).shape == (1, 2)


@pytest.mark.parametrize("size", [256, 299])
def test_xception_based_forward_shapes(size):
    model = get_xception_based_model(pretrained=False).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, size, size)).shape == (1, 2)
        assert model.forward_features(torch.randn(1, 3, size, size)).shape[1] == 2048


def test_xception_state_dict_round_trip_strict(tmp_path):
    model = Xception()
    path = tmp_path / XCEPTION_FILES[0]
    torch.save(model.state_dict(), path)
    again = Xception()
    again.load_state_dict(load_xception_state_dict(path), strict=True)
    x = torch.randn(1, 3, 96, 96)
    model.eval(), again.eval()
    assert torch.equal(model(x), again(x))
    keys = set(model.state_dict())
    assert {"conv1.weight", "block1.rep.0.conv1.weight", "block1.skipbn.running_mean", "block12.rep.4.pointwise.weight", "block2.rep.1.conv1.weight",
            "conv4.pointwise.weight", "bn4.weight", "fc.weight"} <= keys


def test_legacy_checkpoint_with_2d_pointwise_weights_loads(tmp_path):
    state = Xception().state_dict()
    legacy = {k: v[:, :, 0, 0] if "pointwise" in k else v for k, v in state.items()}
    path = tmp_path / XCEPTION_FILES[1]
    torch.save(legacy, path)
    Xception().load_state_dict(load_xception_state_dict(path), strict=True)


def test_weight_lookup_order_and_clear_error(tmp_path, monkeypatch):
    with pytest.raises(UserError, match=r"pretrained Xception weights not found: put xception-43020ad28\.pth.*--no-pretrained"):
        build_xception_backbone(pretrained=True)
    # the hub cache is searched ...
    hub = tmp_path / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    reference = Xception()
    torch.nn.init.constant_(reference.fc.bias, 1.0)
    torch.save(reference.state_dict(), hub / XCEPTION_FILES[0])
    assert torch.all(build_xception_backbone(pretrained=True).fc.bias == 1.0)
    # ... after $FMD_WEIGHTS_DIR, which wins
    mine = tmp_path / "mine"
    mine.mkdir()
    torch.nn.init.constant_(reference.fc.bias, 2.0)
    torch.save(reference.state_dict(), mine / XCEPTION_FILES[0])
    monkeypatch.setenv("FMD_WEIGHTS_DIR", str(mine))
    assert torch.all(build_xception_backbone(pretrained=True).fc.bias == 2.0)
    # an explicit file wins over both; a missing explicit file is an error
    torch.nn.init.constant_(reference.fc.bias, 3.0)
    torch.save(reference.state_dict(), tmp_path / "explicit.pth")
    assert torch.all(build_xception_backbone(weights=tmp_path / "explicit.pth").fc.bias == 3.0)
    with pytest.raises(UserError, match="does not exist"):
        build_xception_backbone(weights=tmp_path / "missing.pth")


def test_resnet50_missing_weights_and_freeze():
    with pytest.raises(UserError, match="pretrained ResNet50 weights not found"):
        get_resnet50_model(pretrained=True)
    model = get_resnet50_model(pretrained=False, freeze_backbone=True)
    trainable = {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"layer4", "fc"} and model.fc.out_features == 2


def test_xception_freeze_backbone_keeps_exit_flow_and_head():
    model = get_xception_based_model(pretrained=False, freeze_backbone=True)
    trainable = {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"block12", "conv3", "bn3", "conv4", "bn4", "fc"}


def test_cam_target_layers():
    simple = SimpleNet(image_size=64)
    assert cam_target_layer(simple, "SimpleNet") is simple.conv3
    xcep = build_model("XceptionBased", pretrained=False)
    assert cam_target_layer(xcep, "XceptionBased") is xcep.conv4
    lite = build_model("EfficientNetLite0", pretrained=False)
    assert cam_target_layer(lite, "EfficientNetLite0") is lite.bn2
    bonus = BonusNet()
    assert cam_target_layer(bonus, "Bonus") is bonus.blocks[-1]


def test_load_model_from_checkpoint(tmp_path):
    model = build_model("SimpleNet", image_size=64).eval()
    ckpt = tmp_path / "c.pt"
    torch.save({"model": model.state_dict(), "model_name": "SimpleNet", "model_kwargs": {"image_size": 64}}, ckpt)
    loaded = load_model_from_checkpoint(ckpt, expected_model="SimpleNet").module
    x = torch.randn(2, 3, 64, 64)
    assert torch.equal(loaded(x), model(x)) and not loaded.training
    with pytest.raises(UserError, match="holds a SimpleNet model, not XceptionBased"):
        load_model_from_checkpoint(ckpt, expected_model="XceptionBased")
    with pytest.raises(UserError, match="does not exist"):
        load_model_from_checkpoint(tmp_path / "none.pt")
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="cannot read checkpoint"):
        load_model_from_checkpoint(tmp_path / "bad.pt")
    # an assignment-style bare checkpoint of the wrong architecture
    torch.save({"model": BonusNet().state_dict()}, tmp_path / "bare.pt")
    with pytest.raises(UserError, match="does not fit the SimpleNet architecture"):
        load_model_from_checkpoint(tmp_path / "bare.pt", expected_model="SimpleNet")


def test_my_bonus_model_missing_checkpoint(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        my_bonus_model(tmp_path / "bonus.pt")
