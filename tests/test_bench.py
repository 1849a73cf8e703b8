"""`coevo bench`: spec validation, a tiny sweep end to end, resuming, statistics and ranking."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from coevo import bench, config, runner
from coevo.bench import report as bench_report
from coevo.bench import spec as bench_spec
from coevo.cli import main
from coevo.errors import ConfigError

TINY_SPEC = """
name = "tiny"
trials = 2
generations = 2

[base.run]
checkpoint_every = 1
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
schedule = "fixed"

[[combination]]
operator = "none"

[[combination]]
operator = "random"
"""


def write_spec(tmp_path: Path, text: str = TINY_SPEC, name: str = "tiny.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def bench_cli(args: list[str], capsys) -> tuple[int, str, str]:
    code = main(["bench", *args])
    out, err = capsys.readouterr()
    return code, out, err


def rows_of(out: Path) -> list[dict]:
    return bench_report.read_rows(out / bench_report.ROWS)


@dataclass
class InProcessExecutor(bench.LocalExecutor):
    """Trials in the test's process, so that the patches of the runner below see them."""

    in_process: bool = True


@pytest.fixture
def counted(monkeypatch):
    """Count the trials that start from scratch or resume, still running them (in this process)."""
    calls = {"start": [], "resume": []}
    start, resume = runner.start, runner.resume

    def counting_start(config, out=None, quiet=False, **kwargs):
        calls["start"].append(Path(out))
        return start(config, out, quiet, **kwargs)

    def counting_resume(run_dir, generations=None, quiet=False, **kwargs):
        calls["resume"].append(Path(run_dir))
        return resume(run_dir, generations, quiet, **kwargs)

    monkeypatch.setattr(runner, "start", counting_start)
    monkeypatch.setattr(runner, "resume", counting_resume)
    monkeypatch.setattr(bench, "LocalExecutor", InProcessExecutor)
    return calls


@pytest.mark.parametrize("edit, fragment", [
    (lambda s: s.replace('name = "tiny"', 'name = "tiny"\ntrails = 3'), "spec key 'trails' is unknown"),
    (lambda s: s.replace('operator = "random"', 'operator = "magic"'), "prune.operator = 'magic' is unknown"),
    (lambda s: s.replace("trials = 2", "trials = 0"), "spec key trials must be an integer >= 1, got 0"),
    (lambda s: s.replace('operator = "random"', 'operator = "random"\nprune.probabilty = 0.2'),
     "combination 2: unknown key prune.probabilty"),
    (lambda s: s.replace("n_dims = 40", "n_dimz = 40"), "base: unknown key data.n_dimz"),
    (lambda s: s.replace('name = "tiny"', 'name = "tiny"\nbaseline = { prune.amount = 0.1 }'),
     "baseline key prune.amount does not vary"),
    (lambda s: s.replace('name = "tiny"', 'name = "tiny"\nbaseline = { operator = "variance" }'),
     "matches no combination"),
    (lambda s: s + '\n[[combination]]\noperator = "none"\n', "combination 3 repeats combination 1"),
    (lambda s: s + '\n[sweep]\n"train.batch_size" = 5\n', "sweep.train.batch_size must be a non-empty list"),
    (lambda s: s.replace('name = "tiny"', 'name = "tiny"\npurpose = "final"'),
     'spec key purpose must be "tuning" or "headline" (or left out), got \'final\''),
])
def test_bad_specs_exit_2_and_write_nothing(tmp_path, capsys, edit, fragment):
    spec = write_spec(tmp_path, edit(TINY_SPEC))
    out = tmp_path / "out"
    code, _, err = bench_cli([str(spec), "--out", str(out), "--jobs", "1", "--quiet"], capsys)
    assert code == 2
    assert err.startswith("coevo: error: ") and err.count("\n") == 1
    assert fragment in err
    assert not out.exists()


