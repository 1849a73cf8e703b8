"""User-defined operators and schedules: import paths, classes, entry points, their parameters
(config, checks, bench sweeps), the global-RNG watch, a user's files that shadow packages, the
the docs' examples (docs/writing-operators.md), and the errors a broken plug-in gives."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch

from coevo import config, operators
from coevo import schedules
import coevo
from coevo.bench import report as bench_report
from coevo.bench import spec as bench_spec
from coevo.cli import main

WRITING = Path(__file__).resolve().parent.parent / "docs" / "writing-operators.md"

USER_MODULE = '''
import numpy as np


def prune_first(net, amount, rng, context):
    """Prune the first alive weight of every layer."""
    for layer in net.layers:
        alive = np.flatnonzero(layer.weight_mask)
        if alive.size > 1:
            layer.weight_mask[np.unravel_index(alive[0], layer.weight_mask.shape)] = False
    return (net,)


def always(t, T, p, s):
    """Prune every generation."""
    return 1.0


def never(t, T, p, s):
    """Never prune."""
    return 0.0


def prune_first_n(net, amount, rng, context, *, n: int = 1):
    """Prune the first n alive weights of every layer."""
    for layer in net.layers:
        alive = np.flatnonzero(layer.weight_mask)
        for index in alive[: min(n, alive.size - 1)]:
            layer.weight_mask[np.unravel_index(index, layer.weight_mask.shape)] = False
    return net


class PruneFirst:
    """prune_first_n as a class: n is a constructor parameter, checked there."""

    def __init__(self, n: int = 1):
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        self.n = n

    def __call__(self, net, amount, rng, context):
        return prune_first_n(net, amount, rng, context, n=self.n)


def every_kth(t, T, p, s, *, k: int = 2):
    """Prune every k-th generation."""
    return 1.0 if t % k == 0 else 0.0


def uses_numpy_global(net, amount, rng, context):
    np.random.random()
    return net


def uses_python_random(net, amount, rng, context):
    import random
    random.random()
    return net


def uses_torch_global(net, amount, rng, context):
    import torch
    torch.rand(1)
    return net


def reseeds_numpy(net, amount, rng, context):
    np.random.seed(12345)
    return net


def random_schedule(t, T, p, s):
    import random
    return p * random.random()


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


def bad_schedule(t, T, p, s):
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
    # exact counts: without the exploration mutation, whose zeros on weights no gradient reaches stay zero
    code, err, summary = run(tmp_path, tiny_overrides + [f"prune.operator={user_module}:prune_first",
                                                         f"prune.schedule={user_module}:always",
                                                         "prune.reset_fraction=0"], capsys, "on")
    assert code == 0, err
    # every cell prunes one weight per layer per generation (encoder 2 + decoder 2 layers, 3 generations);
    # the decoder's first layer has 3 inputs, so its neuron 0 loses every incoming weight: driven by its
    # bias alone it is a constant, off every input -> output path, and its bias and its 40 outgoing
    # weights (one of them already cut) stop counting too
    total = summary["parameters"]
    assert summary["kept_fraction"] == pytest.approx((total - 4 * 3 - 40) / total)
    assert summary["operator"] == f"{user_module}:prune_first"
    code, err, summary = run(tmp_path, tiny_overrides + [f"prune.operator={user_module}:prune_first",
                                                         f"prune.schedule={user_module}:never",
                                                         "prune.reset_fraction=0"], capsys, "off")
    assert code == 0, err
    assert summary["kept_fraction"] == 1.0  # the schedule, not the default, decided


def test_a_class_named_by_import_path_is_instantiated(tmp_path, tiny_overrides, user_module, capsys):
    instance = operators.registry.get(f"{user_module}:PruneHalf")
    assert callable(instance) and type(instance).__name__ == "PruneHalf"
    code, err, summary = run(tmp_path, tiny_overrides + [f"prune.operator={user_module}:PruneHalf",
                                                         "prune.probability=1", "prune.target_kept=0"], capsys)
    assert code == 0, err
    assert summary["kept_fraction"] < 0.2  # halved three times, at least
    code, err, _ = run(tmp_path, tiny_overrides + [f"prune.operator={user_module}:NeedsArgument"], capsys, "bad")
    assert code == 2 and f"operator '{user_module}:NeedsArgument' needs prune.params.level (it has no default)" in err
    assert not (tmp_path / "bad").exists()
    code, err, _ = run(tmp_path, tiny_overrides + [f"prune.operator={user_module}:NeedsArgument",
                                                   "prune.params.level=3"], capsys, "good")
    assert code == 0, err


def test_decorator_registration(tmp_path, tiny_overrides, clean_registries, capsys):
    @operators.register("first_weight")
    def first_weight(net, amount, rng, context):
        """Prune the first weight of the first layer."""
        net.layers[0].weight_mask[0, 0] = False
        return net

    @schedules.register("every_time")
    def every_time(t, T, p, s):
        return 1.0

    with pytest.raises(ValueError, match="already registered"):
        operators.register("first_weight")(lambda net, amount, rng, context: net)
    code, err, summary = run(tmp_path, tiny_overrides + ["prune.operator=first_weight", "prune.schedule=every_time",
                                                         "prune.reset_fraction=0"], capsys)  # exact counts
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
            def __call__(self, t, T, p, s):
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
    ("kills_a_layer", "broke a protection rule of the encoder"),
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


# ---------------------------------------------------------------- parameters

def pruned_per_layer(run_dir: Path) -> list[int]:
    """Pruned weights of each layer of best.pt (encoder then decoder), counted from its masks."""
    model = torch.load(run_dir / "best.pt", weights_only=True)
    return [int((~model[net][key]).sum()) for net in ("encoder", "decoder")
            for key in sorted(model[net]) if key.endswith("weight_mask")]


@pytest.mark.parametrize("attr", ["prune_first_n", "PruneFirst"])
def test_parameters_reach_a_function_or_a_class(tmp_path, tiny_overrides, user_module, capsys, attr):
    """prune.params.n reaches the function as a keyword argument, or the class's constructor;
    3 generations x n pruned weights per layer, every cell mutated every generation."""
    options = tiny_overrides + [f"prune.operator={user_module}:{attr}", f"prune.schedule={user_module}:always"]
    for n in (1, 2):
        code, err, _ = run(tmp_path, options + [f"prune.params.n={n}"], capsys, f"n{n}")
        assert code == 0, err
        assert pruned_per_layer(tmp_path / f"n{n}") == [3 * n] * 4
    code, err, _ = run(tmp_path, options, capsys, "default")  # no table: the default n = 1
    assert code == 0, err
    assert pruned_per_layer(tmp_path / "default") == [3] * 4


def test_the_run_directory_config_keeps_the_parameters_and_resume_uses_them(tmp_path, tiny_overrides,
                                                                            user_module, capsys):
    options = tiny_overrides + [f"prune.operator={user_module}:prune_first_n", f"prune.schedule={user_module}:every_kth",
                                "prune.params.n=2", "prune.schedule_params.k=1"]
    code, err, _ = run(tmp_path, options, capsys)
    assert code == 0, err
    written = config.load(tmp_path / "run" / "config.toml")
    assert written == config.load(None, options)
    assert written.prune.params == {"n": 2} and written.prune.schedule_params == {"k": 1}
    assert main(["resume", "--quiet", str(tmp_path / "run"), "--generations", "5"]) == 0, capsys.readouterr().err
    assert pruned_per_layer(tmp_path / "run") == [5 * 2] * 4  # n = 2 and k = 1 (every generation) held on


def test_a_schedule_parameter_is_passed(tmp_path, tiny_overrides, user_module, capsys):
    options = tiny_overrides + [f"prune.operator={user_module}:prune_first_n", f"prune.schedule={user_module}:every_kth"]
    code, err, _ = run(tmp_path, options + ["prune.schedule_params.k=2"], capsys, "k2")
    assert code == 0, err
    assert pruned_per_layer(tmp_path / "k2") == [2] * 4  # generations 0 and 2 of 0, 1, 2


@pytest.mark.parametrize("attr, extra, fragment", [
    ("prune_first_n", ["prune.params.m=1"], "prune.params.m is not a parameter of operator '{op}'; it accepts: n"),
    ("prune_first_n", ["prune.params.n=abc"], "prune.params.n must be an integer, got 'abc'"),
    ("prune_first", ["prune.params.n=1"], "prune.params.n is not a parameter of operator '{op}'; it takes no parameters"),
    ("PruneFirst", ["prune.params.n=-1"], "prune.operator = '{op}': PruneFirst(n=-1) raised ValueError: n must be >= 0"),
    ("prune_first_n", ["prune.schedule_params.k=2"], "prune.schedule_params.k is not a parameter of schedule 'fixed'; "
                                                     "it takes no parameters"),
])
def test_bad_parameters_exit_2_before_anything_is_written(tmp_path, tiny_overrides, user_module, capsys, attr, extra,
                                                          fragment):
    op = f"{user_module}:{attr}"
    code, err, _ = run(tmp_path, tiny_overrides + [f"prune.operator={op}"] + extra, capsys)
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert fragment.format(op=op) in err, err
    assert not (tmp_path / "run").exists()


def test_the_builtin_schedules_check_their_parameters(tmp_path, tiny_overrides, capsys):
    code, err, _ = run(tmp_path, tiny_overrides + ["prune.schedule=exponential", "prune.schedule_params.k=-1"], capsys)
    assert code == 2 and "pruning schedule 'exponential' raised ValueError: prune.schedule_params.k must be > 0" in err
    code, err, _ = run(tmp_path, tiny_overrides + ["prune.schedule=exponential", "prune.schedule_params.rate=1"], capsys)
    assert code == 2 and "prune.schedule_params.rate is not a parameter of schedule 'exponential'; it accepts: k" in err
    assert not (tmp_path / "run").exists()


PARAMETER_SPEC = """
name = "params"
trials = 1
generations = 2
baseline = { operator = "none" }

