"""The suite's structure (#30): no import cycle, no script or tool importing a script, no tool editing sys.path, every
library module installed, typed settings whose own fields say what --resume may change."""
from __future__ import annotations

import ast
import tomllib
from dataclasses import dataclass, fields, make_dataclass, replace
from pathlib import Path

import pytest
import torch
from torch import nn

from cli import UserError
from conftest import REPO, TinyNet, separable_toy_set
from settings import FIXED, TrainSettings, resume_conflicts, resume_policy, setting, settings_record
from trainer import LoggingParameters, Schedule, Trainer

TOP = {p.stem: p for p in REPO.glob("*.py")}
TOOLS = {p.stem: p for p in (REPO / "tools").glob("*.py")}


def imported(path: Path) -> set[str]:
    """The names of the suite's own top-level modules and tools a file imports, anywhere in it (lazy imports too)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names & (set(TOP) | set(TOOLS))


def is_script(path: Path) -> bool:
    return '__name__ == "__main__"' in path.read_text() and path.stem != "models"  # models.py: a module with a main


def test_no_import_cycle():
    graph = {name: imported(path) & set(TOP) for name, path in TOP.items()}
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join(trail[trail.index(nxt):] + [nxt]))
            if nxt not in state:
                visit(nxt, trail + [nxt])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])


def test_no_script_or_tool_imports_a_script():
    scripts = {name for name, path in {**TOP, **TOOLS}.items() if is_script(path)}
    offenders = {f"{name} imports {', '.join(sorted(imported(path) & scripts))}"
                 for name, path in {**TOP, **TOOLS}.items() if imported(path) & scripts}
    assert offenders == set()


def test_no_tool_touches_sys_path():
    offenders = [path.name for path in [*TOP.values(), *TOOLS.values()] if "sys.path" in path.read_text()]
    assert offenders == []


def test_every_library_module_is_installed_by_the_package():
    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["py-modules"])
    library = {name for name, path in TOP.items() if not is_script(path)}
    assert library - listed == set() and listed - set(TOP) == set()


# ---- typed settings: what a resume may change is declared on the type ----------------------------------------------
def test_every_setting_that_shapes_a_run_is_refused_on_resume():
    """Each FIXED field of TrainSettings, changed, is named by the resume check; the FREE ones are not."""
    base = TrainSettings(fakes="self-blend", blend_regions=("face", "inner"), real_faces=Path("faces"), alpha=0.01)
    saved = settings_record(base)
    for f in fields(TrainSettings):
        value = getattr(base, f.name)
        other = other_value(value)
        conflicts = resume_conflicts(saved, replace(base, **{f.name: other}))
        if resume_policy(f) == FIXED:
            assert len(conflicts) == 1 and conflicts[0].startswith(f"{f.name}: "), f.name
        else:
            assert conflicts == [], f.name
    assert "blend_regions: ['face', 'inner'] -> ['face', 'inner', 'lower']" in resume_conflicts(
        saved, replace(base, blend_regions=("face", "inner", "lower")))


def other_value(value):
    """Another value of the same kind (a bool flipped, a number moved, a path or tuple extended, None replaced)."""
    for kind, change in ((bool, lambda v: not v), (int, lambda v: v + 1), (float, lambda v: v * 2 + 1),
                         (str, lambda v: v + "x"), (tuple, lambda v: (*v, "lower")), (Path, lambda v: v / "other")):
        if isinstance(value, kind):
            return change(value)
    assert value is None, value
    return 7


def test_a_renamed_settings_field_is_still_checked_on_resume():
    """The check walks the type's fields: a field renamed (here blend_regions -> blend_masks) is compared under its
    new name, with no list of names to update (the old RESUME_FIXED list silently stopped checking a renamed flag)."""
    spec = [(f.name if f.name != "blend_regions" else "blend_masks", f.type, setting(f.default, resume_policy(f)))
            for f in fields(TrainSettings)]
    Renamed = make_dataclass("Renamed", spec, frozen=True)
    saved = settings_record(Renamed(blend_masks=("inner",)))
    assert resume_conflicts(saved, Renamed(blend_masks=("face",))) == ["blend_masks: ['inner'] -> ['face']"]


@dataclass(frozen=True)
class ToySettings:
    """A Trainer caller's own settings: crop shapes the run, note does not."""

    crop: int = setting(8)
    note: str = setting("", "free")


def toy_trainer(tmp_path, run_settings=None, **config):
    torch.manual_seed(0)
    model = TinyNet()
    return Trainer(model, torch.optim.Adam(model.parameters(), lr=0.01), nn.CrossEntropyLoss(), 8, separable_toy_set(16),
                   separable_toy_set(8), separable_toy_set(8), num_workers=0, out_dir=tmp_path, checkpoint_dir=tmp_path,
                   progress=False, run_settings=run_settings, **config)


@pytest.mark.parametrize("changed, said", [
    ({"seed": 5}, "seed: 42 -> 5"),
    ({"select_by": "auc"}, "select_by: 'acc' -> 'auc'"),
    ({"schedule": Schedule("cosine", 1)}, "schedule.name: 'none' -> 'cosine'"),
    ({"balanced_sampler": True}, "balanced_sampler: False -> True"),
    ({"run_settings": ToySettings(crop=4)}, "crop: 8 -> 4"),
])
def test_a_trainer_caller_is_refused_a_resume_with_other_shaping_settings(tmp_path, changed, said):
    lp = LoggingParameters("TinyNet", "toy", "Adam")
    toy_trainer(tmp_path, ToySettings()).run(1, lp)
    config = {"run_settings": ToySettings(), **changed}
    with pytest.raises(UserError, match="was started with other settings") as err:
        toy_trainer(tmp_path, **config).run(2, lp, resume=True)
    assert said in str(err.value)
    record = toy_trainer(tmp_path, ToySettings(note="any")).run(2, lp, resume=True)  # a free field may change
    assert len(record["train_loss"]) == 2


def test_a_trainer_caller_with_train_settings_is_refused_other_blend_regions(tmp_path):
    lp = LoggingParameters("TinyNet", "toy", "Adam")
    first = TrainSettings(fakes="self-blend", blend_regions=("inner", "face"))
    toy_trainer(tmp_path, first).run(1, lp)
    with pytest.raises(UserError) as err:
        toy_trainer(tmp_path, replace(first, blend_regions=("face", "inner"))).run(2, lp, resume=True)
    assert "blend_regions: ['inner', 'face'] -> ['face', 'inner']" in str(err.value)


def test_the_shared_flags_are_declared_once_and_shown_together():
    shared = ("--device", "--no-progress", "--num-workers", "--data-root", "--figures-dir", '"-cpp"')
    offenders = [f"{path.name}: {flag}" for path in [*TOP.values(), *TOOLS.values()] if path.name != "cli.py"
                 for flag in shared if f'add_argument({flag if flag.startswith(chr(34)) else chr(34) + flag + chr(34)}' in path.read_text()]
    assert offenders == []
    import detect
    import train_main

    for module, argv in ((train_main, ["-h"]), (detect, ["x.png", "-h"])):
        with pytest.raises(SystemExit):
            module.parse_args(argv)