def test_preset_and_spec_are_exclusive_and_presets_parse(tmp_path, capsys):
    code, _, err = bench_cli([str(write_spec(tmp_path)), "--preset", "quick"], capsys)
    assert code == 2 and "one of the two" in err
    code, _, err = bench_cli(["--preset", "nope"], capsys)
    assert code == 2 and "quick" in err and "paper" in err
    paper = bench_spec.load(preset="paper-sweep")
    assert paper.name == "paper-sweep" and (paper.trials, paper.base["run"]["generations"]) == (30, 400)
    assert len(paper.combinations) == 16 and {c.mode for c in paper.combinations} == {"coevolution", "canonical"}
    # the semantics are an axis: each of the paper's 8 combinations under paper and reference semantics
    by_semantics = {}
    for c in paper.combinations:
        by_semantics.setdefault(c.config["prune"]["regrow"], []).append(c)
    assert sorted(map(len, by_semantics.values())) == [8, 8]
    reference = [c for c in by_semantics[True] if c.mode == "coevolution"]
    assert all(c.config["run"]["update"] == "asynchronous" and c.config["train"]["fresh_optimizer_each_batch"]
               for c in reference)
    assert all(not c.config["train"]["fresh_optimizer_each_batch"] for c in by_semantics[True] if c.mode == "canonical")
    quick = bench_spec.load(preset="quick")
    assert {c.settings["prune.operator"] for c in quick.combinations} == {"none", "random", "variance", "conjunctive"}


def test_run_and_bench_presets_do_not_share_a_name_and_the_old_paper_name_still_loads(capsys):
    assert not set(config.presets()) & set(bench_spec.presets())
    with pytest.warns(DeprecationWarning, match="'paper' is now 'paper-sweep'"):
        old = bench_spec.load(preset="paper")
    assert old.name == "paper-sweep" and len(old.combinations) == 16
    assert bench_spec.renamed_notice("paper-sweep") is None


def test_coevo_operators_lists_the_bench_presets(capsys):
    assert main(["operators"]) == 0
    out = capsys.readouterr().out.split("bench presets (coevo bench --preset NAME):\n", 1)[1]
    listed = [line.split()[0] for line in out.splitlines()]
    assert listed == bench_spec.presets() and "paper-sweep" in listed
    assert all(len(line.split(maxsplit=1)) == 2 for line in out.splitlines())  # a description on each line


class NoTrials:
    """An executor that runs nothing: a sweep's checks and messages without its trials."""

    def run(self, trials, out):
        return iter(())


def test_a_headline_spec_on_tuning_seeds_warns_in_one_line_on_stderr(tmp_path, capsys):
    headline = bench_spec.parse(TINY_SPEC.replace("trials = 2", 'trials = 5\npurpose = "headline"'))
    assert headline.purpose == "headline" and list(headline.seeds) == [1, 2, 3, 4, 5]
    tuning = bench_spec.tuning_specs()  # run from the checkout: its benchmarks/specs are known
    assert tuning["benchmarks/specs/levers.toml"] == range(1, 6) and "benchmarks/specs/pairing.toml" in tuning
    assert not any(where.startswith("benchmarks/specs/compression") for where in tuning)  # headline specs
    bench.run(headline, tmp_path / "out", jobs=1, quiet=True, executor=NoTrials())
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("coevo bench: warning: headline spec 'tiny' runs seeds 1-5, which tuning specs used (")
    assert "benchmarks/specs/levers.toml" in err and "seed_start = 101, trials = 10: seeds 101-110" in err
    partial = bench_spec.parse(TINY_SPEC.replace("trials = 2", 'trials = 5\nseed_start = 4\npurpose = "headline"'))
    assert "runs seeds 4-5, which tuning specs used (mine)" in bench_spec.seed_overlap_warning(partial, {"mine": range(1, 6)})


def test_held_out_headline_seeds_and_specs_not_marked_headline_do_not_warn(tmp_path, capsys):
    held_out = bench_spec.parse(TINY_SPEC.replace("trials = 2", 'trials = 10\nseed_start = 101\npurpose = "headline"'))
    assert list(held_out.seeds) == list(range(101, 111)) and bench_spec.seed_overlap_warning(held_out) is None
    bench.run(held_out, tmp_path / "out", jobs=1, quiet=True, executor=NoTrials())
    assert capsys.readouterr().err == ""
    for text in (TINY_SPEC, TINY_SPEC.replace("trials = 2", 'trials = 5\npurpose = "tuning"')):
        assert bench_spec.seed_overlap_warning(bench_spec.parse(text), {"mine": range(1, 6)}) is None
    # the shipped headline presets are marked so, and the purpose survives the resolved spec.toml
    for preset in ("compression", "front"):
        spec = bench_spec.load(preset=preset)
        assert spec.purpose == "headline" and bench_spec.parse(spec.dumps(), resolve=False).purpose == "headline"
    assert bench_spec.parse(TINY_SPEC).purpose is None