[base.run]
checkpoint_every = 0
[base.data]
n_dims = 40
n_clusters = 3
rows_per_cluster = 10
[base.model]
hidden = [8]
latent = 3
[base.grid]
cells = 4
[base.train]
learning_rate = 0.001
[base.prune]
schedule = "{module}:always"

[[combination]]
operator = "none"

[[combination]]
operator = "{module}:prune_first_n"
prune.params.n = 2

[[combination]]
operator = "{module}:PruneFirst"
prune = { params = { n = 3 } }
"""


def test_bench_takes_parameters_in_combinations_and_sweeps(tmp_path, user_module, capsys):
    spec = bench_spec.parse(PARAMETER_SPEC.replace("{module}", user_module))
    settings = [c.settings["prune.params.n"] for c in spec.combinations]
    assert settings == [None, 2, 3]  # None: the operator takes no n (or leaves it at its default)
    assert [c.config["prune"]["params"] for c in spec.combinations] == [{}, {"n": 2}, {"n": 3}]
    assert spec.combinations[1].id.endswith("prune.params.n=2") and "n=" not in spec.combinations[0].id
    assert bench_spec.parse(spec.dumps()).identity() == spec.identity()
    # a [sweep] axis on a parameter, with the baseline named by it
    swept = bench_spec.parse(PARAMETER_SPEC.replace("{module}", user_module).split("[[combination]]")[0].replace(
        'baseline = { operator = "none" }', 'baseline = { "prune.params.n" = 1 }')
        + f'[sweep]\n"prune.params.n" = [1, 4]\n"run.mode" = ["coevolution", "canonical"]\n'
        + f'[[combination]]\noperator = "{user_module}:prune_first_n"\n')
    assert [(c.mode, c.config["prune"]["params"]) for c in swept.combinations] == [
        ("coevolution", {"n": 1}), ("canonical", {"n": 1}), ("coevolution", {"n": 4}), ("canonical", {"n": 4})]
    assert bench_spec.parse(swept.dumps()).identity() == swept.identity()
    # a parameter the operator does not take fails, naming the combination, before any trial runs
    bad = PARAMETER_SPEC.replace("{module}", user_module) + '[sweep]\n"prune.params.n" = [1, 2]\n'
    path = tmp_path / "bad.toml"
    path.write_text(bad)
    assert main(["bench", str(path), "--out", str(tmp_path / "bad"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "combination none" in err and "prune.params.n is not a parameter of operator 'none'" in err
    assert not (tmp_path / "bad").exists()
    # end to end: each trial's run directory holds its parameters, and they did what they say
    path = tmp_path / "params.toml"
    path.write_text(PARAMETER_SPEC.replace("{module}", user_module))
    assert main(["bench", str(path), "--out", str(tmp_path / "bench"), "--jobs", "1", "--quiet"]) == 0, \
        capsys.readouterr().err
    rows = bench_report.read_rows(tmp_path / "bench" / bench_report.ROWS)
    assert sorted(r["settings"]["prune.params.n"] or 0 for r in rows) == [0, 2, 3]
    for combination in spec.combinations[1:]:
        run_dir = tmp_path / "bench" / "trials" / combination.id / "seed-1"
        n = combination.settings["prune.params.n"]
        assert config.load(run_dir / "config.toml").prune.params == {"n": n}
        assert pruned_per_layer(run_dir) == [2 * n] * 4


# ---------------------------------------------------------------- the global random generators

@pytest.mark.parametrize("attr, generator", [
    ("uses_numpy_global", "numpy's global generator (np.random)"),
    ("uses_python_random", "python's random module"),
    ("uses_torch_global", "torch's global CPU generator"),
    ("reseeds_numpy", "numpy's global generator (np.random)"),
])
def test_an_operator_that_uses_a_global_generator_exits_2(tmp_path, tiny_overrides, user_module, capsys, attr,
                                                          generator):
    name = f"{user_module}:{attr}"
    code, err, _ = run(tmp_path, tiny_overrides + [f"prune.operator={name}", "prune.probability=1"], capsys)
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert f"pruning operator {name!r} used {generator}" in err and "draw from its rng argument" in err


def test_a_schedule_that_uses_a_global_generator_exits_2(tmp_path, tiny_overrides, user_module, capsys):
    name = f"{user_module}:random_schedule"
    code, err, _ = run(tmp_path, tiny_overrides + [f"prune.schedule={name}"], capsys)
    assert code == 2 and f"pruning schedule {name!r} used python's random module" in err
    assert "a schedule must be a pure function" in err
    assert not (tmp_path / "run").exists()  # the schedule is first called when the run is prepared


def test_the_watch_sees_every_kind_of_global_draw_and_nothing_else():
    from coevo.errors import OperatorError
    from coevo.registry import GlobalRandomWatch

    def moved(action) -> bool:
        watch = GlobalRandomWatch()
        action()
        try:
            watch.check("x", "y")
        except OperatorError:
            return True
        return False

    assert not moved(lambda: np.random.default_rng(0).random())  # a seeded generator of one's own is fine
    assert moved(np.random.normal) and moved(np.random.normal)  # the second uses numpy's cached gaussian
    assert moved(lambda: np.random.seed(7)) and moved(lambda: torch.manual_seed(7))
    previous = np.random.get_bit_generator()
    try:
        np.random.set_bit_generator(np.random.Philox(1))  # another global bit generator
        assert not moved(lambda: None) and moved(np.random.random)
    finally:
        np.random.set_bit_generator(previous)


# ---------------------------------------------------------------- a user's files named like packages

def coevo_cli(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    """The CLI in a fresh process, run from ``cwd`` with PYTHONPATH=. as the docs say."""
    env = {**os.environ, "PYTHONPATH": "."}
    return subprocess.run([sys.executable, "-m", "coevo", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


def test_a_users_operators_py_does_not_shadow_coevos_operators(tmp_path):
    (tmp_path / "operators.py").write_text('"""A user\'s own module named operators."""\nX = 1\n')
    result = coevo_cli(tmp_path, "operators")
    assert result.returncode == 0, result.stderr
    assert re.search(r"^  conjunctive +Lexicase", result.stdout, re.M)


