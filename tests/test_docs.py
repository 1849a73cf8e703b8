"""Every code block in README.md and docs/*.md that a user would run is run here (or by the test
named for it), on a tiny budget; a block that is not run says why, in a comment just above it:

    <!-- not run: REASON -->

- python blocks that start with ``# file: NAME`` are files a page asks the reader to save; the
  tests in FILE_BLOCKS write and use them (the operator examples: tests/test_plugins.py,
  tests/test_pruning_core.py, tests/test_seed_operators.py; make_rows.py: here).
- other python blocks are executed in a fresh directory that holds a tiny finished run at
  ``runs/quick`` (D = 1000, as the blocks assume), with ``run__generations=N`` cut to 2.
- bash blocks: every ``coevo`` line is run in-process with tiny settings appended
  (``coevo run``: TINY, 2 generations; ``resume --generations N``: 4), except ``coevo bench``,
  whose preset or spec is resolved (validated) but not swept: a sweep takes minutes. Lines of
  other programs are checked as PROGRAMS says.
- toml blocks parse; the configuration listing equals coevo's defaults, key for key; a bench
  spec loads.
"""

from __future__ import annotations

import ast
import io
import re
import runpy
import shlex
import shutil
import tomllib
from contextlib import redirect_stdout
from pathlib import Path

import pytest

from coevo import config
from coevo.bench import spec as bench_spec
from coevo.cli import main

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

TINY = ["run.generations=2", "run.checkpoint_every=1", "data.n_clusters=3", "data.rows_per_cluster=10",
        "data.n_dims=40", "model.hidden=[8]", "model.latent=3", "grid.cells=4"]

# files a page asks the reader to save, and the tests that write and run them
FILE_BLOCKS = {
    "my_taylor.py": "tests/test_pruning_core.py::test_the_readme_criterion_works_as_written",
    "my_pruning.py": "tests/test_plugins.py::test_the_readme_operator_schedule_config_and_sweep_work_as_written",
    "my_schedules.py": "tests/test_plugins.py::test_the_readme_operator_schedule_config_and_sweep_work_as_written",
    "weak.toml": "tests/test_plugins.py::test_the_readme_operator_schedule_config_and_sweep_work_as_written",
    "weak-sweep.toml": "tests/test_plugins.py::test_the_readme_operator_schedule_config_and_sweep_work_as_written",
    "flippy.py": "tests/test_plugins.py::test_the_readme_stateful_operator_works_as_written",
    "make_rows.py": "tests/test_docs.py::test_bash_blocks (docs/data.md)",
    "my_models.py": "tests/test_functional.py::test_the_models_page_factory_runs_as_written",
}
# programs other than coevo that bash blocks call, and what is checked of them
PROGRAMS = {
    "make": "not run: installs a virtualenv (CI runs `make install` and `make test` itself)",
    "pip": "not run: installs packages",
    "ray": "not run: starts a Ray cluster node",
    "tensorboard": "not run: a server",
    "python": "a script the page saved is run; a benchmarks/ script must exist (benchmarks are not tests)",
}


def blocks(path: Path) -> list[tuple[str, str, str | None, int]]:
    """(language, code, reason it is not run or None, line) of every fenced block of a page."""
    text = path.read_text()
    found = []
    for match in re.finditer(r"^( *)```(\w+)\n(.*?)^\1```", text, re.S | re.M):
        indent, lang, code = match.groups()
        code = "\n".join(line[len(indent):] for line in code.splitlines()) + "\n"
        before = text[:match.start()].rstrip().splitlines()[-1:] or [""]
        skip = re.fullmatch(r"<!-- not run: (.+) -->", before[0].strip())
        found.append((lang, code, skip.group(1) if skip else None, text[:match.start()].count("\n") + 1))
    return found


def all_blocks(lang: str):
    return [pytest.param(p, code, skip, id=f"{p.name}:{line}")
            for p in PAGES for (kind, code, skip, line) in blocks(p) if kind == lang]


def file_name(code: str) -> str | None:
    match = re.fullmatch(r"# file: ([\w.-]+)", code.splitlines()[0])
    return match.group(1) if match else None


def test_every_block_has_a_known_language_and_every_skip_a_reason():
    for page in PAGES:
        for lang, code, skip, line in blocks(page):
            assert lang in {"bash", "python", "toml"}, f"{page.name}:{line}: a {lang} block: teach tests/test_docs.py"
            assert skip is None or len(skip) > 10, f"{page.name}:{line}: say why the block is not run"


def test_every_saved_file_is_used_by_a_test():
    names = {file_name(code) for p in PAGES for (lang, code, _, _) in blocks(p) if lang != "bash"} - {None}
    assert names <= set(FILE_BLOCKS), f"no test uses {sorted(names - set(FILE_BLOCKS))}: add one and list it"
    for name, test in FILE_BLOCKS.items():
        assert (ROOT / test.split("::")[0]).exists(), test
        assert name in names, f"{name} is no longer in the docs: drop it from FILE_BLOCKS"


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """A finished tiny run at D = 1000, exported, as the docs' python blocks expect at runs/quick."""
    root = tmp_path_factory.mktemp("quick")
    sets = [x for o in [*TINY, "data.n_dims=1000"] for x in ("--set", o)]
    assert main(["run", "--quiet", "--out", str(root / "runs" / "quick"), *sets]) == 0
    with redirect_stdout(io.StringIO()):
        assert main(["export", str(root / "runs" / "quick")]) == 0
    return root