def test_every_spec_of_the_checkout_parses_and_says_whether_it_tunes_or_reports():
    specs = sorted(Path(__file__).resolve().parents[1].joinpath("benchmarks", "specs").glob("*.toml"))
    purposes = {path.name: bench_spec.parse(path.read_text(), source=str(path), resolve=False).purpose for path in specs}
    assert set(purposes.values()) <= set(bench_spec.PURPOSES), purposes
    assert {name for name, purpose in purposes.items() if purpose == "tuning"} >= {"levers.toml", "pairing.toml"}


def test_spec_round_trips_through_its_resolved_toml():
    spec = bench_spec.parse(TINY_SPEC + '\n[sweep]\n"train.learning_rate" = [0.001, 0.01]\n')
    assert len(spec.combinations) == 4 and len(spec.expand()) == 8
    again = bench_spec.parse(spec.dumps())
    assert again.identity() == spec.identity()
    assert [c.id for c in again.combinations] == [c.id for c in spec.combinations]
    assert [t.seed for t in spec.expand()[:2]] == [1, 2]
    labels = [c.label for c in spec.combinations]
    assert labels[0] == "none (train.learning_rate=0.001)" and labels[3] == "random + fixed (train.learning_rate=0.01)"


def test_tiny_sweep_end_to_end_then_resume_skips_and_reruns_crashed(tmp_path, capsys, counted):
    spec = write_spec(tmp_path)
    out = tmp_path / "out"
    code, stdout, _ = bench_cli([str(spec), "--out", str(out), "--jobs", "1", "--quiet"], capsys)
    assert code == 0, stdout
    rows = rows_of(out)
    assert len(rows) == 4 and len(counted["start"]) == 4
    assert {(r["operator"], r["seed"]) for r in rows} == {("none", 1), ("none", 2), ("random", 1), ("random", 2)}
    for row in rows:
        for key in ("combination", "mode", "schedule", "test_loss", "validation_loss", "train_loss",
                    "kept_fraction", "kept_fraction_encoder", "kept_fraction_decoder", "wall_seconds"):
            assert row[key] is not None
        summary = json.loads((out / row["run_dir"] / "summary.json").read_text())
        assert summary["seed"] == row["seed"] and summary["test_loss"] == row["test_loss"]
        # the data config the report pairs on: what the trial's config.toml holds
        assert row["data"] == config.to_dict(config.load(out / row["run_dir"] / "config.toml"))["data"]
        assert summary["generations"] == 2
    assert {r["kept_fraction"] for r in rows if r["operator"] == "none"} == {1.0}
    report = (out / "report.md").read_text()
    assert "## coevolution" in report and "## All pairs" in report and "A12" in report and "Holm" in report
    # two trials: too few shared seeds for the signed-rank test, so Mann-Whitney U on all trials
    assert "| test L1 | Mann-Whitney U | 2 + 2 |" in report and "Wilcoxon signed-rank |" not in report
    assert "| 1 |" in report and "baseline" in report
    figures = {p.name for p in (out / "figures").iterdir()}
    assert figures >= {"box_test_loss.png", "box_kept.png", "curves_coevolution.png", "pareto.png"}
    assert (out / "spec.toml").exists()

    # the same command again runs nothing
    counted["start"].clear()
    code, stdout, _ = bench_cli([str(spec), "--out", str(out), "--jobs", "1", "--quiet"], capsys)
    assert code == 0 and "0 trials run, 4 already done" in stdout
    assert counted["start"] == [] and counted["resume"] == [] and len(rows_of(out)) == 4

    # a crash: one trial died before its first checkpoint, another after some, and the last row
    # was cut off half-written
    lines = (out / bench_report.ROWS).read_text().splitlines()
    keep, lost = lines[:1], [json.loads(x) for x in lines[1:]]
    (out / bench_report.ROWS).write_text("\n".join(keep) + "\n" + lines[1][:30])
    fresh, resumed, finished = (out / r["run_dir"] for r in lost)
    for path in (fresh / "summary.json", resumed / "summary.json", *fresh.glob("checkpoints/*")):
        path.unlink()
    code, stdout, _ = bench_cli([str(spec), "--out", str(out), "--jobs", "1", "--quiet"], capsys)
    assert code == 0 and "3 trials run, 1 already done" in stdout
    assert counted["start"] == [fresh] and counted["resume"] == [resumed]  # `finished` only needed its row
    rows = rows_of(out)
    assert sorted((r["combination"], r["seed"]) for r in rows) == sorted(
        (r["combination"], r["seed"]) for r in [json.loads(keep[0]), *lost])
    assert (fresh / "summary.json").exists() and finished.exists()


