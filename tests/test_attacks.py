"""FGSM / PGD / C&W invariants and strength on a trained toy model, and adversarial training."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from attacks import AdversarialConfig, cw_attack, fgsm_attack, pgd_attack
from normalization import denormalize, normalize
from trainer import LoggingParameters, Trainer

EPS = 0.06


def shifted_toy_set(n: int, size: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """[0,1] images: class 0 around 0.45, class 1 around 0.55 (a margin of 0.05 per pixel, below EPS)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    x = 0.45 + 0.1 * y.view(-1, 1, 1, 1).float() + 0.02 * torch.randn(n, 3, size, size, generator=g)
    return x.clamp(0, 1), y


class LinearNet(nn.Module):
    def __init__(self, size: int = 8):
        super().__init__()
        self.fc = nn.Linear(3 * size * size, 2)

    def forward(self, x):
        return self.fc(x.flatten(1))


@pytest.fixture(scope="module")
def toy():
    """A linear detector trained to ~100 % clean accuracy on the shifted toy set (it sees normalised inputs)."""
    torch.manual_seed(0)
    model = LinearNet()
    x, y = shifted_toy_set(256)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(200):
        opt.zero_grad()
        nn.functional.cross_entropy(model(normalize(x)), y).backward()
        opt.step()
    xt, yt = shifted_toy_set(128, seed=1)
    assert accuracy(model, xt, yt) > 95
    return model, xt, yt


def accuracy(model, x01, y):
    with torch.no_grad():
        return 100.0 * (model(normalize(x01)).argmax(1) == y).float().mean().item()


def test_perturbations_stay_in_the_ball_and_the_pixel_range(toy):
    model, _, _ = toy
    x = torch.rand(16, 3, 8, 8)
    x[:4] = 0.0  # saturated images: clamping must keep them valid
    x[4:8] = 1.0
    y = torch.randint(0, 2, (16,))
    for adv in (fgsm_attack(model, x, y, eps=EPS), pgd_attack(model, x, y, eps=EPS, alpha=0.02, steps=7),
                pgd_attack(model, x, y, eps=EPS, alpha=0.02, steps=7, targeted=True)):
        assert (adv - x).abs().max() <= EPS + 1e-6
        assert adv.min() >= 0 and adv.max() <= 1
    cw = cw_attack(model, x, y, steps=20, binary_search_steps=2)
    assert cw.min() >= 0 and cw.max() <= 1


def test_pgd_beats_random_noise_of_the_same_budget(toy):
    model, x, y = toy
    clean = accuracy(model, x, y)
    noise = (x + EPS * torch.empty_like(x).uniform_(-1, 1).sign()).clamp(0, 1)
    adv = pgd_attack(model, x, y, eps=EPS, alpha=0.015, steps=10)
    assert accuracy(model, noise, y) > clean - 10
    assert accuracy(model, adv, y) < 10
    assert accuracy(model, fgsm_attack(model, x, y, eps=EPS), y) < clean - 50


def test_targeted_attack_reaches_its_target(toy):
    model, x, y = toy
    fakes = x[y == 1]
    adv = pgd_attack(model, fakes, torch.zeros(len(fakes), dtype=torch.long), eps=EPS, alpha=0.015, steps=10, targeted=True)
    with torch.no_grad():
        assert (model(normalize(adv)).argmax(1) == 0).float().mean() > 0.9  # fakes now pass as real


def test_cw_finds_smaller_perturbations_than_fgsm(toy):
    model, x, y = toy
    x, y = x[:16], y[:16]
    cw = cw_attack(model, x, y, c=1.0, steps=100, lr=0.01, binary_search_steps=5)
    fgsm = fgsm_attack(model, x, y, eps=EPS)
    with torch.no_grad():
        cw_ok = model(normalize(cw)).argmax(1) != y
        fgsm_ok = model(normalize(fgsm)).argmax(1) != y
    both = cw_ok & fgsm_ok
    assert cw_ok.float().mean() > 0.9 and both.sum() >= 8
    l2 = lambda a: (a - x).flatten(1).norm(dim=1)[both]  # noqa: E731
    # FGSM spends eps on every pixel; C&W stops at the boundary (about 0.05/0.06 of FGSM's size on this toy model)
    assert torch.all(l2(cw) < l2(fgsm)) and l2(cw).median() < 0.9 * l2(fgsm).median()


def test_attacks_leave_mode_and_gradients_alone(toy):
    model, x, y = toy
    model.train()
    for p in model.parameters():
        p.grad = torch.full_like(p, 0.5)
    for attack in (lambda: fgsm_attack(model, x, y), lambda: pgd_attack(model, x, y, steps=2),
                   lambda: cw_attack(model, x[:4], y[:4], steps=2, binary_search_steps=1)):
        attack()
        assert model.training
        assert all(p.requires_grad and torch.all(p.grad == 0.5) for p in model.parameters())
    model.eval()
    fgsm_attack(model, x, y)
    assert not model.training


def robust_toy_set(n: int, seed: int) -> torch.utils.data.TensorDataset:
    """Normalised 8x8 images with a robust but noisy feature (brightness, margin 0.15) and a non-robust but perfect one
    (a +-0.03 checkerboard): normal training leans on the checkerboard, which an eps = 0.04 attack flips."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    s = (2 * y - 1).float().view(-1, 1, 1, 1)
    base = 0.5 + 0.15 * s + 0.12 * torch.randn(n, 1, 1, 1, generator=g)
    checker = ((torch.arange(8).view(-1, 1) + torch.arange(8).view(1, -1)) % 2 * 2 - 1).float()
    x = base.expand(n, 3, 8, 8) + 0.03 * s * checker + 0.01 * torch.randn(n, 3, 8, 8, generator=g)
    return torch.utils.data.TensorDataset(normalize(x.clamp(0, 1)), y)


def pgd_accuracy(model, dataset, eps):
    x, y = dataset.tensors

    adv = pgd_attack(model, denormalize(x), y, eps=eps, alpha=eps / 4, steps=10)
    return accuracy(model, adv, y)


@pytest.mark.parametrize("method", ["pgd"])
def test_adversarial_training_raises_pgd_accuracy(tmp_path, method):
    train, test = robust_toy_set(512, 0), robust_toy_set(256, 1)
    results = {}
    for name, adv in (("normal", AdversarialConfig()), ("adv", AdversarialConfig(method, eps=0.04, alpha=0.01, steps=5, ratio=1.0))):
        torch.manual_seed(0)
        model = LinearNet()
        trainer = Trainer(model, torch.optim.Adam(model.parameters(), lr=0.02), nn.CrossEntropyLoss(), 64, train, test, test,
                          num_workers=0, out_dir=tmp_path / name, checkpoint_dir=tmp_path / name, progress=False, adversarial=adv)
        record = trainer.run(8, LoggingParameters("Linear", "toy", "Adam", tag=name))
        results[name] = (record["test_acc"][-1], pgd_accuracy(model, test, 0.04))
        if name == "adv":
            assert len(record["train_adv_acc"]) == 8 and record["adversarial"]["method"] == method
    assert results["normal"][0] > 95  # the plain model is accurate on clean data ...
    assert results["normal"][1] < 50  # ... and falls to PGD
    assert results["adv"][1] > results["normal"][1] + 30
