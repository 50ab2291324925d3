# Copyright 2026 The llave-hf authors. Licensed under the Apache License, Version 2.0.
"""
The emoji demo's experiment grid and its statistics: which losses and batches stage 2 fine-tunes with, over which
seeds, and how the runs of a cell are summarised (mean ± standard deviation over seeds, paired differences with a
95% t interval).

Seeds pair runs: two cells trained with the same seed start from the same stage-1 model and draw the same random
batches (mined batches: the same mining, shuffled alike), so their difference removes what the seed alone does.
"""

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Literal


class Batches(str, Enum):
    """How stage 2 forms its batches: `RANDOM` (grouped by query modality and length only) or `MINED` (B3 batch
    mining from the stage-1 model's embeddings: `llave-train --batch_mining`)."""

    RANDOM = "random"
    MINED = "mined"


@dataclass(frozen=True)
class Loss:
    """A loss of the grid: `llave-train` options of the same names, and what the report calls it."""

    name: str
    loss_alpha: float
    loss_hardness_normalization: Literal["none", "mean"]
    loss_alpha_warmup_steps: int
    description: str

    def options(self) -> dict[str, object]:
        return {
            "loss_alpha": self.loss_alpha,
            "loss_hardness_normalization": self.loss_hardness_normalization,
            "loss_alpha_warmup_steps": self.loss_alpha_warmup_steps,
        }


# α warm-up over the first fifth of stage 2's 500 steps.
ALPHA_WARMUP_STEPS = 100

LOSSES = {
    loss.name: loss
    for loss in (
        Loss("infonce", 0.0, "none", 0, "InfoNCE (α = 0)"),
        Loss("hardness", 9.0, "none", 0, "α = 9, unnormalised weights (released LLaVE)"),
        Loss("hardness-mean", 9.0, "mean", 0, "α = 9, weights normalised to mean 1"),
        Loss("hardness-warmup", 9.0, "none", ALPHA_WARMUP_STEPS, f"α = 9 reached over {ALPHA_WARMUP_STEPS} steps"),
    )
}
BASELINE = LOSSES["infonce"]


@dataclass(frozen=True)
class Cell:
    """One cell of the grid: a loss with a way of forming batches."""

    loss: Loss
    batches: Batches

    @property
    def name(self) -> str:
        return f"{self.loss.name}-{self.batches.value}"

    def options(self) -> dict[str, object]:
        """Its `llave-train` options."""
        return {**self.loss.options(), "batch_mining": self.batches is Batches.MINED}


@dataclass(frozen=True)
class Grid:
    """The cells and seeds stage 2 trains (every cell once per seed)."""

    losses: tuple[str, ...]
    batches: tuple[Batches, ...]
    seeds: tuple[int, ...]

    @property
    def cells(self) -> list[Cell]:
        return [Cell(LOSSES[loss], batches) for batches in self.batches for loss in self.losses]

    def left_out(self, full: "Grid") -> list[str]:
        """What `full` trains and this grid does not, in words."""
        missing = {
            "losses": [loss for loss in full.losses if loss not in self.losses],
            "batches": [batches.value for batches in full.batches if batches not in self.batches],
            "seeds": [str(seed) for seed in full.seeds if seed not in self.seeds],
        }
        return [f"{label} {', '.join(values)}" for label, values in missing.items() if values]


# `make demo-full`: every loss of the question on random and mined batches, three seeds each (24 runs).
FULL_GRID = Grid(tuple(LOSSES), (Batches.RANDOM, Batches.MINED), (0, 1, 2))
# `make demo`: InfoNCE and the released loss on both kinds of batches, one seed (4 runs, under 10 minutes on 2 cores).
QUICK_GRID = Grid(("infonce", "hardness"), (Batches.RANDOM, Batches.MINED), (0,))


# ----------------------------------------------------------------------------------------------------------------
# statistics over seeds


def t_quantile_975(degrees_of_freedom: int) -> float:
    """The 97.5% quantile of Student's t distribution (a two-sided 95% interval), from scipy."""
    from scipy.stats import t

    return float(t.ppf(0.975, degrees_of_freedom))


@dataclass(frozen=True)
class Spread:
    """Mean and sample standard deviation (ddof 1; None for a single value) of a quantity over seeds."""

    mean: float
    sd: float | None
    n: int

    @classmethod
    def of(cls, values: Iterable[float]) -> "Spread":
        values = list(values)
        if not values:
            raise ValueError("No values to summarise.")
        return cls(statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None, len(values))


@dataclass(frozen=True)
class PairedDifference:
    """The mean over seeds of `a - b` for runs paired by seed, with its 95% t interval (None below two seeds).

    The interval covers what varies with the seed (the batch order, and the mining's shuffle); every run shares the
    stage-1 start and the held-out queries."""

    mean: float
    low: float | None
    high: float | None
    n: int

    @classmethod
    def of(cls, a: Sequence[float], b: Sequence[float]) -> "PairedDifference":
        if len(a) != len(b) or not a:
            raise ValueError(f"Paired differences need as many values on each side, got {len(a)} and {len(b)}.")
        differences = [x - y for x, y in zip(a, b)]
        mean = statistics.fmean(differences)
        if len(differences) < 2:
            return cls(mean, None, None, 1)
        half_width = t_quantile_975(len(differences) - 1) * statistics.stdev(differences) / math.sqrt(len(differences))
        return cls(mean, mean - half_width, mean + half_width, len(differences))

    @property
    def outcome(self) -> Literal["higher", "lower", "within noise", "one seed"]:
        """Whether the interval lies above 0, below it, or spans it."""
        if self.low is None:
            return "one seed"
        if self.low > 0:
            return "higher"
        if self.high < 0:
            return "lower"
        return "within noise"