def test_a_different_spec_is_refused_and_more_trials_extend(tmp_path, capsys, counted):
    out = tmp_path / "out"
    one = TINY_SPEC.replace("trials = 2", "trials = 1").replace("generations = 2", "generations = 1")
    assert bench_cli([str(write_spec(tmp_path, one)), "--out", str(out), "--jobs", "1", "--quiet"], capsys)[0] == 0
    before = (out / "spec.toml").read_text()
    code, _, err = bench_cli([str(write_spec(tmp_path, one.replace("cells = 4", "cells = 5"))), "--out", str(out)],
                             capsys)
    assert code == 2 and "differs at base.grid.cells: 4 there, 5 here" in err
    assert (out / "spec.toml").read_text() == before and len(rows_of(out)) == 2
    counted["start"].clear()
    more = one.replace("trials = 1", "trials = 2")
    assert bench_cli([str(write_spec(tmp_path, more)), "--out", str(out), "--jobs", "1", "--quiet"], capsys)[0] == 0
    assert sorted(p.name for p in counted["start"]) == ["seed-2", "seed-2"] and len(rows_of(out)) == 4
    code, stdout, _ = bench_cli(["--report", str(out)], capsys)
    assert code == 0 and "report.md" in stdout


def synthetic_rows() -> list[dict]:
    def rows(index: int, operator: str, losses: list[float], kept: float, mode: str = "coevolution") -> list[dict]:
        return [{"combination": f"{mode}-{operator}", "label": operator, "mode": mode, "combination_index": index,
                 "settings": {"run.mode": mode, "prune.operator": operator, "prune.schedule": "fixed"},
                 "seed": seed, "trial": seed - 1, "test_loss": loss, "kept_fraction": kept, "train_loss_mean": loss,
                 "generations": 10, "loss": "l1", "run_dir": f"trials/{mode}-{operator}/seed-{seed}"}
                for seed, loss in enumerate(losses, 1)]

    return (rows(0, "none", [0.30, 0.31, 0.32, 0.33], 1.0) + rows(1, "random", [0.10, 0.11, 0.12, 0.13], 0.8)
            + rows(2, "variance", [0.31, 0.32, 0.33, 0.34], 0.9) + rows(3, "conjunctive", [0.31, 0.32, 0.33, 0.34], 0.7)
            + rows(4, "none", [0.5, 0.6], 1.0, mode="canonical"))


def test_report_ranks_leads_with_the_best_and_tests_every_pair(tmp_path):
    by_mode = bench_report.summarize(synthetic_rows(), {"prune.operator": "none"})
    coevo = by_mode["coevolution"]
    # rank by median test loss; conjunctive and variance tie on loss, the smaller kept fraction wins
    assert [g.label for g in coevo] == ["random", "none", "conjunctive", "variance"]
    assert coevo[0].baseline is coevo[1] and coevo[1].is_baseline
    assert by_mode["canonical"][0].is_baseline
    comparisons = bench_report.compare_all(by_mode)
    assert len(comparisons) == (6 + 4) * 2  # 4 coevolution combinations: 6 pairs; 4 x 1 across modes
    best = bench_report.Lookup(comparisons).get(coevo[0], coevo[1], "test_loss")
    assert best.paired and best.n_a == 4 and best.p == pytest.approx(0.125)  # all 4 differences negative
    assert best.difference == pytest.approx(-0.2) and best.a12 == 0.0

    out = tmp_path / "bench"
    out.mkdir()
    (out / bench_report.ROWS).write_text("".join(json.dumps(r) + "\n" for r in synthetic_rows()))
    text = bench_report.write_report(out).read_text()
    lines = text.splitlines()
    # each mode opens with its best combination, against the baseline (here also the runner-up)
    coevo_at = lines.index("## coevolution")
    assert lines[coevo_at + 2].startswith("**Best: random**")
    assert any(line.startswith("| baseline, runner-up: none | −0.2 | 0.00 | 1 |") for line in lines)
    assert "**Best: none**" in text and "It is the baseline." in text
    ranked = [line for line in lines if line.startswith("| ") and line[2].isdigit()]
    assert [line.split(" | ")[1] for line in ranked] == ["random", "none", "conjunctive", "variance", "none"]
    assert "0.1150 [0.1075–0.1225]" in ranked[0] and "| baseline |" in ranked[1]
    pair_rows = lines[lines.index("## All pairs"):lines.index("## Statistics")]
    pair_rows = [line for line in pair_rows if line.startswith("| ") and not line.startswith("| A |")]
    assert len(pair_rows) == 20
    assert pair_rows[0].startswith("| random | none | test L1 | Wilcoxon signed-rank | 4 pairs | −0.2 | 0.00 "
                                   "| 0.125 |")
    assert any(line.startswith("| coevolution: random | canonical: none | test L1 | Mann-Whitney U | 4 + 2 |")
               for line in pair_rows)
    assert "## Best of each mode" in text
    assert "Too few trials for significance" in text and "m = 20" in text
    assert "no curves" in text  # rows only: the run directories are not there
    assert (out / "figures" / "pareto.png").exists()


