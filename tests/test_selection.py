import random

import numpy as np
import pytest
from deap import tools

from coevo import config
from coevo.config import Config, SelectionConfig
from coevo.errors import ConfigError
from coevo.evolution.loop import make_toolbox, select_parents, solution_concept
from coevo.genome import Encoder

L = np.array([[[0.5, 0.1, 0.9],
               [0.2, 0.3, 0.4],
               [0.8, 0.7, 0.6]]])

# The best encoder's own partner is the worst decoder: rows (encoders) have best cases 0.1,
# 0.3, 0.4, so E0 wins; columns (decoders) have best cases 0.8, 0.5, 0.1, so D0 is the worst
# decoder and D2 the best.
BAD_PARTNER = np.array([[[0.9, 0.5, 0.1],
                         [0.8, 0.6, 0.3],
                         [0.9, 0.7, 0.4]]])


def test_solution_concepts_on_rows_and_columns():
    best_e, best_d = solution_concept(L, "best")
    assert best_e.tolist() == [[0.1, 0.2, 0.6]]
    assert best_d.tolist() == [[0.2, 0.1, 0.4]]
    worst_e, worst_d = solution_concept(L, "worst")
    assert worst_e.tolist() == [[0.9, 0.4, 0.8]]
    assert worst_d.tolist() == [[0.8, 0.7, 0.9]]
    mean_e, _ = solution_concept(L, "mean")
    assert np.allclose(mean_e, [[0.5, 0.3, 0.7]])


def test_full_tournament_picks_the_best_encoder_and_its_pair():
    # tournament as large as the sub-population and drawn many times: the best must win
    cfg = config.load(None, ["selection.tournament_size=30"])
    neighbours = np.array([[4, 7, 2]])
    enc_fit, dec_fit = solution_concept(L, "best")
    random.seed(0)
    enc_parents, dec_parents = select_parents(neighbours, enc_fit, dec_fit, make_toolbox(cfg), "encoder")
    assert enc_parents.tolist() == dec_parents.tolist() == [4]  # encoder 0 has best-case 0.1 -> the pair of cell 4
    enc_fit, dec_fit = solution_concept(L, "worst")
    enc_parents, dec_parents = select_parents(neighbours, enc_fit, dec_fit, make_toolbox(cfg), "encoder")
    assert enc_parents.tolist() == dec_parents.tolist() == [7]  # worst 0.4 lowest


def test_independent_pairing_selects_the_decoder_by_its_own_fitness():
    """The best encoder's partner is a bad decoder: "encoder" pairing trains it anyway,
    "independent" pairing picks the best decoder by column fitness and trains (E0, D2)."""
    toolbox = make_toolbox(config.load(None, ["selection.tournament_size=30"]))
    neighbours = np.array([[4, 7, 2]])
    enc_fit, dec_fit = solution_concept(BAD_PARTNER, "best")
    random.seed(0)
    assert [p.tolist() for p in select_parents(neighbours, enc_fit, dec_fit, toolbox, "encoder")] == [[4], [4]]
    assert [p.tolist() for p in select_parents(neighbours, enc_fit, dec_fit, toolbox, "independent")] == [[4], [2]]


def test_a_tournament_returns_the_fitter_of_its_draws_so_the_worst_wins_only_when_drawn_every_time():
    # DEAP's selTournament draws s aspirants with replacement (random.choice) and returns the
    # fittest: the unique worst of n wins only when all s draws are it, probability (1 / n)^s
    fitness = solution_concept(L, "best")[0]  # cells 0, 1, 2: 0.1, 0.2, 0.6 (lower is fitter)
    for size, n_draws in ((2, 3000), (3, 3000)):
        toolbox = make_toolbox(config.load(None, [f"selection.tournament_size={size}"]))
        random.seed(size)
        wins = []
        for _ in range(n_draws):
            state = random.getstate()
            wins.append(int(select_parents(np.array([[0, 1, 2]]), fitness, fitness, toolbox, "encoder")[0][0]))
            random.setstate(state)
            drawn = [random.randrange(3) for _ in range(size)]  # random.choice's draws over 3 handles
            assert wins[-1] == min(drawn, key=lambda cell: fitness[0, cell])
            assert (wins[-1] == 2) == (drawn == [2] * size)  # the worst only when it was every aspirant
        counts = np.bincount(wins, minlength=3)
        for cell, p in enumerate([1 - (2 / 3) ** size, (2 / 3) ** size - (1 / 3) ** size, (1 / 3) ** size]):
            sd = np.sqrt(n_draws * p * (1 - p))  # binomial: 5 standard deviations either way
            assert abs(counts[cell] - n_draws * p) < 5 * sd, (size, counts.tolist())


def test_independent_binary_tournament_on_decoders_follows_decoder_fitness():
    """Binary tournaments: decoders win in the order of their column fitness (D2 > D1 > D0),
    not their encoder's (E0 > E1 > E2)."""
    toolbox = make_toolbox(config.load(None, ["selection.tournament_size=2"]))
    enc_fit, dec_fit = solution_concept(BAD_PARTNER, "best")
    random.seed(1)
    picks = [select_parents(np.array([[0, 1, 2]]), enc_fit, dec_fit, toolbox, "independent") for _ in range(300)]
    enc_counts = np.bincount([e[0] for e, _ in picks], minlength=3)
    dec_counts = np.bincount([d[0] for _, d in picks], minlength=3)
    assert enc_counts[0] > enc_counts[1] > enc_counts[2]
    assert dec_counts[2] > dec_counts[1] > dec_counts[0]


def test_encoder_pairing_draws_what_it_always_drew():
    """Reproducibility across versions (and exact resume of older runs): "encoder" pairing
    draws one DEAP tournament per cell from python's random, nothing more."""
    toolbox = make_toolbox(config.load(None, ["selection.tournament_size=2"]))
    neighbours = np.array([[0, 1, 2], [1, 2, 0], [2, 0, 1]])
    fitness = np.random.default_rng(0).random((3, 3))
    random.seed("7:3")
    got, _ = select_parents(neighbours, fitness, fitness[:, ::-1], toolbox, "encoder")
    after = random.getstate()
    random.seed("7:3")
    want = []
    for k, row in enumerate(neighbours):
        handles = []
        for cell, value in zip(row, fitness[k]):
            ind = Encoder([], cell=int(cell))
            ind.fitness.values = (float(value),)
            handles.append(ind)
        want.append(tools.selTournament(handles, k=1, tournsize=2)[0].cell)
    assert got.tolist() == want and random.getstate() == after


def test_pairing_is_validated():
    assert config.load(None, ["selection.pairing=independent"]).selection.pairing == "independent"
    assert Config().selection.pairing == "encoder"
    with pytest.raises(ConfigError, match="selection.pairing"):
        config.load(None, ["selection.pairing=decoder"])
    with pytest.raises(ConfigError, match="selection.pairing = 'both' is not allowed"):
        config.validate(Config(selection=SelectionConfig(pairing="both")))
