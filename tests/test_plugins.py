"""User-defined operators and schedules: import paths, classes, entry points, the README's
examples, and the errors a broken plug-in gives."""

from __future__ import annotations

import json
import re
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

from coevo import operators
from coevo import schedules
from coevo.cli import main
from coevo.schedules import ScheduleParams

README = Path(__file__).resolve().parent.parent / "README.md"

USER_MODULE = '''
import numpy as np


def prune_first(net, amount, rng, context):
    """Prune the first alive weight of every layer."""
    for layer in net.layers:
        alive = np.flatnonzero(layer.weight_mask)
        if alive.size > 1:
            layer.weight_mask[np.unravel_index(alive[0], layer.weight_mask.shape)] = False
    return (net,)


def always(t, T, p, s, params):
    """Prune every generation."""
    return 1.0


def never(t, T, p, s, params):
    """Never prune."""
    return 0.0


class PruneHalf:
    """A small class with one method: prunes half of each layer's alive weights with coevo's RANDOM."""

    def __init__(self):
        from coevo import operators
        self.random = operators.registry.get("random")

    def __call__(self, net, amount, rng, context):
        return self.random(net, 0.5, rng, context)


class NeedsArgument:
    def __init__(self, level):
        self.level = level

    def __call__(self, net, amount, rng, context):
        return net


def raises(net, amount, rng, context):
    raise RuntimeError("boom")


def wrong_shape(net, amount, rng, context):
    net.layers[0].bias_mask = net.layers[0].bias_mask[:-1]
    return net


def wrong_dtype(net, amount, rng, context):
    net.layers[1].weight_mask = net.layers[1].weight_mask.astype(np.float32)
    return net


def revives(net, amount, rng, context):
    net.layers[0].weight_mask = np.ones_like(net.layers[0].weight_mask)
    net.layers[0].weight_mask[0, 0] = False
    if context.generation > 0:
        net.layers[0].weight_mask[0, 0] = True
    return net


def kills_a_layer(net, amount, rng, context):
    net.layers[0].weight_mask[:] = False
    net.layers[0].bias_mask[:] = False
    return net


def bad_schedule(t, T, p, s, params):
    return 2.0
'''


def sets(overrides: list[str]) -> list[str]:
    return [x for o in overrides for x in ("--set", o)]


@pytest.fixture
def user_module(tmp_path, monkeypatch) -> str:
    """A module outside the package, importable by a unique name."""
    name = f"user_ops_{uuid.uuid4().hex[:8]}"
    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / f"{name}.py").write_text(USER_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path / "plugins"))
    return name


@pytest.fixture
def clean_registries():
    """Entry points are loaded once per process: undo what a test added, and load again after."""
    saved = [(r, dict(r._items), r._entry_points_loaded) for r in (operators.registry, schedules.registry)]
    for r, _, _ in saved:
        r._entry_points_loaded = False
    yield
    for r, items, _ in saved:
        r._items.clear()
        r._items.update(items)
        r._entry_points_loaded = False


def run(tmp_path: Path, overrides: list[str], capsys, name: str = "run") -> tuple[int, str, dict | None]:
    out = tmp_path / name
    code = main(["run", "--quiet", "--out", str(out), *sets(overrides)])
    err = capsys.readouterr().err
    summary = json.loads((out / "summary.json").read_text()) if code == 0 else None
    return code, err, summary


def test_user_operator_and_schedule_drive_a_run_by_import_path(tmp_path, tiny_overrides, user_module, capsys):
    code, err, summary = run(tmp_path, tiny_overrides + [f"prune.operator={user_module}:prune_first",
                                                         f"prune.schedule={user_module}:always"], capsys, "on")
    assert code == 0, err
    # every cell prunes one weight per layer per generation (encoder 2 + decoder 2 layers, 3 generations)
    total = summary["parameters"]
    assert summary["kept_fraction"] == pytest.approx((total - 4 * 3) / total)
    assert summary["operator"] == f"{user_module}:prune_first"
    code, err, summary = run(tmp_path, tiny_overrides + [f"prune.operator={user_module}:prune_first",
                                                         f"prune.schedule={user_module}:never"], capsys, "off")
    assert code == 0, err
    assert summary["kept_fraction"] == 1.0  # the schedule, not the default, decided


def test_a_class_named_by_import_path_is_instantiated(tmp_path, tiny_overrides, user_module, capsys):
    instance = operators.registry.get(f"{user_module}:PruneHalf")
    assert callable(instance) and type(instance).__name__ == "PruneHalf"
    code, err, summary = run(tmp_path, tiny_overrides + [f"prune.operator={user_module}:PruneHalf",
                                                         "prune.probability=1"], capsys)
    assert code == 0, err
    assert summary["kept_fraction"] < 0.2  # halved three times, at least
    code, err, _ = run(tmp_path, tiny_overrides + [f"prune.operator={user_module}:NeedsArgument"], capsys, "bad")
    assert code == 2 and "must be constructible with no arguments" in err and "NeedsArgument" in err


def test_decorator_registration(tmp_path, tiny_overrides, clean_registries, capsys):
    @operators.register("first_weight")
    def first_weight(net, amount, rng, context):
        """Prune the first weight of the first layer."""
        net.layers[0].weight_mask[0, 0] = False
        return net

    @schedules.register("every_time")
    def every_time(t, T, p, s, params):
        return 1.0

    with pytest.raises(ValueError, match="already registered"):
        operators.register("first_weight")(lambda net, amount, rng, context: net)
    code, err, summary = run(tmp_path, tiny_overrides + ["prune.operator=first_weight",
                                                         "prune.schedule=every_time"], capsys)
    assert code == 0, err
    assert summary["kept_fraction"] == pytest.approx(1 - 2 / summary["parameters"])  # encoder's and decoder's