def test_a_file_that_shadows_a_package_coevo_needs_exits_2_naming_it(tmp_path):
    (tmp_path / "deap.py").write_text("X = 1\n")
    result = coevo_cli(tmp_path, "operators")
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith(f"coevo: error: {tmp_path / 'deap.py'} shadows the package 'deap'")


def test_a_broken_coevo_operators_import_exits_2(monkeypatch, capsys):
    monkeypatch.delattr(coevo, "operators")
    monkeypatch.setitem(sys.modules, "coevo.operators", None)  # as if the package could not be found
    assert main(["operators"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "coevo's own module 'coevo.operators' cannot be imported" in err


# ---------------------------------------------------------------- the docs' examples

def readme_examples() -> tuple[dict[str, str], list[str]]:
    """The python and TOML blocks of docs/writing-operators.md that start with '# file: NAME', and
    the bash block that runs them."""
    section = WRITING.read_text()
    files = {}
    for block in re.findall(r"```(?:python|toml)\n(.*?)```", section, re.S):
        match = re.fullmatch(r"# file: ([\w.-]+)", block.splitlines()[0])
        if match:
            files[match.group(1)] = block
    commands = next(b for b in re.findall(r"```bash\n(.*?)```", section, re.S) if "coevo run" in b)
    return files, commands.splitlines()


def test_the_readme_operator_schedule_config_and_sweep_work_as_written(tmp_path, tiny_overrides, monkeypatch, capsys):
    files, commands = readme_examples()
    assert {"my_pruning.py", "my_schedules.py", "weak-sweep.toml", "weak.toml"} <= set(files)
    for name, source in files.items():
        (tmp_path / name).write_text(source)
    for module in ("my_pruning", "my_schedules"):
        monkeypatch.delitem(sys.modules, module, raising=False)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    run_command = next(c for c in commands if "coevo run " in c)
    words = run_command.split()
    assert words[:3] == ["PYTHONPATH=.", ".venv/bin/coevo", "run"]
    tiny = [o for o in tiny_overrides if not o.startswith("prune.")]  # the file's prune settings hold
    code = main([*words[2:], "--quiet", "--out", "run", *sets(tiny + ["prune.probability=1"])])
    assert code == 0, capsys.readouterr().err
    used = config.load(tmp_path / "run" / "config.toml").prune
    assert used.operator == "my_pruning:prune_weak" and used.schedule == "my_schedules:cosine"
    assert used.params == {"activity": 0.25}  # the --set over the file's 0.5
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["kept_fraction"] < 1
    cosine = schedules.registry.get("my_schedules:cosine")
    values = [cosine(t, 10, 0.5, 3) for t in range(11)]
    assert values[0] == 0 and values[-1] == pytest.approx(0.5) and values == sorted(values)
    # the sweep file: resolved (operator imported, parameters checked) as `coevo bench` would
    bench_command = next(c for c in commands if "coevo bench " in c)
    spec = bench_spec.load(tmp_path / bench_command.split()[3])
    assert [c.config["prune"]["params"] for c in spec.combinations] == [{"activity": a} for a in (0.0, 0.5, 1.0)]
    assert [bench_spec.matches(c.settings, spec.baseline) for c in spec.combinations] == [True, False, False]
    for module in ("my_pruning", "my_schedules"):
        monkeypatch.delitem(sys.modules, module, raising=False)


@pytest.mark.parametrize("patience, exhausted", [(1, "any"), (10_000, 0)])
def test_the_readme_stateful_operator_works_as_written(tmp_path, tiny_overrides, monkeypatch, capsys, patience,
                                                       exhausted):
    """flippy.py: flip counts, per-network memory and an event, in a user's operator."""
    files, _ = readme_examples()
    (tmp_path / "flippy.py").write_text(files["flippy.py"])
    monkeypatch.delitem(sys.modules, "flippy", raising=False)
    monkeypatch.syspath_prepend(str(tmp_path))
    overrides = tiny_overrides + ["prune.operator=flippy:prune_flippers", f"prune.params.patience={patience}",
                                  "prune.probability=1", "prune.amount=0.5", "prune.target_kept=0",
                                  "prune.reset_fraction=0"]  # kept 1.0 exactly when nothing is pruned
    assert main(["run", "--quiet", "--out", str(tmp_path / "run"), *sets(overrides)]) == 0, capsys.readouterr().err
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert exhausted == "any" or summary["exhausted_generation"] == exhausted  # none flipped 10,000 times
    assert (summary["kept_fraction"] < 1.0) == (patience == 1)  # flippers were found and pruned
    monkeypatch.delitem(sys.modules, "flippy", raising=False)
