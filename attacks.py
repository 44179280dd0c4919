"""What robustness_analysis.py perturbs a detector's inputs with: white-box attacks (FGSM, PGD (L-inf) and
Carlini-Wagner (L2)) and everyday distortions (JPEG, blur, noise, down-scaling: Corruption, at the end).

Images, budgets and results are in pixel units on the [0, 1] scale (eps = 8/255 means 8 grey levels), although the
detectors see normalised inputs: each attack wraps the model with the model's own normalisation (NormalizedModel, given
as `norm`: the assignment's 0.5 unless said otherwise, ImageNet mean/std for ResNet50 and EfficientNet-Lite), so the budget
means what a user thinks it means whatever the model. Untargeted attacks push an image away from its true label; targeted ones
(targeted=True, labels = the wanted class, e.g. 0 "real" for a fake face) pull it towards that label.
The model's train/eval mode and its parameters' requires_grad and .grad are left as they were.

    from attacks import pgd_attack
    x_adv = pgd_attack(model, x01, labels, eps=8/255, alpha=2/255, steps=10)
"""
from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageFilter
from torch import nn

from cli import UserError
from common import DEFAULT_ALPHA, DEFAULT_EPS, DEFAULT_PGD_STEPS
from normalization import ASSIGNMENT_NORM, Normalization, denormalize, normalize
from utils import frozen_eval

ATTACKS = ("fgsm", "pgd", "cw")


class NormalizedModel(nn.Module):
    """model(normalize(x, norm)): lets attacks work on [0, 1] pixels."""

    def __init__(self, model: nn.Module, norm: Normalization = ASSIGNMENT_NORM):
        super().__init__()
        self.model = model
        self.norm = norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(normalize(x, self.norm))