@pytest.mark.parametrize("page, code, skip", all_blocks("python"))
def test_python_blocks(page, code, skip, quick_run, tmp_path, monkeypatch, capsys):
    if skip or file_name(code):
        return  # not run (reason in the page) or a saved file, run by the test FILE_BLOCKS names
    for item in ("runs/quick",):
        (tmp_path / item).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / item).symlink_to(quick_run / item)
    monkeypatch.chdir(tmp_path)
    ast.parse(code)
    exec(compile(re.sub(r"run__generations=\d+", "run__generations=2", code), f"{page.name}", "exec"), {})


@pytest.mark.parametrize("page, code, skip", all_blocks("toml"))
def test_toml_blocks(page, code, skip, tmp_path):
    data = tomllib.loads(code)
    if skip or file_name(code):
        return
    if "run" in data and "prune" in data:  # the configuration listing: every key, at its default
        assert config.from_dict(data) == config.Config(), "the listing and coevo's defaults differ"
        for section, values in data.items():
            known = {f for f in getattr(config.Config(), section).__dataclass_fields__}
            assert set(values) == known, f"[{section}]: listed {sorted(set(values) ^ known)} wrongly"
    elif "name" in data and ("combination" in data or "sweep" in data):  # a bench spec
        (tmp_path / "spec.toml").write_text(code)
        bench_spec.load(tmp_path / "spec.toml")


def commands(code: str) -> list[list[str]]:
    """The command lines of a bash block, continuations joined, comments and env settings dropped."""
    lines = []
    for line in code.replace("\\\n", " ").splitlines():
        words = shlex.split(line, comments=True)
        while words and re.fullmatch(r"\w+=\S*", words[0]):
            words = words[1:]
        if words:
            lines.append(words)
    return lines


def run_coevo(args: list[str], cwd: Path, count: list[int]) -> None:
    command = args[0]
    if command == "run":
        if "--out" not in args:
            count[0] += 1
            args = [*args, "--out", f"run-{count[0]}"]
        args = [*args, "--quiet", *[x for o in TINY for x in ("--set", o)]]
    elif command == "resume" and "--generations" in args:
        i = args.index("--generations")
        args = [*args[:i + 1], "4", *args[i + 2:]]
    elif command == "bench":  # resolve the preset or spec; a sweep takes minutes
        preset = args[args.index("--preset") + 1] if "--preset" in args else None
        if "--report" in args:
            return
        spec = next((a for a in args[1:] if a.endswith(".toml")), None)
        if spec and not (cwd / spec).exists():
            return  # the reader's own spec (my-sweep.toml), not one a page saved
        bench_spec.load(cwd / spec if spec else None, preset)
        return
    with redirect_stdout(io.StringIO()):
        try:
            code = main(args)
        except SystemExit as exc:  # --version
            code = exc.code
    assert code == 0, f"coevo {' '.join(args)}"


@pytest.mark.parametrize("page, code, skip", all_blocks("bash"))
def test_bash_blocks(page, code, skip, quick_run, tmp_path, monkeypatch):
    if skip:
        return
    if "runs/quick" in code and "--out runs/quick" not in code:  # a block that reads a finished run
        shutil.copytree(quick_run / "runs" / "quick", tmp_path / "runs" / "quick")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    for lang, other, _, _ in blocks(page):  # the files this page asks the reader to save
        if lang != "bash" and file_name(other):
            (tmp_path / file_name(other)).write_text(other)
    (tmp_path / "my.toml").write_text("[run]\nseed = 2\n")  # the reader's own config file
    count = [0]
    for words in commands(code):
        program = Path(words[0]).name
        if program == "coevo":
            run_coevo(words[1:], tmp_path, count)
        elif program.startswith("python"):
            script = words[1]
            if (tmp_path / script).exists():
                runpy.run_path(str(tmp_path / script), run_name="__main__")
            else:
                assert (ROOT / script).exists(), f"{page.name}: {script} does not exist"
        elif program == ".":
            continue  # activating a virtualenv
        else:
            assert program in PROGRAMS, f"{page.name}: `{' '.join(words)}`: teach tests/test_docs.py about it"


def test_the_architecture_page_lists_every_module():
    text = (ROOT / "docs" / "architecture.md").read_text()
    for folder in ("coevo", "operators"):  # a module as its path under the folder: `evolution/loop.py`
        for module in sorted((ROOT / folder).rglob("*.py")):
            if module.name != "__init__.py" and "__pycache__" not in module.parts:
                name = module.relative_to(ROOT / folder).as_posix()
                assert f"`{name}`" in text, f"docs/architecture.md does not list {folder}/{name}"
    for package in sorted(p for p in (ROOT / "coevo").rglob("*") if (p / "__init__.py").exists()):
        name = package.relative_to(ROOT / "coevo").as_posix()
        assert f"`{name}/`" in text, f"docs/architecture.md does not list the subpackage coevo/{name}/"


def test_the_readme_fits_two_screens():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 250