def test_report_shows_the_mask_kept_fraction_when_rows_have_it(tmp_path):
    rows = synthetic_rows()
    for row in rows:
        row["mask_kept_fraction"] = row["kept_fraction"] + 0.05 if row["label"] != "none" else 1.0
    out = tmp_path / "bench"
    out.mkdir()
    (out / bench_report.ROWS).write_text("".join(json.dumps(r) + "\n" for r in rows))
    text = bench_report.write_report(out).read_text()
    assert "mask kept median [Q1–Q3]" in text and "| 0.850 [0.850–0.850] |" in text


def test_pareto_front():
    assert sorted(bench_report.pareto_front([(0.1, 0.9), (0.2, 0.5), (0.3, 0.6), (0.15, 0.95), (0.4, 0.4)])) == [0, 1, 4]


def _echo_trial(config: dict, run_dir: str) -> dict:
    if config["run"]["seed"] == 2:
        raise RuntimeError("trial failed")
    return {"test_loss": config["run"]["seed"] / 10, "run_dir": run_dir}


def test_local_executor_runs_trials_in_spawned_processes(tmp_path):
    spec = bench_spec.parse(TINY_SPEC.replace("trials = 2", "trials = 3"))
    trials = [t for t in spec.expand() if t.combination.settings["prune.operator"] == "none"]
    results = dict((t.seed, r) for t, r in bench.LocalExecutor(jobs=2, task=_echo_trial).run(trials, tmp_path))
    assert results[1]["test_loss"] == 0.1 and results[3]["run_dir"].endswith("seed-3")
    assert isinstance(results[2], RuntimeError)


def test_a_failed_trial_writes_no_row_and_is_reported(tmp_path):
    def fake(config: dict, run_dir: str) -> dict:
        if config["run"]["seed"] == 2:
            raise RuntimeError("diverged")
        return {"test_loss": 0.2, "validation_loss": 0.2, "train_loss": 0.2, "kept_fraction": 1.0, "loss": "l1"}

    spec = bench_spec.parse(TINY_SPEC)
    outcome = bench.run(spec, tmp_path / "out", quiet=True,
                        executor=bench.LocalExecutor(1, task=fake, in_process=True))
    assert outcome.ran == 2 and [t.seed for t, _ in outcome.failed] == [2, 2]
    assert {r["seed"] for r in rows_of(tmp_path / "out")} == {1}
    assert "2 failed" in bench.format_outcome(outcome)
    failures = bench.format_failures(outcome)
    assert len(failures) == 2 and all("RuntimeError: diverged" in line and "re-run" in line for line in failures)
    assert failures[0].startswith("coevo: error: trial ") and "seed-2" in failures[0]
    assert outcome.report is not None and outcome.report.exists()


def test_named_combinations_and_presets_in_a_spec(tmp_path):
    spec = bench_spec.parse("""
name = "semantics"
trials = 2
baseline = { preset = "paper" }
[sweep]
"prune.amount" = [0.1, 0.2]
[[combination]]
name = "as the paper"
preset = "paper"
[[combination]]
name = "as the reference"
preset = "reference"
prune.probability = 0.25
""", resolve=False)
    labels = [c.label for c in spec.combinations]
    assert labels == ["as the paper (prune.amount=0.1)", "as the paper (prune.amount=0.2)",
                      "as the reference (prune.amount=0.1)", "as the reference (prune.amount=0.2)"]
    ref = spec.combinations[3]
    assert ref.config["prune"]["regrow"] and ref.config["run"]["update"] == "asynchronous"
    assert ref.config["prune"]["probability"] == 0.25 and ref.config["prune"]["amount"] == 0.2  # the table wins
    assert ref.settings["preset"] == "reference" and "/" not in ref.id and " " not in ref.id
    with pytest.raises(ConfigError, match="--preset 'nope' is unknown"):
        bench_spec.parse('trials = 1\n[[combination]]\npreset = "nope"\n', resolve=False)


