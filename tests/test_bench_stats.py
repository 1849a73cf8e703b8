"""`coevo bench` statistics checked against scipy and hand computations on crafted data: A12,
paired and unpaired tests (ties and zero differences included), pairing by seed only where the
data match, the family of comparisons with Holm's correction, and the warning when the design
cannot reach significance."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
from scipy import stats

from coevo.bench import report as br


def test_a12_on_known_samples():
    assert br.a12([1, 2, 3], [1, 2, 3]) == 0.5
    assert br.a12([4, 5, 6], [1, 2, 3]) == 1.0
    assert br.a12([1, 2, 3], [4, 5, 6]) == 0.0
    # (1,1) tie 0.5, (1,3) 0, (2,1) 1, (2,3) 0 -> 1.5 / 4
    assert br.a12([1, 2], [1, 3]) == 0.375
    assert math.isnan(br.a12([], [1.0]))


def test_a12_is_mann_whitney_u_over_n1_n2():
    rng = np.random.default_rng(3)
    x, y = rng.integers(0, 5, 9).astype(float), rng.integers(0, 5, 7).astype(float)  # with ties
    assert br.a12(x, y) == pytest.approx(stats.mannwhitneyu(x, y).statistic / (len(x) * len(y)))


def test_paired_a12_is_the_share_of_seeds_where_a_wins():
    x, y = [1, 2, 3, 4], [0.5, 1.5, 2.5, 10]
    assert br.a12_paired(x, y) == 0.75  # A wins on 3 seeds of 4
    assert br.a12(x, y) == 9 / 16  # unpaired: 1 + 2 + 3 + 3 of the 16 cross pairs
    assert br.a12_paired([1, 2, 3], [1, 1, 4]) == 0.5  # a tie counts half: (0.5 + 1 + 0) / 3
    assert br.a12_paired(y, x) == 1 - br.a12_paired(x, y)
    assert math.isnan(br.a12_paired([], []))
    with pytest.raises(ValueError, match="matched samples"):
        br.a12_paired([1, 2], [1])


def test_the_report_gives_the_paired_a12_for_paired_comparisons(tmp_path):
    """Within a mode the comparison is paired: its A12 is 0.75 (0.25 seen from none, as the
    report's pairs table shows it), not the unpaired 0.56; across modes the unpaired A12 stays."""
    x, y = [1, 2, 3, 4], [0.5, 1.5, 2.5, 10]
    data = (rows("coevolution", "random", 1, dict(enumerate(x, 1))) + rows("coevolution", "none", 0, dict(enumerate(y, 1)))
            + rows("canonical", "none", 2, dict(enumerate(y, 1))))
    for r in data:
        r.update(loss="l1", generations=3, train_loss_mean=r["test_loss"], run_dir="nowhere")
    comparisons = br.compare_all(br.summarize(data, {"prune.operator": "none"}))
    lookup = {(c.a.mode, c.a.label, c.b.mode, c.b.label, c.measure): c for c in comparisons}
    within = next(c for k, c in lookup.items() if k[0] == k[2] == "coevolution" and k[4] == "test_loss")
    within = within.seen_from(next(g for g in (within.a, within.b) if g.label == "random"))
    assert within.paired and within.a12 == 0.75
    across = next(c for k, c in lookup.items() if k[0] != k[2] and k[4] == "test_loss"
                  and "random" in (k[1], k[3]))
    across = across.seen_from(next(g for g in (across.a, across.b) if g.label == "random"))
    assert not across.paired and across.a12 == 9 / 16

    out = tmp_path / "bench"
    out.mkdir()
    (out / br.ROWS).write_text("".join(json.dumps(r) + "\n" for r in data))
    text = br.write_report(out).read_text()
    pair_rows = [line for line in text.splitlines() if "| test L1 | Wilcoxon signed-rank |" in line]
    # A is the better ranked, none (median 2.0 against 2.5): 1 - 0.75, where unpaired gives 1 - 9/16 = 0.44
    assert len(pair_rows) == 1 and pair_rows[0].startswith("| none | random |")
    assert pair_rows[0].split(" | ")[6] == "0.25"
    assert "for paired comparisons (Wilcoxon signed-rank) A12 is the share of seeds where A > B, ties half" in text
    assert "For paired comparisons A12 is the share of seeds where A > B, ties half" in text


@pytest.mark.parametrize("x, y", [
    ([0.30, 0.31, 0.35, 0.29, 0.40, 0.33], [0.28, 0.32, 0.30, 0.25, 0.36, 0.31]),  # mixed signs
    ([1.0, 2.0, 3.0, 4.0], [0.0, 0.0, 0.0, 0.0]),                                  # all one sign
    ([5.0, 1.0, 7.0, 2.0, 9.0, 3.0, 8.0], [4.5, 1.2, 6.1, 2.3, 9.4, 2.6, 7.7]),
])
def test_wilcoxon_p_equals_scipy_without_ties(x, y):
    assert br.wilcoxon_p(x, y) == pytest.approx(stats.wilcoxon(x, y).pvalue, rel=1e-12)


def test_wilcoxon_p_with_many_pairs_and_a_zero_is_scipys_pratt_approximation():
    rng = np.random.default_rng(0)
    x = rng.normal(size=20)
    y = x - rng.normal(0.3, 1.0, size=20)
    y[4] = x[4]  # one zero difference: 2^20 flips is over the permutation limit
    assert br.wilcoxon_p(x, y) == pytest.approx(
        stats.wilcoxon(x, y, zero_method="pratt", method="approx").pvalue, rel=1e-12)


def test_permutation_p_values_equal_scipys_exact_ones_without_ties():
    rng = np.random.default_rng(1)
    for n in (5, 8, 11):
        d = rng.normal(0.2, 1.0, n)
        assert br.signed_rank_permutation_p(d) == pytest.approx(stats.wilcoxon(d, method="exact").pvalue)
        x, y = rng.normal(size=n), rng.normal(0.5, 1.0, size=n - 2)
        assert br.rank_sum_permutation_p(x, y) == pytest.approx(stats.mannwhitneyu(x, y, method="exact").pvalue)


def test_ties_and_zero_differences_get_exact_permutation_p_values():
    # four equal differences: the normal approximation says 0.046, but only 2 of the 16 sign
    # patterns are this extreme
    assert stats.wilcoxon([0.8] * 4, [1.0] * 4, method="approx").pvalue < 0.05
    assert br.wilcoxon_p([0.8] * 4, [1.0] * 4) == pytest.approx(0.125)
    # with a zero and a tie: against scipy's own permutation test of the Pratt statistic
    x = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    y = np.array([1.0, 1.5, 2.5, 3.0, 4.0, 6.5])

    def pratt(a, b, axis=-1):
        d = a - b
        ranks = stats.rankdata(np.abs(d), axis=axis)
        return np.sum(np.where(d > 0, ranks, 0.0), axis=axis)

    want = stats.permutation_test((x, y), pratt, permutation_type="samples", n_resamples=np.inf,
                                  vectorized=True).pvalue
    assert br.wilcoxon_p(x, y) == pytest.approx(want)
    # unpaired with ties, against scipy's permutation test of the rank sum
    a, b = np.array([1.0, 1.0, 2.0, 3.0, 3.0]), np.array([2.0, 3.0, 4.0, 4.0])
    want = stats.permutation_test((a, b), lambda u, v, axis=-1: stats.mannwhitneyu(u, v, axis=axis).statistic,
                                  n_resamples=np.inf, vectorized=True).pvalue
    assert br.mann_whitney_p(a, b) == pytest.approx(want)


def test_all_equal_samples_give_p_1_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert br.wilcoxon_p([1, 2, 3], [1, 2, 3]) == 1.0
        assert br.mann_whitney_p([0.5] * 3, [0.5] * 4) == 1.0
    assert math.isnan(br.wilcoxon_p([], []))


def test_smallest_attainable_p_is_what_scipy_gives_at_full_separation():
    assert br.smallest_p_paired(4) == 0.125 == stats.wilcoxon([1, 2, 3, 4]).pvalue
    assert br.smallest_p(4, 4) == pytest.approx(stats.mannwhitneyu([1, 2, 3, 4], [5, 6, 7, 8]).pvalue)
    assert br.smallest_p_paired(1) == 1.0
    # 12 comparisons need 2 / 2^n < 0.05 / 12: 2^n > 480
    assert br.trials_needed(paired=True, family=12) == 9
    # 3 comparisons need C(2n, n) > 120: C(8, 4) = 70, C(10, 5) = 252
    assert br.trials_needed(paired=False, family=3) == 5


def test_holm_matches_a_hand_computed_example():
    # sorted: 0.005 x4 = 0.02; 0.01 x3 = 0.03; 0.03 x2 = 0.06; 0.04 x1 = 0.04 -> monotone 0.06
    assert br.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    got = br.holm([0.5, math.nan, 0.4])
    assert got[0] == pytest.approx(0.8) and math.isnan(got[1]) and got[2] == pytest.approx(0.8)
    assert br.holm([0.9, 0.8]) == [1.0, 1.0]


def rows(mode: str, operator: str, index: int, losses: dict[int, float], kept: float = 1.0) -> list[dict]:
    return [{"combination": f"{mode}-{operator}", "label": operator, "mode": mode, "combination_index": index,
             "settings": {"run.mode": mode, "prune.operator": operator}, "seed": seed, "test_loss": loss,
             "kept_fraction": kept + 0.01 * seed if operator != "none" else 1.0}
            for seed, loss in losses.items()]


def grid(trials: int, operators: tuple[str, ...] = ("none", "random", "variance", "conjunctive"),
         modes: tuple[str, ...] = ("coevolution",)) -> list[dict]:
    rng = np.random.default_rng(trials)
    out: list[dict] = []
    for m, mode in enumerate(modes):
        for i, operator in enumerate(operators):
            out += rows(mode, operator, 10 * m + i, {s: float(rng.normal(0.3, 0.05)) for s in range(1, trials + 1)},
                        kept=0.5)
    return out


def test_same_mode_pairs_by_seed_on_shared_seeds_only():
    a_rows = rows("coevolution", "random", 1, {1: 0.9, 2: 0.1, 3: 0.25, 4: 0.33, 5: 0.41})
    b_rows = rows("coevolution", "none", 0, {2: 0.2, 3: 0.31, 4: 0.30, 5: 0.52, 6: 0.0})
    by_mode = br.summarize(a_rows + b_rows, {"prune.operator": "none"})
    none, random_ = sorted(by_mode["coevolution"], key=lambda g: g.index)
    c = br.compare(random_, none, "test_loss", matched=True)
    x, y = [0.1, 0.25, 0.33, 0.41], [0.2, 0.31, 0.30, 0.52]  # seeds 2-5
    assert c.paired and c.test == "Wilcoxon signed-rank" and (c.n_a, c.n_b) == (4, 4)
    assert c.p == pytest.approx(stats.wilcoxon(x, y).pvalue)
    assert c.difference == pytest.approx(np.median(np.subtract(x, y)))
    assert c.a12 == br.a12_paired(x, y) == 0.25  # only seed 4 has random above none; unpaired it would be 7/16
    flipped = c.seen_from(none)
    assert flipped.a is none and flipped.difference == -c.difference and flipped.a12 == 1 - c.a12


def test_unmatched_or_too_few_shared_seeds_fall_back_to_mann_whitney():
    a = rows("coevolution", "random", 1, {1: 0.1, 2: 0.2, 3: 0.3, 4: 0.35})
    b = rows("coevolution", "none", 0, {3: 0.4, 4: 0.5, 5: 0.6})  # two seeds in common
    by_mode = br.summarize(a + b, {"prune.operator": "none"})
    random_, none = by_mode["coevolution"]
    c = br.compare(random_, none, "test_loss", matched=True)
    assert not c.paired and c.test == "Mann-Whitney U" and (c.n_a, c.n_b) == (4, 3)
    assert c.p == pytest.approx(stats.mannwhitneyu([0.1, 0.2, 0.3, 0.35], [0.4, 0.5, 0.6]).pvalue)
    # Hodges-Lehmann: median of the 12 differences
    assert c.difference == pytest.approx(np.median(np.subtract.outer([0.1, 0.2, 0.3, 0.35], [0.4, 0.5, 0.6])))


def test_every_pair_on_both_measures_within_and_across_modes_with_holm_over_the_family():
    by_mode = br.summarize(grid(5, modes=("coevolution", "canonical")), {"prune.operator": "none"})
    comparisons = br.compare_all(by_mode)
    # within: 6 + 6 pairs; across: 4 x 4; two measures each
    assert len(comparisons) == (6 + 6 + 16) * 2
    assert {c.measure for c in comparisons} == {"test_loss", "kept_fraction"}
    pairs = {(c.a.id, c.b.id) for c in comparisons}
    ids = [g.id for gs in by_mode.values() for g in gs]
    assert all((a, b) in pairs or (b, a) in pairs for i, a in enumerate(ids) for b in ids[i + 1:])
    for c in comparisons:
        assert c.paired == (c.a.mode == c.b.mode)
        if not c.paired:
            assert (c.a.mode, c.b.mode) == ("coevolution", "canonical")
    assert [c.p_holm for c in comparisons] == pytest.approx(br.holm([c.p for c in comparisons]))


def test_warning_fires_for_4_combinations_x_4_trials_and_not_for_30_trials():
    # the example: 4 combinations x 4 trials; the old baseline-only Mann-Whitney check
    # saw 2 / C(8, 4) = 0.029 < 0.05 and stayed silent, though 3 comparisons x 0.029 = 0.086
    assert br.smallest_p(4, 4) < 0.05 < 3 * br.smallest_p(4, 4)
    comparisons = br.compare_all(br.summarize(grid(4), {"prune.operator": "none"}))
    warning = br.design_warning(comparisons)
    assert warning is not None
    assert "No comparison can reach Holm p < 0.05" in warning and "m = 12" in warning
    assert "About 9 trials per combination" in warning
    assert br.design_warning(br.compare_all(br.summarize(grid(30), {"prune.operator": "none"}))) is None


def test_warning_names_the_comparisons_that_cannot_pass_when_others_can():
    two = rows("canonical", "none", 20, {1: 0.4, 2: 0.5})
    comparisons = br.compare_all(br.summarize(grid(12, ("none", "random")) + two, {"prune.operator": "none"}))
    # 1 paired pair + 2 cross pairs, x 2 measures; Mann-Whitney on 12 + 2: 6 x 2 / C(14, 2) = 0.13
    warning = br.design_warning(comparisons)
    assert warning is not None and "of the m = 6 comparisons" in warning and "Mann-Whitney U, 12 + 2" in warning
    assert "Wilcoxon" not in warning


def with_data(data_rows: list[dict], **data) -> list[dict]:
    """The rows with a recorded data config (as coevo bench writes it) and the swept data keys in their settings."""
    for r in data_rows:
        r["data"] = {"source": "binary_clustering", "n_clusters": 10, "n_dims": 1000, **data}
        r["settings"] = {**r["settings"], **{f"data.{k}": v for k, v in data.items()}}
    return data_rows


def test_two_combinations_differing_in_data_n_dims_are_not_paired(tmp_path):
    """A sweep over data.n_dims: the same seed gives each combination other data, so the seeds are
    not pairs: Mann-Whitney U on all trials, and the report says why."""
    losses_a, losses_b = {1: 0.1, 2: 0.2, 3: 0.3, 4: 0.35}, {1: 0.4, 2: 0.5, 3: 0.6, 4: 0.7}
    a = with_data(rows("coevolution", "none", 0, losses_a), n_dims=200)
    b = with_data(rows("coevolution", "random", 1, losses_b), n_dims=1000)
    none, random_ = sorted(br.summarize(a + b, {"prune.operator": "none"})["coevolution"], key=lambda g: g.index)
    c = br.compare(none, random_, "test_loss", matched=True)
    assert not c.paired and c.test == "Mann-Whitney U" and c.pairing == "unpaired: data differ"
    assert c.p == pytest.approx(stats.mannwhitneyu(list(losses_a.values()), list(losses_b.values())).pvalue)
    assert c.a12 == br.a12(list(losses_a.values()), list(losses_b.values())) == 0.0
    assert br.data_difference({r["seed"]: r for r in a}, {r["seed"]: r for r in b}) == "seed 1 (data.n_dims: 200 against 1000)"

    text = report_of(tmp_path, a + b)
    (pair_row,) = [line for line in text.splitlines() if line.startswith("| none | random | test L1 |")]
    assert "| Mann-Whitney U | 4 + 4 |" in pair_row and pair_row.endswith("| unpaired: data differ |")
    assert "Wilcoxon signed-rank |" not in text


def test_two_combinations_with_identical_data_are_paired(tmp_path):
    losses_a, losses_b = {1: 0.1, 2: 0.2, 3: 0.3, 4: 0.35}, {1: 0.4, 2: 0.5, 3: 0.6, 4: 0.7}
    a = with_data(rows("coevolution", "none", 0, losses_a), n_dims=200)
    b = with_data(rows("coevolution", "random", 1, losses_b), n_dims=200)
    none, random_ = sorted(br.summarize(a + b, {"prune.operator": "none"})["coevolution"], key=lambda g: g.index)
    c = br.compare(none, random_, "test_loss", matched=True)
    assert c.paired and c.test == "Wilcoxon signed-rank" and c.pairing == "paired by seed" and c.n_a == 4
    assert c.p == pytest.approx(0.125)  # all four differences negative: 2 / 2^4
    (pair_row,) = [line for line in report_of(tmp_path, a + b).splitlines() if line.startswith("| none | random | test L1 |")]
    assert "| Wilcoxon signed-rank | 4 pairs |" in pair_row and pair_row.endswith("| paired by seed |")


def test_rows_without_a_recorded_data_config_take_it_from_their_run_directory(tmp_path):
    """Rows of an older bench carry no "data": the report reads each trial's config.toml, so two
    combinations whose [base]-level data differ (not in their settings) are still not paired."""
    from coevo import config

    data = rows("coevolution", "none", 0, {1: 0.1, 2: 0.2, 3: 0.3}) + rows("coevolution", "random", 1, {1: 0.4, 2: 0.5, 3: 0.6})
    out = tmp_path / "bench"
    for r in data:
        r["run_dir"] = f"trials/{r['combination']}/seed-{r['seed']}"
        (out / r["run_dir"]).mkdir(parents=True)
        n_dims = 200 if r["label"] == "none" else 300
        (out / r["run_dir"] / "config.toml").write_text(config.dumps(config.load(overrides=[f"data.n_dims={n_dims}"])))
    attached = br.attach_data(data, out)
    assert [r["data"]["n_dims"] for r in attached] == [200] * 3 + [300] * 3 and "data" not in data[0]
    by_mode = br.summarize(attached, {"prune.operator": "none"})
    assert {c.pairing for c in br.compare_all(by_mode)} == {"unpaired: data differ"}
    assert br.compare_all(br.summarize(data, {"prune.operator": "none"}))[0].pairing == "paired by seed"


def test_paired_comparison_refuses_seeds_whose_runs_had_different_data():
    x = {s: {"test_loss": 0.1 * s, "data": {"n_dims": 1000}} for s in (1, 2, 3)}
    y = {s: {"test_loss": 0.2 * s, "data": {"n_dims": 1000 if s < 3 else 200}} for s in (1, 2, 3)}
    with pytest.raises(br.UserError, match=r"seed 3 \(data.n_dims: 1000 against 200\)"):
        br.paired_comparison(x, y)
    y[3]["data"] = {"n_dims": 1000}
    assert br.paired_comparison(x, y)["wilcoxon_p"] == pytest.approx(0.25)


def report_of(tmp_path, data: list[dict]) -> str:
    for r in data:
        r.update(loss="l1", generations=3, train_loss_mean=r["test_loss"], run_dir="nowhere")
    out = tmp_path / "bench"
    out.mkdir()
    (out / br.ROWS).write_text("".join(json.dumps(r) + "\n" for r in data))
    return br.write_report(out).read_text()