def _input_gradient(net: nn.Module, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Gradient of the summed cross-entropy w.r.t. the input (never touches parameter .grad)."""
    x = x.detach().requires_grad_(True)
    loss = F.cross_entropy(net(x), labels, reduction="sum")
    (grad,) = torch.autograd.grad(loss, x)
    return grad


def fgsm_attack(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, eps: float = DEFAULT_EPS, targeted: bool = False,
    norm: Normalization = ASSIGNMENT_NORM,
) -> torch.Tensor:
    """Fast Gradient Sign Method (Goodfellow et al., 2014, arXiv:1412.6572): one step of size eps along sign(grad).

    images: (B,3,H,W) in [0,1]; labels: (B,) true labels (or target labels when targeted). Returns (B,3,H,W) in [0,1].
    """
    net = NormalizedModel(model, norm)
    with frozen_eval(model):
        grad = _input_gradient(net, images, labels)
    direction = -grad.sign() if targeted else grad.sign()
    return (images + eps * direction).clamp(0, 1).detach()


def pgd_attack(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, eps: float = DEFAULT_EPS, alpha: float = DEFAULT_ALPHA,
    steps: int = DEFAULT_PGD_STEPS, random_start: bool = True, targeted: bool = False, norm: Normalization = ASSIGNMENT_NORM,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Projected Gradient Descent, L-inf (Madry et al., 2017, arXiv:1706.06083).

    Starts at a uniform random point of the eps-ball (random_start), takes `steps` signed-gradient steps of size alpha,
    and after each projects onto the eps-ball around `images` and onto [0,1]. Costs `steps` forward/backward passes.
    """
    net = NormalizedModel(model, norm)
    x0 = images.detach()
    x = x0.clone()
    if random_start:
        noise = torch.rand(x0.shape, generator=generator, device="cpu" if generator is not None else x0.device)
        x = (x + (noise.to(x0.device) * 2 - 1) * eps).clamp(0, 1)
    lower, upper = (x0 - eps).clamp_(0, 1), (x0 + eps).clamp_(0, 1)  # the eps-ball and [0,1] in one box
    with frozen_eval(model):
        for _ in range(steps):
            grad = _input_gradient(net, x, labels)
            x = x.detach().add_(grad.sign_(), alpha=-alpha if targeted else alpha)
            torch.maximum(torch.minimum(x, upper, out=x), lower, out=x)
    return x


def _cw_margin(logits: torch.Tensor, labels: torch.Tensor, targeted: bool) -> torch.Tensor:
    """C&W's margin before clamping: negative once the attack succeeds (the label lost, or the target won)."""
    one_hot = F.one_hot(labels, logits.shape[1]).bool()
    own = logits[one_hot]
    other = logits.masked_fill(one_hot, float("-inf")).amax(dim=1)
    return other - own if targeted else own - other


def cw_attack(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, c: float = 1.0, kappa: float = 0.0, steps: int = 100,
    lr: float = 0.01, binary_search_steps: int = 5, targeted: bool = False, norm: Normalization = ASSIGNMENT_NORM,
) -> torch.Tensor:
    """Carlini-Wagner L2 (Carlini & Wagner, 2017, arXiv:1608.04644).

    Minimises ||x' - x||_2^2 + c * f(x') with x' = (tanh(w) + 1) / 2 (always inside [0,1]) by Adam, and binary-searches
    c per sample over `binary_search_steps` rounds. Returns the smallest successful x' per sample, or the clean image
    where no round succeeded (check success with the model).
    """
    net = NormalizedModel(model, norm)
    x0 = images.detach()
    B = x0.shape[0]
    lower = torch.zeros(B, device=x0.device)
    upper = torch.full((B,), 1e10, device=x0.device)
    const = torch.full((B,), float(c), device=x0.device)
    best_l2 = torch.full((B,), float("inf"), device=x0.device)
    best_adv = x0.clone()
    w0 = torch.atanh((x0 * 2 - 1).clamp(-1 + 1e-6, 1 - 1e-6))
    with frozen_eval(model):
        for _ in range(binary_search_steps):
            w = w0.clone().requires_grad_(True)
            opt = torch.optim.Adam([w], lr=lr)
            succeeded = torch.zeros(B, dtype=torch.bool, device=x0.device)
            for _ in range(steps):
                x = (torch.tanh(w) + 1) / 2
                l2 = (x - x0).flatten(1).pow(2).sum(1)
                margin = _cw_margin(net(x), labels, targeted)
                loss = (l2 + const * margin.clamp(min=-kappa)).sum()  # f = max(margin, -kappa)
                opt.zero_grad()
                loss.backward()
                opt.step()
                with torch.no_grad():
                    success = (margin < 0) & (margin <= -kappa)
                    improved = success & (l2 < best_l2)
                    best_l2 = torch.where(improved, l2, best_l2)
                    best_adv[improved] = x[improved].detach()
                    succeeded |= success
            # binary search on c: smaller where we succeeded, larger where we did not
            upper = torch.where(succeeded, torch.minimum(upper, const), upper)
            lower = torch.where(succeeded, lower, torch.maximum(lower, const))
            const = torch.where(upper < 1e9, (lower + upper) / 2, const * 10)
    return best_adv.detach()


@dataclass
class AdversarialConfig:
    """Adversarial training: replace a share (`ratio`) of every batch by FGSM/PGD examples made against the model."""

    method: str = "none"  # none | fgsm | pgd
    eps: float = DEFAULT_EPS
    alpha: float = DEFAULT_ALPHA
    steps: int = DEFAULT_PGD_STEPS
    ratio: float = 0.5

    @property
    def enabled(self) -> bool:
        return self.method != "none" and self.ratio > 0


def adversarial_rows(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor, config: AdversarialConfig,
                     norm: Normalization) -> tuple[torch.Tensor, int]:
    """Adversarial training's batch: the first ceil(ratio * B) rows of a normalised batch replaced by adversarial
    examples made against `model`; returns (batch, number of adversarial rows)."""
    n_adv = math.ceil(config.ratio * len(labels))
    x01 = denormalize(inputs[:n_adv], norm)
    adv = attack_batch(config.method, model, x01, labels[:n_adv], eps=config.eps, alpha=config.alpha, steps=config.steps,
                       norm=norm)
    return torch.cat([normalize(adv, norm), inputs[n_adv:]]), n_adv


def pgd_step_size(eps: float, steps: int) -> float:
    """Madry et al.'s rule of thumb for the PGD step: 2.5 * eps / steps, so the walk can cross the ball and back."""
    return 2.5 * eps / max(steps, 1)


def attack_batch(
    name: str, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, eps: float = DEFAULT_EPS,
    alpha: float | None = None, steps: int = DEFAULT_PGD_STEPS, **kwargs,
) -> torch.Tensor:
    """Dispatch by name ('fgsm', 'pgd', 'cw'); eps/alpha/steps apply where the attack has them.

    alpha=None takes pgd_step_size(eps, steps). PGD needs steps >= 1 (with 0 it would be random noise labelled PGD).
    """
    if name == "fgsm":
        return fgsm_attack(model, images, labels, eps=eps, **kwargs)
    if name == "pgd":
        if steps < 1:
            raise ValueError(f"PGD needs at least one step, got steps={steps}")
        alpha = pgd_step_size(eps, steps) if alpha is None else alpha
        return pgd_attack(model, images, labels, eps=eps, alpha=alpha, steps=steps, **kwargs)
    if name == "cw":
        return cw_attack(model, images, labels, **kwargs)
    raise ValueError(f"unknown attack {name!r}; choose one of {', '.join(ATTACKS)}")


# ---- everyday distortions, in pixel space (robustness_analysis.py --corruptions) -------------------------------------
CORRUPTIONS: dict[str, tuple[float, ...]] = {
    "jpeg": (95, 75, 50, 30, 10),  # JPEG quality
    "blur": (0.5, 1, 2, 3),  # Gaussian blur sigma, pixels
    "noise": (2, 5, 10, 20),  # Gaussian noise sigma, grey levels of 255
    "resize": (0.75, 0.5, 0.25),  # down-scaling factor, then back up
}


class Corruption:
    """One distortion at one severity, as a picklable PIL -> PIL callable (DataLoader workers copy it).

    Noise is seeded from the image's own pixels, so every run and every worker adds the same noise to the same image.
    """

    def __init__(self, family: str, severity: float):
        if family not in CORRUPTIONS:
            raise UserError(f"unknown corruption {family!r}; choose from {', '.join(CORRUPTIONS)}")
        self.family, self.severity = family, severity

    def __call__(self, image: Image.Image) -> Image.Image:
        if self.family == "jpeg":
            buffer = io.BytesIO()
            image.save(buffer, format="JPEG", quality=int(self.severity))
            return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")
        if self.family == "blur":
            return image.filter(ImageFilter.GaussianBlur(radius=self.severity))
        if self.family == "noise":
            pixels = np.asarray(image, dtype=np.float32)
            rng = np.random.default_rng(int(pixels.sum()) % 2**32)
            noisy = pixels + rng.normal(0, self.severity, pixels.shape)
            return Image.fromarray(np.clip(np.round(noisy), 0, 255).astype(np.uint8))
        small = (max(1, round(image.size[0] * self.severity)), max(1, round(image.size[1] * self.severity)))
        return image.resize(small, Image.BICUBIC).resize(image.size, Image.BICUBIC)