def _die_once(config: dict, run_dir: str) -> dict:
    """Run the trial, but SIGKILL this worker the first time (or, with COEVO_TEST_ALWAYS, every
    time) it starts the trial named by COEVO_TEST_VICTIM, after taking the trial's lock as a
    real trial does; every attempt is counted in COEVO_TEST_ATTEMPTS."""
    import os
    import signal

    from coevo.rundir import lock

    attempts = Path(os.environ["COEVO_TEST_ATTEMPTS"]) / run_dir.replace("/", "_")
    with open(attempts, "a") as fh:
        fh.write(f"{os.getpid()}\n")
    if run_dir.endswith(os.environ["COEVO_TEST_VICTIM"]):
        if os.environ.get("COEVO_TEST_ALWAYS") or len(attempts.read_text().split()) == 1:
            with lock.hold(run_dir):
                os.kill(os.getpid(), signal.SIGKILL)
    return bench.execute_trial(config, run_dir)


def test_a_local_worker_killed_mid_sweep_costs_a_retry_and_no_row(tmp_path, monkeypatch):
    """A pool worker SIGKILLed while it holds a trial (the out-of-memory killer, say) breaks the
    process pool: its trials run again in a fresh pool, and every row is as a clean sweep's."""
    spec = bench_spec.parse(TINY_SPEC)
    victim = spec.expand()[2].run_dir
    (tmp_path / "attempts").mkdir()
    monkeypatch.setenv("COEVO_TEST_ATTEMPTS", str(tmp_path / "attempts"))
    monkeypatch.setenv("COEVO_TEST_VICTIM", str(victim))
    outcome = bench.run(spec, tmp_path / "bench", quiet=True, executor=bench.LocalExecutor(2, task=_die_once))
    assert outcome.ran == 4 and not outcome.failed
    tries = {p.name: p.read_text().split() for p in (tmp_path / "attempts").iterdir()}
    assert len(tries[str(tmp_path / "bench" / victim).replace("/", "_")]) == 2
    clean = bench.run(spec, tmp_path / "clean", quiet=True, executor=bench.LocalExecutor(1))
    assert clean.ran == 4

    def stable(out: Path) -> list[dict]:
        rows = bench_report.read_rows(out / bench_report.ROWS)
        return sorted(({k: v for k, v in r.items() if k not in ("seconds_per_generation", "wall_seconds")}
                       for r in rows), key=lambda r: (r["combination_index"], r["seed"]))

    got, want = stable(tmp_path / "bench"), stable(tmp_path / "clean")
    assert [r.keys() for r in got] == [r.keys() for r in want]
    for a, b in zip(got, want):
        for key in a:
            assert a[key] == (pytest.approx(b[key], rel=1e-6) if isinstance(a[key], float) else b[key]), key


def test_a_trial_that_always_kills_its_worker_fails_after_its_retries(tmp_path, monkeypatch):
    spec = bench_spec.parse(TINY_SPEC)
    victim = spec.expand()[0].run_dir
    (tmp_path / "attempts").mkdir()
    monkeypatch.setenv("COEVO_TEST_ATTEMPTS", str(tmp_path / "attempts"))
    monkeypatch.setenv("COEVO_TEST_VICTIM", str(victim))
    monkeypatch.setenv("COEVO_TEST_ALWAYS", "1")
    outcome = bench.run(spec, tmp_path / "bench", quiet=True,
                        executor=bench.LocalExecutor(2, task=_die_once, retries=2))
    failed = {t.run_dir: exc for t, exc in outcome.failed}
    assert victim in failed and "died in each of 3 tries" in str(failed[victim])
    tries = (tmp_path / "attempts" / str(tmp_path / "bench" / victim).replace("/", "_")).read_text().split()
    assert len(tries) == 3
    assert {r["run_dir"] for r in rows_of(tmp_path / "bench")} <= {str(t.run_dir) for t in spec.expand()} - {str(victim)}
