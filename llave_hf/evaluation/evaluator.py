# Copyright 2025 The llave-hf Authors. Licensed under the Apache License, Version 2.0.
"""`MMEBEvaluator`: encodes each dataset's distinct items, scores every query against its own candidates, and keeps
one result file per dataset so that an interrupted run resumes where it stopped."""

import functools
import hashlib
import os
from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np
import torch
from accelerate import PartialState
from accelerate.utils import broadcast_object_list, gather, gather_object
from tqdm.auto import tqdm
from transformers.integrations import is_deepspeed_zero3_enabled
from transformers.utils import logging

from ..metrics import ground_truth_ranks, rank_metrics, similarity_stats, split_positive_negative
from .data import (
    DataSource,
    PreparedDataset,
    is_local_folder,
    load_rows,
    prepare_dataset,
    resolve_dataset_names,
    source_id,
)
from .mmeb import MMEB_DATASETS
from .report import format_summary, save_similarity_histogram
from .results import DatasetCounts, DatasetResult, EvaluationResults, RunSignature, SimilarityStats


logger = logging.get_logger(__name__)


def _model_id(model) -> str:
    """The model in a run signature: its checkpoint path or Hub id, else a hash of its config."""
    owner = getattr(model, "__self__", model)  # a bound `model.encode`
    config = getattr(owner, "config", None)
    if config is None:
        # A bare encode callable: its name is all there is to tell it apart.
        return getattr(owner, "__qualname__", type(owner).__qualname__)
    if config.name_or_path:
        return source_id(config.name_or_path)
    # Built in memory, never saved: the config is the closest thing to an identity (same config, same id).
    return "config sha256:" + hashlib.sha256(config.to_json_string(use_diff=False).encode()).hexdigest()[:16]


# Values read from each weight tensor for its fingerprint: every one of a small tensor, evenly spaced ones of a large.
_FINGERPRINT_VALUES_PER_TENSOR = 1 << 14


