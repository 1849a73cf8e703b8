import random

import numpy as np

from coevo import config
from coevo.evolve import make_toolbox, select_parents, solution_concept

L = np.array([[[0.5, 0.1, 0.9],
               [0.2, 0.3, 0.4],
               [0.8, 0.7, 0.6]]])


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
    parents = select_parents(neighbours, enc_fit, dec_fit, make_toolbox(cfg))
    assert parents.tolist() == [4]  # encoder 0 has best-case 0.1 -> the pair of cell 4
    enc_fit, dec_fit = solution_concept(L, "worst")
    assert select_parents(neighbours, enc_fit, dec_fit, make_toolbox(cfg)).tolist() == [7]  # worst 0.4 lowest


def test_binary_tournament_never_picks_the_worst():
    cfg = config.load(None, ["selection.tournament_size=2"])
    enc_fit, dec_fit = solution_concept(L, "best")
    random.seed(1)
    wins = [select_parents(np.array([[0, 1, 2]]), enc_fit, dec_fit, make_toolbox(cfg))[0] for _ in range(300)]
    counts = np.bincount(wins, minlength=3)
    # P(win) for the best of 3 under binary tournament with replacement = 5/9, worst = 1/9
    assert counts[0] > counts[1] > counts[2]
