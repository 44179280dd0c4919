"""A loaded detector: the network with every fact a script needs to use it, read from one file by the one loader.

A checkpoint of train_main.py, the assignment's bare {'model': state_dict}, MesoNet's Keras .h5 and a fused detector
(fusion.py: a JSON file naming its member files by checksum) all load through load_model_from_checkpoint into a
Detector: the module (eval mode, on the device), its name, input size and normalisation, how its training faces were
framed (and how that is known), and its decision threshold (and how it was chosen). Nothing is patched onto the module;
a fact the file does not hold is None or says so in its `source`, never a silent default.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from checkpoints import checkpoint_model_name, load_weights, read_checkpoint
from cli import UserError, resolve_input_path
from common import IMAGE_SIZE
from face_detection import Framing
from fusion import FUSED_SUFFIX, FusedModule, MemberScale, read_fused_spec
from mesonet import is_keras_file, keras_checkpoint
from metrics import Threshold
from models import build_untrained, p_fake
from normalization import Normalization

UNKNOWN = "unknown"


@dataclass(frozen=True)
class Detector:
    """A network ready to score faces, with its facts. `module` maps a batch normalised by `normalization` at
    `image_size` px to two logits (column 1 = fake)."""

    module: nn.Module
    name: str  # the registry's model name, or "Fused" for a fused detector
    image_size: int
    normalization: Normalization
    framing: Framing
    threshold: Threshold
    path: Path | None = None  # the file it was loaded from
    sha256: str | None = None  # of that file
    record: dict | None = None  # the training run's record (train_main.py checkpoints)

    @property
    def is_fused(self) -> bool:
        return isinstance(self.module, FusedModule)


class Scorer:
    """A detector applied to face crops in batches: P(fake) per crop at its own size and normalisation, plus each
    member's own P(fake) for a fused detector. bf16=True scores under bfloat16 autocast on the CPU (float32 scores
    out; tools/bench_detect.py measures what it costs in AUC and gains in speed)."""

    def __init__(self, detector: Detector, device: torch.device, batch_size: int, bf16: bool = False):
        from faces_dataset import get_transforms  # the dataset module reads images; the loader itself never needs it

        self.detector, self.device, self.batch_size = detector, device, batch_size
        self.transform = get_transforms(False, detector.image_size, detector.normalization)
        self.autocast = bf16 and device.type == "cpu"

    @property
    def member_names(self) -> list[str]:
        """The members' names (their file names) of a fused detector; empty for a single one."""
        return list(self.detector.module.names) if self.detector.is_fused else []

    @torch.no_grad()
    def __call__(self, crops: list) -> tuple[np.ndarray, np.ndarray]:
        """(P(fake) per crop (n,), each member's P(fake) per crop (n, members); (n, 0) for a single detector)."""
        module = self.detector.module.eval()
        fused, members = [], []
        for start in range(0, len(crops), self.batch_size):
            batch = torch.stack([self.transform(c) for c in crops[start:start + self.batch_size]]).to(self.device)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.autocast):
                if self.detector.is_fused:
                    logits, member_p = module.scores(batch)
                else:
                    logits, member_p = module(batch), torch.zeros(len(batch), 0)
            fused.append(p_fake(logits).cpu())
            members.append(member_p.float().cpu())
        if not fused:
            return np.zeros(0), np.zeros((0, len(self.member_names)))
        return torch.cat(fused).numpy(), torch.cat(members).numpy()


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes (how a fused detector names its members, and the model card its files)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def checkpoint_image_size(ckpt: dict) -> int:
    """The input size a checkpoint was trained at (the assignment's 256 for bare state dicts)."""
    return int(ckpt.get("model_kwargs", {}).get("image_size", IMAGE_SIZE))


def load_weights_into(model: nn.Module, path: str | Path, expected_model: str) -> nn.Module:
    """The weights of a checkpoint of `expected_model` loaded into `model` as it is (train_main.py --init-from)."""
    ckpt = keras_checkpoint(path) if is_keras_file(path) else read_checkpoint(path)
    return load_weights(model, ckpt, path, checkpoint_model_name(ckpt, path, expected_model))


def load_model_from_checkpoint(path: str | Path, device: torch.device | str = "cpu", expected_model: str | None = None,
                               advice: str | None = None) -> Detector:
    """The one loader: the Detector held by a checkpoint of train_main.py (or a bare {'model': state_dict} of the
    assignment, MesoNet's Keras .h5, or a fused detector's .fused.json), in eval mode on `device`.

    Raises a UserError when the file is missing, unreadable, unsafe, a fused member's checksum changed, or it holds
    another architecture than `expected_model` (`advice` replaces the "pass -m" hint); a WeightsMismatch when its
    weights do not fit.
    """
    path = resolve_input_path(path)
    if str(path).endswith(FUSED_SUFFIX):
        return _load_fused(path, device, expected_model)
    ckpt = keras_checkpoint(path) if is_keras_file(path) else read_checkpoint(path, device)
    name = checkpoint_model_name(ckpt, path, expected_model, advice)
    image_size = checkpoint_image_size(ckpt)
    model = load_weights(build_untrained(name, image_size), ckpt, path, name)
    return Detector(
        module=model.to(device).eval(), name=name, image_size=image_size,
        normalization=Normalization.from_dict(ckpt.get("normalization")), framing=Framing.from_entry(ckpt.get("framing")),
        threshold=Threshold.from_entry(ckpt.get("threshold")), path=Path(path),
        sha256=file_sha256(ckpt.get("source", path)), record=ckpt.get("record"),
    )


def _load_fused(path: Path, device: torch.device | str, expected_model: str | None) -> Detector:
    """A fused detector: each member loaded by this loader after its file's checksum is checked against the spec."""
    if expected_model is not None:
        raise UserError(f"{path} is a fused detector of several models, not one {expected_model}; leave out -m")
    spec = read_fused_spec(path)
    members, scales = [], []
    for entry in spec["members"]:
        member_path = (path.parent / entry["file"]).resolve()
        if not member_path.is_file():
            raise UserError(f"fused detector {path}: its member {entry['file']} is missing (looked for {member_path})")
        found = file_sha256(member_path)
        if found != entry["sha256"]:
            raise UserError(f"fused detector {path}: its member {entry['file']} has changed (SHA-256 {found[:12]}..., "
                            f"the detector was fitted to {entry['sha256'][:12]}...); refit it with tools/fuse_detectors.py")
        member = load_model_from_checkpoint(member_path, device)
        if member.is_fused:
            raise UserError(f"fused detector {path}: member {entry['file']} is itself fused; name its members instead")
        members.append(member)
        scales.append(MemberScale.from_dict(entry["scale"]))
    module = FusedModule([m.module for m in members], [m.image_size for m in members],
                         [m.normalization for m in members], scales, spec["rule"], [m.path.name for m in members])
    framing = spec.get("framing") or {}
    return Detector(
        module=module.to(device).eval(), name="Fused", image_size=module.image_size, normalization=module.input_norm,
        framing=Framing(framing.get("margin"), framing.get("source", UNKNOWN)) if framing.get("margin") is not None
        else Framing(None, "the fused detector does not say how its faces are framed"),
        threshold=Threshold.from_entry(spec.get("threshold")), path=path, sha256=file_sha256(path),
        record={"fused": json.loads(json.dumps(spec))},
    )
