# Copyright 2025 The llave-hf Authors. Licensed under the Apache License, Version 2.0.
"""The MMEB benchmark's layout: its 36 evaluation datasets, their meta-tasks and IND/OOD split, and the paper's
aggregates (unweighted means of per-dataset Precision@1)."""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal, get_args


MetaTask = Literal["Classification", "VQA", "Retrieval", "Grounding"]
# In-distribution (datasets whose training split is in MMEB-train) or out-of-distribution.
Distribution = Literal["IND", "OOD"]
AggregateKey = Literal[MetaTask, Distribution, "Overall"]

MMEB_META_TASKS: tuple[MetaTask, ...] = get_args(MetaTask)
AGGREGATE_KEYS: tuple[AggregateKey, ...] = (*MMEB_META_TASKS, *get_args(Distribution), "Overall")
MMEB_HUB_ID = "TIGER-Lab/MMEB-eval"

# (meta-task, IND/OOD) -> MMEB-eval subset names, in the paper's order.
_MMEB_LAYOUT: dict[tuple[MetaTask, Distribution], tuple[str, ...]] = {
    ("Classification", "IND"): ("ImageNet-1K", "N24News", "HatefulMemes", "VOC2007", "SUN397"),
    ("Classification", "OOD"): ("Place365", "ImageNet-A", "ImageNet-R", "ObjectNet", "Country211"),
    ("VQA", "IND"): ("OK-VQA", "A-OKVQA", "DocVQA", "InfographicsVQA", "ChartQA", "Visual7W"),
    ("VQA", "OOD"): ("ScienceQA", "VizWiz", "GQA", "TextVQA"),
    ("Retrieval", "IND"): (
        "VisDial",
        "CIRR",
        "VisualNews_t2i",
        "VisualNews_i2t",
        "MSCOCO_t2i",
        "MSCOCO_i2t",
        "NIGHTS",
        "WebQA",
    ),  # fmt: skip
    ("Retrieval", "OOD"): ("FashionIQ", "Wiki-SS-NQ", "OVEN", "EDIS"),
    ("Grounding", "IND"): ("MSCOCO",),
    ("Grounding", "OOD"): ("RefCOCO", "RefCOCO-Matching", "Visual7W-Pointing"),
}
# The 36 MMEB-eval datasets: name -> (meta-task, "IND" or "OOD").
MMEB_DATASETS: dict[str, tuple[MetaTask, Distribution]] = {
    name: (meta_task, split) for (meta_task, split), names in _MMEB_LAYOUT.items() for name in names
}


def mmeb_order(names: Iterable[str]) -> list[str]:
    """MMEB datasets in the paper's order, then the others alphabetically."""
    rank = {name: i for i, name in enumerate(MMEB_DATASETS)}
    return sorted(names, key=lambda name: (rank.get(name, len(rank)), name))


@dataclass
class MMEBAggregate:
    """MMEB aggregates of per-dataset scores (see `aggregate_mmeb`).

    Attributes:
        means: mean score per aggregate (`AGGREGATE_KEYS`: each meta-task, IND, OOD, Overall); `None` for a group
            without any scored dataset.
        num_datasets: how many datasets each mean covers.
        other: scores of datasets outside MMEB, which enter no mean.
    """

    means: dict[AggregateKey, float | None]
    num_datasets: dict[AggregateKey, int]
    other: dict[str, float]

    @property
    def overall(self) -> float | None:
        return self.means["Overall"]

    def to_dict(self) -> dict:
        """The layout of `summary.json`: the means by key, then `num_datasets` and `other`."""
        return {**self.means, "num_datasets": dict(self.num_datasets), "other": dict(self.other)}


def aggregate_mmeb(scores: Mapping[str, float]) -> MMEBAggregate:
    """MMEB aggregates: unweighted means over the scored datasets of each meta-task, of IND, of OOD and overall.

    Datasets outside the 36 of MMEB (e.g. a custom "Emoji_t2i") never enter an aggregate: they are returned
    under `other` so that a partial or extended run cannot be mistaken for an MMEB number. Units are those of
    `scores` (fractions or percentages).
    """
    groups: dict[AggregateKey, list[float]] = {key: [] for key in AGGREGATE_KEYS}
    other = {}
    for name, score in scores.items():
        if name not in MMEB_DATASETS:
            other[name] = score
            continue
        meta_task, split = MMEB_DATASETS[name]
        for key in (meta_task, split, "Overall"):
            groups[key].append(score)
    return MMEBAggregate(
        means={key: (sum(values) / len(values) if values else None) for key, values in groups.items()},
        num_datasets={key: len(values) for key, values in groups.items()},
        other=other,
    )
