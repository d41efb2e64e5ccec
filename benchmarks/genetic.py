"""The genetic search of YOLOv5's ``train.py --evolve`` and Ultralytics' ``Tuner``, as a baseline.

Rules, as both implement them (YOLOv5 ``train.py``, the ``if opt.evolve`` branch;
``ultralytics/engine/tuner.py``, ``Tuner._mutate``):

* the first trial trains the base hyps as they are;
* afterwards the parents are the top ``n = min(5, trials so far)`` by fitness, and one parent
  is picked at random with weights ``fitness - min(fitness) + 1e-6`` (``parent='single'``);
* the child multiplies every key by its own factor
  ``v = (g * (r < mp) * N(0, 1) * U(0, 1) * s + 1).clip(0.3, 3.0)`` (one ``U(0, 1)`` scalar for
  the whole vector) with mutation probability ``mp = 0.8``, sigma ``s = 0.2`` and gain ``g = 1``
  except momentum's 0.3 (both tools' tables), redrawn until some factor differs from 1;
* the child is clipped to each key's bounds and rounded with ``round(x, 5)`` (five decimals,
  whatever the tools' comment "significant digits" says);
* every trial trains to the end (no pruning), and ``freeze`` is not among the keys.

Adapted: the generator is seeded (the tools seed with the clock); ``step`` keys are snapped and
``int`` keys rounded so children lie in the space the other methods search; a child that equals
its parent once constrained is drawn again (the tools' ``while all(v == 1)`` means to prevent
that; a duplicate would only waste a trial, so this favours the GA). A key at 0 stays at 0
under multiplicative mutation; that is the rule, kept as it is. Ultralytics releases after 8.3
changed ``_mutate`` (crossover of the top 9, log-normal factors); the classic rule here is what
YOLOv5 still runs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

N_PARENTS = 5
# mutation gains that differ from 1 in YOLOv5's `meta` and Ultralytics' default space
GAINS = {"momentum": 0.3}
MAX_DRAWS = 1000  # draws of a child before accepting one equal to its parent
MUTATION_PROB = 0.8
SIGMA = 0.2


@dataclass(frozen=True)
class Gene:
    """One evolved key: bounds, and how its values are snapped.

    Attributes:
        low: Lower bound.
        high: Upper bound.
        step: Grid of the key (values are snapped to ``low + k * step``), or None.
        is_int: Integer key.
    """

    low: float
    high: float
    step: float | None = None
    is_int: bool = False


def round_decimals(value: float, decimals: int = 5) -> float:
    """``round(value, 5)``, as both tools round a child."""
    return round(value, decimals) if math.isfinite(value) else value


def constrain(genes: Mapping[str, Gene], hyp: Mapping[str, float]) -> dict[str, float]:
    """Clip each key to its bounds, snap steps and integers, round to 5 digits."""
    out: dict[str, float] = {}
    for key, gene in genes.items():
        value = min(max(float(hyp[key]), gene.low), gene.high)
        if gene.step:
            value = gene.low + round((value - gene.low) / gene.step) * gene.step
            value = min(max(value, gene.low), gene.high)
        value = round_decimals(value)
        out[key] = int(round(value)) if gene.is_int else value
    return out


def select_parent(
    population: Sequence[tuple[Mapping[str, float], float]], rng: np.random.Generator
) -> Mapping[str, float]:
    """Pick one of the top :data:`N_PARENTS` by fitness, weighted by ``fitness - min + 1e-6``.

    Args:
        population: ``(hyp, fitness)`` of every finished trial; higher fitness is better.
        rng: The search's random generator.
    """
    ranked = sorted(population, key=lambda item: item[1], reverse=True)[:N_PARENTS]
    fitness = np.array([f for _, f in ranked], dtype=float)
    weights = fitness - fitness.min() + 1e-6
    index = rng.choice(len(ranked), p=weights / weights.sum())
    return ranked[int(index)][0]


def mutate(
    genes: Mapping[str, Gene], parent: Mapping[str, float], rng: np.random.Generator
) -> dict[str, float]:
    """A child of ``parent``: every key times its own random factor, then constrained."""
    n_genes = len(genes)
    gains = np.array([GAINS.get(key, 1.0) for key in genes])
    target = constrain(genes, parent)
    for _ in range(MAX_DRAWS):
        factors = np.ones(n_genes)
        while np.all(factors == 1):  # the tools' loop: some key must move
            factors = (
                gains
                * (rng.random(n_genes) < MUTATION_PROB)
                * rng.standard_normal(n_genes)
                * rng.random()
                * SIGMA
                + 1
            ).clip(0.3, 3.0)
        child = constrain(
            genes, {key: float(parent[key]) * factor for key, factor in zip(genes, factors)}
        )
        if child != target:  # moved by less than a step or pinned at a bound: draw again
            break
    return child


class GeneticSearch:
    """Ask/tell interface: ``ask()`` a hyp (the base first), ``tell(hyp, fitness)``.

    Args:
        genes: The evolved keys.
        base: Their starting values (the first trial).
        seed: Seeds the generator.
    """

    def __init__(self, genes: Mapping[str, Gene], base: Mapping[str, float], seed: int) -> None:
        self.genes = dict(genes)
        self.base = constrain(genes, base)
        self.rng = np.random.default_rng(seed)
        self.population: list[tuple[dict[str, float], float]] = []

    def ask(self) -> dict[str, float]:
        """The next hyp to train."""
        if not self.population:
            return dict(self.base)
        return mutate(self.genes, select_parent(self.population, self.rng), self.rng)

    def tell(self, hyp: Mapping[str, float], fitness: float) -> None:
        """Record a finished trial (a failed one should be told with the worst fitness)."""
        self.population.append((dict(hyp), float(fitness)))
