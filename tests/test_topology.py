import numpy as np

from coevo.evolution import topology


def test_ring_radius_one():
    n = topology.ring(5, 1)
    assert n.tolist() == [[0, 4, 1], [1, 0, 2], [2, 1, 3], [3, 2, 4], [4, 3, 0]]


def test_ring_radius_two_wraps():
    n = topology.ring(6, 2)
    assert n[0].tolist() == [0, 5, 1, 4, 2]
    assert all(sorted(row) == sorted(set(row)) for row in n.tolist())


def test_torus_von_neumann():
    n = topology.torus(3, 4, 1, "von_neumann")
    assert n.shape == (12, 5)
    # cell 0 at (0,0): up (2,0)=8, left (0,3)=3, right (0,1)=1, down (1,0)=4
    assert n[0, 0] == 0 and sorted(n[0, 1:].tolist()) == [1, 3, 4, 8]
    # cell 5 at (1,1)
    assert sorted(n[5, 1:].tolist()) == [1, 4, 6, 9]


def test_torus_moore():
    n = topology.torus(4, 4, 1, "moore")
    assert n.shape == (16, 9)
    assert sorted(n[5].tolist()) == [0, 1, 2, 4, 5, 6, 8, 9, 10]
    assert sorted(n[0].tolist()) == sorted([0, 1, 3, 4, 5, 7, 12, 13, 15])


def test_von_neumann_radius_two_is_a_diamond():
    n = topology.torus(5, 5, 2, "von_neumann")
    assert n.shape == (25, 13)
    assert np.all(n[:, 0] == np.arange(25))
