"""Fused detectors: several detectors' scores put on one scale and combined into one P(fake).

Each member's logit of P(fake) is standardised on real faces (z = (logit - mean) / std, the mean and std of its
logits on the real faces it was fitted on), so "how unusual for a real face" means the same for every member; a rule
combines the z-scores into one logit f, and P(fake) = sigmoid(f):
  max       f = max_i z_i                       (any member's alarm counts)
  mean      f = mean_i z_i
  logistic  f = bias + sum_i w_i z_i            (weights fitted on labelled validation data, never on a test split)
A fused detector is one JSON file, <name>.fused.json, that names its member files (relative to it) by SHA-256, with
each member's scale, the rule, its threshold and how its faces are framed; detector.load_model_from_checkpoint loads it
like any checkpoint (a member whose bytes changed is refused). Its input is [0, 1] pixels at the largest member's size;
each member resizes (antialiased) and normalises them its own way. tools/fuse_detectors.py fits and writes one.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cli import UserError
from files import atomic_write_json
from normalization import PIXELS, Normalization, normalize

FUSED_SUFFIX = ".fused.json"
FORMAT = "fmd-fused-v1"
RULES = ("max", "mean", "logistic")


@dataclass(frozen=True)
class MemberScale:
    """A member's logit of P(fake) on real faces: z = (logit - mean) / std."""

    mean: float
    std: float

    def to_dict(self) -> dict:
        return {"mean": self.mean, "std": self.std}

    @classmethod
    def from_dict(cls, d: dict) -> MemberScale:
        return cls(float(d["mean"]), float(d["std"]))

    @classmethod
    def fit(cls, real_logits: np.ndarray) -> MemberScale:
        """Mean and standard deviation of a member's logits on real faces (a floor of 1e-6 keeps z finite)."""
        real_logits = np.asarray(real_logits, dtype=float)
        if real_logits.size < 2:
            raise ValueError("a member's scale needs the logits of at least two real faces")
        return cls(float(real_logits.mean()), max(float(real_logits.std()), 1e-6))


def logit_of_fake(logits: torch.Tensor) -> torch.Tensor:
    """log(P(fake) / P(real)) of 2-output logits: the difference of the two outputs, in float32."""
    logits = logits.float()
    return logits[:, 1] - logits[:, 0]


def combine(z: torch.Tensor, rule: dict) -> torch.Tensor:
    """The fused logit of each row of members' z-scores (B, M) under `rule` (see the module's docstring)."""
    kind = rule["kind"]
    if kind == "max":
        return z.max(dim=1).values
    if kind == "mean":
        return z.mean(dim=1)
    if kind == "logistic":  # a sum of products, not a matmul: autocast would run a matmul in bfloat16
        weights = torch.as_tensor(rule["weights"], dtype=z.dtype, device=z.device)
        return (z * weights).sum(dim=1) + float(rule["bias"])
    raise ValueError(f"unknown fusion rule {kind!r}; choose one of {', '.join(RULES)}")


class FusedModule(nn.Module):
    """Members behind one input: [0, 1] pixels at the largest member's size in, two logits (0, fused logit) out, so
    softmax column 1 is sigmoid(fused logit) = the fused P(fake)."""

    def __init__(self, members: Sequence[nn.Module], sizes: Sequence[int], norms: Sequence[Normalization],
                 scales: Sequence[MemberScale], rule: dict, names: Sequence[str]):
        super().__init__()
        if not members or not len(members) == len(sizes) == len(norms) == len(scales) == len(names):
            raise ValueError("a fused detector needs one size, normalisation, scale and name per member")
        if rule["kind"] == "logistic" and len(rule["weights"]) != len(members):
            raise ValueError(f"the logistic rule has {len(rule['weights'])} weights for {len(members)} members")
        self.members = nn.ModuleList(members)
        self.sizes, self.norms, self.scales, self.rule, self.names = list(sizes), list(norms), list(scales), rule, list(names)
        self.image_size = max(sizes)
        self.input_norm = PIXELS

    def member_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Each member's logit of P(fake) on [0, 1] pixels (B, M), each at its own size and normalisation."""
        out = []
        for member, size, norm in zip(self.members, self.sizes, self.norms):
            view = x if x.shape[-1] == size else F.interpolate(x, size=(size, size), mode="bilinear", antialias=True,
                                                                align_corners=False)
            out.append(logit_of_fake(member(normalize(view, norm))))
        return torch.stack(out, dim=1)

    def standardise(self, member_logits: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor([s.mean for s in self.scales], device=member_logits.device)
        std = torch.tensor([s.std for s in self.scales], device=member_logits.device)
        return (member_logits - mean) / std

    def scores(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(two logits of the fused detector (B, 2), each member's own P(fake) (B, M)) in one pass."""
        logits = self.member_logits(x)
        fused = combine(self.standardise(logits), self.rule)
        return torch.stack([torch.zeros_like(fused), fused], dim=1), torch.sigmoid(logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scores(x)[0]


def fit_logistic(z: np.ndarray, labels: np.ndarray, groups: np.ndarray) -> dict:
    """The logistic rule fitted on members' z-scores (n, M) of labelled validation faces, each group (a dataset)
    weighing as much as another whatever its size (sklearn's L2-regularised logistic regression, C = 1)."""
    from sklearn.linear_model import LogisticRegression

    groups = np.asarray(groups)
    weight = np.array([1.0 / np.sum(groups == g) for g in groups])
    model = LogisticRegression(C=1.0, max_iter=1000).fit(z, labels, sample_weight=weight * len(z) / weight.sum())
    return {"kind": "logistic", "weights": [float(w) for w in model.coef_[0]], "bias": float(model.intercept_[0])}


def fused_logits(z: np.ndarray, rule: dict) -> np.ndarray:
    """combine() on numpy z-scores (n, M), for fitting and measuring rules on precomputed scores."""
    return combine(torch.as_tensor(np.asarray(z, dtype=np.float32)), rule).numpy()


def read_fused_spec(path: Path) -> dict:
    """A fused detector's JSON, checked for what the loader needs; a UserError names what is wrong."""
    try:
        spec = json.loads(Path(path).read_text())
    except FileNotFoundError as err:
        raise UserError(f"fused detector {path} does not exist") from err
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserError(f"fused detector {path} is not readable JSON ({err})") from err
    try:
        if spec.get("format") != FORMAT:
            raise ValueError(f"its format is {spec.get('format')!r}, not {FORMAT}")
        members = spec["members"]
        if not isinstance(members, list) or not members:
            raise ValueError("it names no member")
        for entry in members:
            if not (isinstance(entry.get("file"), str) and isinstance(entry.get("sha256"), str)):
                raise ValueError("a member lacks its file or sha256")
            MemberScale.from_dict(entry["scale"])
        if spec["rule"].get("kind") not in RULES:
            raise ValueError(f"its rule {spec['rule'].get('kind')!r} is none of {', '.join(RULES)}")
        if any(Path(m["file"]).is_absolute() or ".." in Path(m["file"]).parts for m in members):
            raise ValueError("member files must be named relative to the fused file, inside its folder")
    except (AttributeError, KeyError, TypeError, ValueError) as err:
        raise UserError(f"fused detector {path} is malformed: {err}") from err
    return spec


def write_fused_spec(path: Path, spec: dict) -> None:
    """Write a fused detector's JSON atomically."""
    atomic_write_json(path, {"format": FORMAT, **spec})