def _weights_fingerprint(model) -> str | None:
    """A fingerprint of the weights in memory, `None` for a bare encode callable.

    A checkpoint path says nothing of what is in it now: weights retrained at the same path, or trained in memory
    since loading (an evaluator during training), must not reuse stored scores. Hashing whole files would read
    15 GB for a 7B model; instead each parameter contributes its name, dtype, shape and up to 16,384 evenly spaced
    raw values (all of them for smaller tensors): a few MB in all, copied from the device in one small transfer per
    tensor. Training moves essentially every value of every trained tensor, so any training step changes it; the
    bytes are hashed exactly, so the same weights give the same fingerprint on any device. A model of another dtype
    is another fingerprint. Parameters without local values (ZeRO-3 partitions, weights offloaded to the meta
    device) contribute only their name, dtype and shape.
    """
    owner = getattr(model, "__self__", model)  # a bound `model.encode`
    if not isinstance(owner, torch.nn.Module):
        return None
    digest = hashlib.sha256()
    with torch.no_grad():
        for name, parameter in owner.named_parameters():
            digest.update(f"{name}|{parameter.dtype}|{tuple(parameter.shape)}|".encode())
            if parameter.numel() == 0 or parameter.is_meta:
                continue
            flat = parameter.detach().reshape(-1)
            step = max(1, flat.numel() // _FINGERPRINT_VALUES_PER_TENSOR)
            values = flat[::step][:_FINGERPRINT_VALUES_PER_TENSOR].contiguous().cpu()
            digest.update(values.view(torch.uint8).numpy().tobytes())
    return "sha256:" + digest.hexdigest()[:16]


def _encode_function(model, processor=None) -> Callable:
    if hasattr(model, "encode"):
        return functools.partial(model.encode, processor=processor) if processor is not None else model.encode
    if callable(model) and not isinstance(model, torch.nn.Module):
        return model
    raise TypeError(f"Expected a model with `encode` or an encode callable, got {type(model).__name__}.")


def process_state() -> PartialState:
    """accelerate's state of this process (shared with an `Accelerator` already made): several processes under
    `accelerate launch` or `torchrun`, on GPUs or, on a machine without one, on CPUs (gloo)."""
    return PartialState(cpu=not torch.cuda.is_available())


class MMEBEvaluator:
    r"""
    Scores an embedding model on datasets in MMEB-eval format: columns `qry_text`, `qry_img_path`, `tgt_text`
    (list) and `tgt_img_path` (parallel list), ground truth at index 0 of each candidate list. Texts keep the MMEB
    `<|image_1|>` placeholder (the processor swaps it); an empty text or image path means "no text"/"no image".

    Every distinct (text, image) item of a dataset, query or candidate, is encoded once. Each query is scored by
    cosine against its own candidate list; candidates identical to the ground truth (same text and image) are
    dropped from that list, as they are the same answer. Ties are broken pessimistically (see
    `llave_hf.metrics`). Each dataset is fully validated before any of it is encoded.

    The model only needs an `encode(texts=..., images=..., batch_size=..., show_progress_bar=False)` method returning
    one embedding per item (as `LlaveEmbeddingModel.encode` does), or can be such a callable itself, so any
    embedding model, and fake encoders in tests, can be scored.

    Args:
        data (`str` or `Mapping`): a local folder holding `<Name>.parquet` or `<Name>.jsonl` per dataset; a Hub
            dataset id loaded as `load_dataset(data, <Name>, split=split)` (e.g. "TIGER-Lab/MMEB-eval"); or a
            mapping name -> rows (a `datasets.Dataset`, a list of dicts or a dict of columns).
        datasets (`"all"` or list of `str`): names to score. `"all"` means every file of a local folder (MMEB ones
            in the paper's order first), every key of a mapping, or the 36 MMEB datasets for a Hub id.
        image_root (`str`, *optional*): folder that relative image paths start from. Defaults to the data folder
            for local data and to the working directory otherwise. Paths leading out of it (absolute, `..`, symbolic
            links pointing out) are an error naming the row.
        split (`str`): split of Hub datasets.
        output_dir (`str`, *optional*): where `<Name>.json` (scores, counts, diagnostics, run signature),
            `<Name>_similarity.png`, `<Name>_per_query.npz` (per query in row order: `rank` of the ground truth,
            `positive` and `hardest_negative` cosines; see `DatasetResult.load_per_query`), `summary.md` and
            `summary.json` go. Datasets whose JSON is already there are not
            evaluated again: their stored results are reused if the JSON's run signature (see `run_signature`)
            matches this run's. A JSON of another run (other model, data, split, `max_queries` or `image_root`)
            raises a `ValueError` before anything is encoded, rather than being silently reused or overwritten;
            so do results of other weights at the same checkpoint path (a retrained or further-trained model).
        batch_size (`int`): items per `encode` call.
        max_queries (`int`, *optional*): score only the first `max_queries` rows of each dataset.
        k_values (`Sequence[int]`): Recall@k cut-offs reported beside Precision@1.
        histograms (`bool`): write the similarity histogram PNGs when `output_dir` is set. Needs matplotlib (the
            `eval` extra), checked here so that a run fails before encoding rather than after its first dataset.
        show_progress_bar (`bool`): one tqdm bar per dataset.
        keep_in_memory (`bool`): keep the validated datasets between calls (for repeated evaluation during
            training, e.g. `ContrastiveTrainer(evaluator=...)`); otherwise each call reloads them.
        allow_absolute_image_paths (`bool`): trust the data's image paths: absolute ones and those leading out of
            `image_root` are used as given.

    Example:

    ```python
    >>> evaluator = MMEBEvaluator("mmeb_eval/", datasets=["ImageNet-1K", "MSCOCO_t2i"], output_dir="results/")
    >>> results = evaluator(model)  # a LlaveEmbeddingModel, or any `encode(texts=, images=, ...)` callable
    >>> results.datasets["ImageNet-1K"].precision_at_1, results.aggregate.overall
    ```
    """

    def __init__(
        self,
        data: DataSource,
        datasets: Literal["all"] | Sequence[str] = "all",
        image_root: str | None = None,
        split: str = "test",
        output_dir: str | None = None,
        batch_size: int = 32,
        max_queries: int | None = None,
        k_values: Sequence[int] = (1, 5, 10),
        histograms: bool = True,
        show_progress_bar: bool = True,
        keep_in_memory: bool = False,
        allow_absolute_image_paths: bool = False,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}.")
        if max_queries is not None and max_queries < 1:
            raise ValueError(f"max_queries must be positive, got {max_queries}.")
        if histograms and output_dir is not None:
            try:
                import matplotlib  # noqa: F401
            except ImportError:
                raise ImportError(
                    "Similarity histograms need matplotlib: `pip install llave-hf[eval]`, or pass histograms=False "
                    "(`llave-eval --no-histograms`)."
                ) from None
        self.data = data
        if image_root is None:
            image_root = str(data) if is_local_folder(data) else os.getcwd()
        self.image_root = image_root
        self.allow_absolute_image_paths = allow_absolute_image_paths
        self.split = split
        self.output_dir = output_dir
        self.batch_size = batch_size
        self.max_queries = max_queries
        self.k_values = tuple(k_values)
        self.histograms = histograms
        self.show_progress_bar = show_progress_bar
        self.keep_in_memory = keep_in_memory
        self.dataset_names = resolve_dataset_names(data, datasets)
        self._prepared: dict[str, PreparedDataset] = {}

    def prepare(self, name: str) -> PreparedDataset:
        """Loads and validates dataset `name` (raising `MMEBDataError` naming the row) and deduplicates its items."""
        if name in self._prepared:
            return self._prepared[name]
        rows = load_rows(self.data, name, split=self.split, max_rows=self.max_queries)
        prepared = prepare_dataset(name, rows, self.image_root, self.allow_absolute_image_paths)
        if self.keep_in_memory:
            self._prepared[name] = prepared
        return prepared

    def run_signature(self, model) -> RunSignature:
        """What must match for stored results to be reused: model and its weights, data source, split,
        `max_queries`, `image_root`.

        The model is its `config.name_or_path` (checkpoint folder or Hub id), a hash of its config when it has no
        path, or its name for a bare encode callable; its weights are a fingerprint of the parameters in memory
        (`None` for a bare callable), so that weights changed at the same path are a different run.
        """
        return RunSignature(
            model=_model_id(model),
            weights=_weights_fingerprint(model),
            data=source_id(self.data),
            split=self.split,
            max_queries=self.max_queries,
            image_root=os.path.abspath(self.image_root),
        )

    # ---- encoding and scoring ----

    @staticmethod
    def _splits_items() -> bool:
        """Whether the processes share out the items: several processes, and no DeepSpeed ZeRO-3, whose partitioned
        weights need every process to run the same forwards (then each process encodes everything)."""
        return process_state().num_processes > 1 and not is_deepspeed_zero3_enabled()

    def _embed(self, name: str, items, encode: Callable) -> np.ndarray:
        # Image items first, then longest texts first: batch-mates pad little.
        order = sorted(
            range(len(items)), key=lambda i: (items[i][1] is not None, len(items[i][0] or "")), reverse=True
        )
        if not self._splits_items():
            embedded = self._embed_items(name, items, order, encode, self.show_progress_bar)
            embeddings = np.empty_like(embedded)
            embeddings[order] = embedded
            return embeddings
        state = process_state()
        processes = state.num_processes
        # Process r takes order[r::processes] (similar lengths everywhere): split_between_processes cuts this list
        # into exactly these contiguous shares, padded with its last item to equal sizes for the gather.
        shares = [order[rank::processes] for rank in range(processes)]
        with state.split_between_processes([i for share in shares for i in share], apply_padding=True) as local:
            failure = None
            try:
                show = self.show_progress_bar and state.is_main_process
                embeddings = self._embed_items(name, items, local, encode, show)
            except Exception as error:  # every process must learn of it, or the others hang in the gather
                failure = error
            failures = gather_object([None if failure is None else f"{type(failure).__name__}: {failure}"])
            if failure is not None:
                raise failure
            failed = [(rank, message) for rank, message in enumerate(failures) if message is not None]
            if failed:
                raise RuntimeError(f"Dataset {name!r}: process {failed[0][0]} failed: {failed[0][1]}")
            gathered = gather(torch.from_numpy(embeddings).to(state.device)).cpu().numpy()
        per_process = len(local)
        result = np.empty((len(items), gathered.shape[1]), dtype=np.float32)
        for rank, share in enumerate(shares):
            result[share] = gathered[rank * per_process : rank * per_process + len(share)]
        return result

    def _embed_items(self, name: str, items, order: list[int], encode: Callable, show_progress_bar: bool) -> np.ndarray:
        """The normalised embeddings of `items[i]` for i in `order`, in that order."""
        embeddings = None
        with tqdm(total=len(order), desc=name, unit="item", disable=not show_progress_bar) as progress:
            for position in range(0, len(order), self.batch_size):
                indices = order[position : position + self.batch_size]
                rows = slice(position, position + len(indices))
                with torch.no_grad():
                    output = encode(
                        texts=[items[i][0] for i in indices],
                        images=[items[i][1] for i in indices],
                        batch_size=self.batch_size,
                        show_progress_bar=False,
                    )
                output = torch.as_tensor(output).float().cpu().numpy()
                if output.shape[0] != len(indices):
                    raise ValueError(f"Dataset {name!r}: encode returned {len(output)} rows for {len(indices)} items.")
                if embeddings is None:
                    embeddings = np.empty((len(order), output.shape[1]), dtype=np.float32)
                embeddings[rows] = output
                progress.update(len(indices))
        # Cosine similarity, as MMEB, whatever the model's own normalisation.
        return embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)

    @staticmethod
    def _score(embeddings: np.ndarray, queries: np.ndarray, candidates, chunk_size: int = 64) -> list[np.ndarray]:
        """Cosine of each query against its own candidates; one dense product per chunk of queries."""
        scores = []
        for start in range(0, len(queries), chunk_size):
            chunk = candidates[start : start + chunk_size]
            union = np.unique(np.concatenate(chunk))
            similarities = embeddings[queries[start : start + chunk_size]] @ embeddings[union].T
            scores.extend(similarities[i, np.searchsorted(union, c)] for i, c in enumerate(chunk))
        return scores

    def evaluate_dataset(
        self, name: str, model, processor=None, signature: RunSignature | None = None
    ) -> DatasetResult:
        """Scores one dataset and returns its result (also written to `output_dir` when set); `model` and `processor`
        as in `__call__`; `signature`: this run's `run_signature(model)` when the caller has it (it hashes the
        weights)."""
        encode = _encode_function(model, processor)
        signature = signature if signature is not None else self.run_signature(model)
        prepared = self.prepare(name)
        embeddings = self._embed(name, prepared.items, encode)
        state = process_state()
        if state.num_processes == 1:
            return self._score_and_save(name, prepared, embeddings, signature)
        # Under several processes the main one scores and writes; the others receive its result.
        result = self._score_and_save(name, prepared, embeddings, signature) if state.is_main_process else None
        return broadcast_object_list([result])[0]

    def _score_and_save(
        self, name: str, prepared: PreparedDataset, embeddings: np.ndarray, signature: RunSignature
    ) -> DatasetResult:
        scores = self._score(embeddings, prepared.queries, prepared.candidates)
        ranks = ground_truth_ranks(scores)
        metrics = rank_metrics(ranks, k_values=self.k_values)
        positive, hardest, negatives = split_positive_negative(scores)
        meta_task, split = MMEB_DATASETS.get(name, (None, None))
        num_candidates = np.asarray([len(c) for c in prepared.candidates])
        num_single_candidate = int(np.sum(num_candidates == 1))
        if num_single_candidate:
            logger.warning(
                f"Dataset {name!r}: {num_single_candidate} of {len(num_candidates)} queries have no candidate besides "
                f"the ground truth ({prepared.num_duplicate_positives} candidates identical to their ground truth were "
                "dropped): they count as right whatever the model, so P@1 overstates it."
            )
        write_histogram = self.output_dir is not None and self.histograms
        result = DatasetResult(
            dataset=name,
            meta_task=meta_task,
            split=split,
            precision_at_1=metrics["precision@1"],
            recall_at_k={k: metrics[f"recall@{k}"] for k in self.k_values},
            mrr=metrics["mrr"],
            similarity=SimilarityStats(**similarity_stats(scores)),
            counts=DatasetCounts(
                num_queries=metrics["num_queries"],
                num_candidates=int(num_candidates.sum()),
                min_candidates=int(num_candidates.min()),
                max_candidates=int(num_candidates.max()),
                num_encoded_items=len(prepared.items),
                num_duplicate_positives=prepared.num_duplicate_positives,
                num_tied_top=int(np.sum(positive == hardest)),
                max_queries=self.max_queries,
                num_single_candidate=num_single_candidate,
            ),
            histogram=f"{name}_similarity.png" if write_histogram else None,
            per_query=f"{name}_per_query.npz" if self.output_dir is not None else None,
            run=signature,
        )
        if self.output_dir is not None:
            os.makedirs(self.output_dir, exist_ok=True)
            # Scores first: they are the costly part, and a failing plot must not lose them.
            result.save(os.path.join(self.output_dir, f"{name}.json"))
            # Per-query outcomes, in the data's row order, let two models be compared query by query (paired).
            np.savez(
                os.path.join(self.output_dir, result.per_query), rank=ranks, positive=positive, hardest_negative=hardest
            )
            if write_histogram:
                title = f"{name}: P@1 {100 * result.precision_at_1:.1f}, gap {result.similarity.gap:.3f}"
                save_similarity_histogram(
                    os.path.join(self.output_dir, result.histogram), positive, hardest, negatives, title
                )
        return result

    def _load_finished(self, signature: RunSignature) -> dict[str, DatasetResult]:
        """Stored results of this run's datasets; raises on any written by another run, before anything is encoded."""
        if self.output_dir is None:
            return {}
        finished = {}
        for name in self.dataset_names:
            path = os.path.join(self.output_dir, f"{name}.json")
            if not os.path.isfile(path):
                continue
            result = DatasetResult.load(path)
            differences = signature.differences(result.run)
            if differences:
                raise ValueError(
                    f"{path} holds results of another run ({'; '.join(differences)}). Use a new output folder "
                    f"(--output / output_dir) to keep both, or delete the file to evaluate {name} again with these "
                    "settings."
                )
            logger.warning(f"Skipping {name}: results already in {path} (delete it to evaluate again).")
            finished[name] = result
        return finished

    def __call__(self, model, processor=None) -> EvaluationResults:
        """Scores every dataset (reusing those already in `output_dir`) and writes `summary.json` / `summary.md` there.

        Args:
            model: an object with an `encode` method (e.g. `LlaveEmbeddingModel`) or an `encode` callable itself.
            processor (*optional*): passed to `model.encode(processor=...)`.
        """
        _encode_function(model, processor)  # fails on a wrong `model` before any work
        signature = self.run_signature(model)  # once: it fingerprints the weights
        finished = self._load_finished(signature)
        results = EvaluationResults(
            {
                name: finished[name] if name in finished else self.evaluate_dataset(name, model, processor, signature)
                for name in self.dataset_names
            }
        )
        if self.output_dir is not None and process_state().is_main_process:
            results.save(os.path.join(self.output_dir, "summary.json"))
            with open(os.path.join(self.output_dir, "summary.md"), "w", encoding="utf-8") as f:
                f.write(format_summary(results))
        return results

    evaluate = __call__
