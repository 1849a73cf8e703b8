"""Multi-objective coevolution: reconstruction against size, and the run's Pareto front.

With ``selection.objectives = ["loss", "kept"]`` a genome's fitness is two values to minimise:
its loss (the solution concept over the neighbourhood, as with one objective) and the live kept
fraction of its cell's pair. Selection in a neighbourhood is a tournament by NSGA-II's crowded
comparison (non-dominated rank first, then crowding distance; DEAP's ``sortNondominated`` and
``assignCrowdingDist``), so a pair that is smaller and no worse wins, and a pair that is neither
survives where it is alone on the trade-off.

One objective alone cannot spread the grid over sizes: every cell would prune on the same
schedule. So the cells prune towards a ladder of sizes, from ``prune.target_kept`` (cell 0) to
``selection.largest_kept`` (the last cell), spaced geometrically; the schedule still says when.
Which pair sits on which rung is up to selection: a pair may move to a cell that prunes it
further, and a small pair that reconstructs as well as a large one may take its place.

The front is an archive, DEAP's ``tools.ParetoFront``, of the centre pairs the run measured, by
validation loss and live kept fraction: the non-dominated pairs over the whole run, not only the
last generation's, truncated by NSGA-II's crowding distance to at most ``MAX_POINTS`` (so once it
is full, a non-dominated pair in a crowded stretch may be dropped). It is checkpointed with the
run, so a resume continues it exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
from deap import base, creator, tools
from deap.tools.emo import assignCrowdingDist

from coevo.config import Config
from coevo.population import Stack
from coevo.genome import Layout

OBJECTIVES = (("loss",), ("loss", "kept"))
"""The objective lists a run may select on."""

MAX_POINTS = 64
"""The front keeps at most this many pairs: beyond it, the point of smallest NSGA-II crowding
distance (``assignCrowdingDist``, recomputed after each removal) goes, so the archive and the
checkpoints stay small while its ends (infinite distance) are kept. The archive is then the
non-dominated set truncated by crowding distance to this many points, not every non-dominated pair."""

if not hasattr(creator, "FrontFitness"):
    creator.create("FrontFitness", base.Fitness, weights=(-1.0, -1.0))
if not hasattr(creator, "FrontIndividual"):
    creator.create("FrontIndividual", list, fitness=creator.FrontFitness)
FrontIndividual = creator.FrontIndividual


def multi_objective(config: Config) -> bool:
    """Whether the run selects on size as well as loss."""
    return "kept" in config.selection.objectives


def kept_ladder(config: Config, n_cells: int) -> np.ndarray:
    """Each cell's kept target in a multi-objective run: geometric from ``prune.target_kept``
    (cell 0) to ``selection.largest_kept`` (the last cell), so the grid spans the trade-off."""
    low, high = config.prune.target_kept, config.selection.largest_kept
    if n_cells == 1:
        return np.array([low])
    return low * (high / low) ** (np.arange(n_cells) / (n_cells - 1))


def handle(cell: int, loss: float, kept: float) -> FrontIndividual:
    """A DEAP individual for selection: it names its cell and carries (loss, kept)."""
    ind = FrontIndividual()
    ind.cell = cell
    ind.fitness.values = (float(loss), float(kept))
    return ind


def sel_crowded_tournament(individuals: Sequence, k: int, tournsize: int) -> list:
    """DEAP-style tournament by NSGA-II's crowded comparison: each of ``k`` winners is the best of
    ``tournsize`` aspirants drawn with ``random.choice`` (as ``tools.selTournament`` draws), by
    lower non-dominated rank, then larger crowding distance; a tie goes to the first drawn."""
    individuals = list(individuals)
    rank = {}
    for r, front in enumerate(tools.sortNondominated(individuals, len(individuals))):
        assignCrowdingDist(front)
        for ind in front:
            rank[id(ind)] = r
    chosen = []
    for _ in range(k):
        aspirants = tools.selRandom(individuals, tournsize)
        chosen.append(min(aspirants, key=lambda ind: (rank[id(ind)], -ind.fitness.crowding_dist)))
    return chosen


@dataclass
class Point:
    """One pair of the front as written to front.pt and summary.json."""

    generation: int
    cell: int
    validation_loss: float
    kept_fraction: float


def _similar(a: FrontIndividual, b: FrontIndividual) -> bool:
    return a.fitness.values == b.fitness.values


class Front:
    """The run's archive of non-dominated pairs by (validation loss, live kept fraction),
    truncated by crowding distance to ``MAX_POINTS``."""

    def __init__(self) -> None:
        self.archive = tools.ParetoFront(similar=_similar)

    def __len__(self) -> int:
        return len(self.archive)

    def values(self) -> np.ndarray:
        """(points, 2): each point's validation loss and kept fraction."""
        return np.array([ind.fitness.values for ind in self.archive], dtype=np.float64).reshape(-1, 2)

    def update(self, generation: int, validation: np.ndarray, kept: np.ndarray,
               centres: Callable[[], tuple[Stack, Stack]]) -> int:
        """Offer this generation's centres; ``centres()`` is called only if one may enter. Returns
        how many entered."""
        have = self.values()
        offered = [k for k in range(len(validation))
                   if not np.any((have[:, 0] <= validation[k]) & (have[:, 1] <= kept[k]))]
        if not offered:
            return 0
        enc, dec = centres()
        candidates = []
        for k in offered:
            ind = handle(k, validation[k], kept[k])
            ind.generation = generation
            ind.pair = {"encoder": {"params": enc.params[k].detach().cpu().clone(),
                                    "mask": enc.mask[k].detach().cpu().clone()},
                        "decoder": {"params": dec.params[k].detach().cpu().clone(),
                                    "mask": dec.mask[k].detach().cpu().clone()}}
            candidates.append(ind)
        # Keep the old members alive while counting: ParetoFront.update deep-copies the entrants,
        # and a copy could otherwise reuse the id() of an old member it pushed out.
        old_members = list(self.archive)
        before = {id(ind) for ind in old_members}
        self.archive.update(candidates)
        entered = sum(id(ind) not in before for ind in self.archive)
        del old_members
        self._truncate()
        return entered

    def _truncate(self) -> None:
        while len(self.archive) > MAX_POINTS:
            members = list(self.archive)
            assignCrowdingDist(members)
            # the most crowded point; the ends (infinite distance) stay
            worst = min(range(len(members)), key=lambda i: (members[i].fitness.crowding_dist, i))
            self.archive.remove(worst)

    def points(self) -> list[tuple[Point, dict]]:
        """The front by kept fraction, smallest first: each point and its pair's tensors."""
        rows = [(Point(int(ind.generation), int(ind.cell), float(ind.fitness.values[0]),
                       float(ind.fitness.values[1])), ind.pair) for ind in self.archive]
        return sorted(rows, key=lambda row: (row[0].kept_fraction, row[0].validation_loss))

    def to_dict(self) -> list[dict]:
        """What a checkpoint stores: every point with its pair, in archive order."""
        return [{"generation": int(ind.generation), "cell": int(ind.cell), "values": tuple(ind.fitness.values),
                 "pair": ind.pair} for ind in self.archive]

    @classmethod
    def from_dict(cls, saved: list[dict]) -> "Front":
        front = cls()
        for entry in saved:
            ind = handle(entry["cell"], *entry["values"])
            ind.generation = entry["generation"]
            ind.pair = entry["pair"]
            front.archive.insert(ind)
        return front


def pair_stacks(pairs: Sequence[dict], enc_layout: Layout, dec_layout: Layout,
                device: str | torch.device = "cpu") -> tuple[Stack, Stack]:
    """The front's pairs as an encoder and a decoder stack (no optimizer state), to measure them."""
    def stack(role: str, layout: Layout) -> Stack:
        s = Stack.fresh(layout, torch.stack([p[role]["params"] for p in pairs]), device=str(device))
        s.mask.copy_(torch.stack([p[role]["mask"] for p in pairs]))
        return s

    return stack("encoder", enc_layout), stack("decoder", dec_layout)