def test_an_entry_point_plug_in_is_found(tmp_path, tiny_overrides, monkeypatch, clean_registries, capsys):
    site = tmp_path / "site"
    site.mkdir()
    (site / "fancy_pruning.py").write_text(textwrap.dedent('''
        def prune(net, amount, rng, context):
            """Fancy plug-in operator: prunes nothing at all."""
            return net

        class Halfway:
            """Fancy plug-in schedule: half of p."""
            def __call__(self, t, T, p, s, params):
                return p / 2
    '''))
    dist = site / "fancy_pruning-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: fancy-pruning\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[coevo.operators]\nfancy = fancy_pruning:prune\nbroken = fancy_pruning:missing\n\n"
        "[coevo.schedules]\nhalfway = fancy_pruning:Halfway\n")
    monkeypatch.syspath_prepend(str(site))

    assert main(["operators"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^  fancy +Fancy plug-in operator: prunes nothing at all\.$", out, re.M)
    assert re.search(r"^  halfway +Fancy plug-in schedule: half of p\.$", out, re.M)
    assert re.search(r"^  variance +\S", out, re.M) and re.search(r"^  conjunctive +\S", out, re.M)
    assert "broken" in out  # listed; it fails only when named

    code, err, summary = run(tmp_path, tiny_overrides + ["prune.operator=fancy", "prune.schedule=halfway",
                                                         "prune.probability=1"], capsys)
    assert code == 0, err
    assert summary["kept_fraction"] == 1.0 and summary["operator"] == "fancy"
    code, err, _ = run(tmp_path, tiny_overrides + ["prune.operator=broken"], capsys, "broken")
    assert code == 2 and "'broken'" in err and "failed to load" in err
    assert not (tmp_path / "broken").exists()  # refused before anything was written


@pytest.mark.parametrize("attr, fragment", [
    ("raises", "raised RuntimeError: boom"),
    ("wrong_shape", "left layer 0 bias_mask as bool (7,)"),
    ("wrong_dtype", "left layer 1 weight_mask as float32"),
    ("revives", "revived pruned entries"),
    ("kills_a_layer", "removed the last alive neuron of layer 0"),
])
def test_a_broken_operator_fails_with_its_name(tmp_path, tiny_overrides, user_module, capsys, attr, fragment):
    name = f"{user_module}:{attr}"
    code, err, _ = run(tmp_path, tiny_overrides + [f"prune.operator={name}", "prune.probability=1"], capsys)
    assert code == 2
    assert err.startswith("coevo: error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert f"pruning operator {name!r}" in err and fragment in err


def test_a_broken_schedule_fails_with_its_name(tmp_path, tiny_overrides, user_module, capsys):
    name = f"{user_module}:bad_schedule"
    code, err, _ = run(tmp_path, tiny_overrides + [f"prune.schedule={name}"], capsys)
    assert code == 2 and f"pruning schedule {name!r}" in err and "probability in [0, 1]" in err
    assert not (tmp_path / "run").exists()  # refused before anything was written


@pytest.mark.parametrize("key, value, known", [
    ("operator", "magic", ["none", "random", "variance", "conjunctive"]),
    ("schedule", "sometimes", ["fixed", "exponential", "final_n"]),
])
def test_an_unknown_name_exits_2_with_the_known_names(tmp_path, tiny_overrides, capsys, key, value, known):
    code, err, _ = run(tmp_path, tiny_overrides + [f"prune.{key}={value}"], capsys)
    assert code == 2 and f"prune.{key} = {value!r} is unknown" in err
    listed = err.split("known ")[1]
    assert all(n in listed for n in known)
    code, err, _ = run(tmp_path, tiny_overrides + [f"prune.{key}=no_such_module_xyz:f"], capsys, "path")
    assert code == 2 and "cannot import module 'no_such_module_xyz'" in err


# ---------------------------------------------------------------- the README's examples

def readme_examples() -> tuple[dict[str, str], list[str]]:
    """The python blocks of the README's plug-in section that start with '# file: NAME.py', and
    the --set options of its run command."""
    text = README.read_text()
    section = text.split("## Writing your own pruning operator and schedule", 1)[1].split("\n## ", 1)[0]
    files = {}
    for block in re.findall(r"```python\n(.*?)```", section, re.S):
        first = block.splitlines()[0]
        match = re.fullmatch(r"# file: (\w+)\.py", first)
        if match:
            files[match.group(1)] = block
    command = next(b for b in re.findall(r"```bash\n(.*?)```", section, re.S) if "coevo run" in b)
    return files, re.findall(r"--set (\S+)", command)


def test_the_readme_operator_and_schedule_work_as_written(tmp_path, tiny_overrides, monkeypatch, capsys):
    files, options = readme_examples()
    assert len(files) == 2, files.keys()
    assert any(o.startswith("prune.operator=") for o in options)
    assert any(o.startswith("prune.schedule=") for o in options)
    for name, source in files.items():
        (tmp_path / f"{name}.py").write_text(source)
        monkeypatch.delitem(sys.modules, name, raising=False)
    monkeypatch.syspath_prepend(str(tmp_path))
    code, err, summary = run(tmp_path, tiny_overrides + options + ["prune.probability=1", "prune.amount=0.2"], capsys)
    assert code == 0, err
    assert summary["kept_fraction"] < 1
    schedule = schedules.registry.get(next(o for o in options if o.startswith("prune.schedule=")).split("=", 1)[1])
    values = [schedule(t, 10, 0.5, 3, ScheduleParams()) for t in range(11)]
    assert values[0] == 0 and values[-1] == pytest.approx(0.5) and values == sorted(values)
    for name in files:
        monkeypatch.delitem(sys.modules, name, raising=False)
