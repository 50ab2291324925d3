# Copyright 2026 The llave-hf Authors. Licensed under the Apache License, Version 2.0.
"""Zero-shot text-video retrieval as the LLaVE paper reports it (its Table 4): MSR-VTT 1k-A and MSVD.

Protocol (the LLaVE release's video evaluation):

- Query: a caption, with the instruction `VIDEO_QUERY_INSTRUCTION` = "Find me an video that matches the given
  caption: " (the release's spelling, "an video", kept: the models were evaluated with it).
- Target: a video with the text "<image>\\nRepresent the given video." (`VIDEO_TARGET_TEXT`): the video sits where
  an image would. Both in the Qwen template of every LLaVE prompt, last-token pooling, as for images.
- Frames: about 3 per second, at most 32, spread uniformly over the video when there are more
  (`LlaveProcessor.video_fps`, `video_max_frames`); prompts of up to 8,192 tokens (`video_max_length`).
- MSR-VTT 1k-A: the 1,000 test videos of `MSRVTT_JSFUSION_test.csv`, one caption each. MSVD: the 670 test videos,
  about 40 captions each; every caption is a query against all test videos (the multi-sentence protocol).
- Reported: Recall@1/5/10, median and mean rank, text->video and video->text. With several captions per video,
  a video's video->text rank is that of its best-ranked caption among all captions (its other captions do not
  push it down). Ties rank pessimistically, as everywhere in llave-hf: a wrong item scoring equal to the right one
  ranks above it.

`VideoRetrievalEvaluator` encodes each video once and each distinct caption once, stores the embeddings in chunks
in its output folder (an interrupted run resumes from them) and writes `<name>.json` with the scores.
"""

import dataclasses
import hashlib
import json
import os
import pickle
from collections.abc import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers.utils import logging

from ..metrics import ground_truth_ranks
from .evaluator import _encode_function, _model_id


logger = logging.get_logger(__name__)

VIDEO_QUERY_INSTRUCTION = "Find me an video that matches the given caption: "
# MMEB's placeholder marks the visual's slot in every backbone's prompt ("<image>" in LLaVA-OneVision's).
VIDEO_TARGET_TEXT = "<|image_1|>\nRepresent the given video."
K_VALUES = (1, 5, 10)
_RESULT_VERSION = 1


@dataclasses.dataclass
class VideoRetrievalData:
    """A text-video retrieval test set: videos, and captions each describing one of them.

    Args:
        name: what result files and messages call the set (e.g. "MSR-VTT").
        video_ids: one id per video.
        video_paths: the video files, parallel to `video_ids`.
        captions: every caption (a query).
        caption_videos: for each caption, the index in `video_ids` of the video it describes.
    """

    name: str
    video_ids: list[str]
    video_paths: list[str]
    captions: list[str]
    caption_videos: list[int]

    def __post_init__(self):
        if len(self.video_ids) != len(self.video_paths):
            raise ValueError(f"{self.name}: {len(self.video_ids)} video ids but {len(self.video_paths)} paths.")
        if len(self.captions) != len(self.caption_videos):
            raise ValueError(
                f"{self.name}: {len(self.captions)} captions but {len(self.caption_videos)} video indices."
            )
        if not self.video_ids or not self.captions:
            raise ValueError(f"{self.name}: no videos or no captions.")
        if len(set(self.video_ids)) != len(self.video_ids):
            raise ValueError(f"{self.name}: duplicate video ids.")
        described = set(self.caption_videos)
        if not described <= set(range(len(self.video_ids))):
            raise ValueError(
                f"{self.name}: a caption points to a video index outside the {len(self.video_ids)} videos."
            )
        undescribed = [self.video_ids[i] for i in range(len(self.video_ids)) if i not in described]
        if undescribed:
            raise ValueError(f"{self.name}: video {undescribed[0]} has no caption ({len(undescribed)} such videos).")

    def check_files(self) -> None:
        """Raises `FileNotFoundError` naming the missing videos before anything is encoded."""
        missing = [(vid, path) for vid, path in zip(self.video_ids, self.video_paths) if not os.path.isfile(path)]
        if missing:
            shown = ", ".join(f"video {vid} ({path})" for vid, path in missing[:5])
            raise FileNotFoundError(f"{self.name}: {len(missing)} video file(s) not found: {shown}.")

    def subset(self, max_videos: int) -> "VideoRetrievalData":
        """The first `max_videos` videos and their captions (quick runs)."""
        keep = set(range(min(max_videos, len(self.video_ids))))
        pairs = [(caption, video) for caption, video in zip(self.captions, self.caption_videos) if video in keep]
        return VideoRetrievalData(
            self.name,
            self.video_ids[: len(keep)],
            self.video_paths[: len(keep)],
            [caption for caption, _ in pairs],
            [video for _, video in pairs],
        )


def _video_path(video_dir: str, video_id: str, extensions: Sequence[str]) -> str:
    """The file of `video_id` in `video_dir`: the first extension that exists (the first one if none does)."""
    paths = [os.path.join(video_dir, video_id + extension) for extension in extensions]
    return next((path for path in paths if os.path.isfile(path)), paths[0])


def load_msrvtt(
    csv_path: str, video_dir: str, extensions: Sequence[str] = (".mp4", ".avi", ".webm", ".mkv")
) -> VideoRetrievalData:
    """MSR-VTT 1k-A: `MSRVTT_JSFUSION_test.csv` (columns `video_id`, `sentence`; one row per test video) and the
    folder of its videos (`<video_id>.mp4`)."""
    import csv

    with open(csv_path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = {"video_id", "sentence"} - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{csv_path}: missing column(s) {', '.join(sorted(missing))}.")
        rows = [(row["video_id"].strip(), row["sentence"].strip()) for row in reader]
    video_ids, index = [], {}
    captions, caption_videos = [], []
    for line, (video_id, sentence) in enumerate(rows, start=2):
        if not video_id or not sentence:
            raise ValueError(f"{csv_path}, line {line}: empty video_id or sentence.")
        if video_id not in index:
            index[video_id] = len(video_ids)
            video_ids.append(video_id)
        captions.append(sentence)
        caption_videos.append(index[video_id])
    paths = [_video_path(video_dir, video_id, extensions) for video_id in video_ids]
    return VideoRetrievalData("MSR-VTT", video_ids, paths, captions, caption_videos)


def _read_msvd_captions(path: str) -> dict[str, list[str]]:
    """MSVD captions: the `raw-captions.pkl` of CLIP4Clip-style releases (video id -> list of captions, each a list
    of words or a string), or a text file of `<video_id> <caption>` lines (`AllVideoDescriptions.txt` style)."""
    if path.endswith(".pkl"):
        with open(path, "rb") as handle:
            raw = pickle.load(handle)  # a data file the user points at, as the release's loader reads it
        return {str(vid): [c if isinstance(c, str) else " ".join(c) for c in caps] for vid, caps in raw.items()}
    captions: dict[str, list[str]] = {}
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if not line.strip() or line.startswith("#"):
                continue
            video_id, _, caption = line.strip().partition(" ")
            if caption:
                captions.setdefault(video_id, []).append(caption)
    return captions


def load_msvd(
    captions_path: str,
    test_list: str,
    video_dir: str,
    extensions: Sequence[str] = (".avi", ".mp4", ".webm", ".mkv"),
) -> VideoRetrievalData:
    """MSVD test split: the captions (`raw-captions.pkl` or a `<video_id> <caption>` text file), the test list
    (`test_list.txt`: one video id per line; 670 videos) and the folder of the videos (`<video_id>.avi`). Every
    caption of a test video is a query."""
    all_captions = _read_msvd_captions(captions_path)
    with open(test_list, encoding="utf-8") as handle:
        video_ids = [line.strip() for line in handle if line.strip()]
    captions, caption_videos = [], []
    for index, video_id in enumerate(video_ids):
        if not all_captions.get(video_id):
            raise ValueError(f"{captions_path}: no caption for test video {video_id} (listed in {test_list}).")
        captions += all_captions[video_id]
        caption_videos += [index] * len(all_captions[video_id])
    paths = [_video_path(video_dir, video_id, extensions) for video_id in video_ids]
    return VideoRetrievalData("MSVD", video_ids, paths, captions, caption_videos)


# ---------------------------------------------------------------------------------------------------------------------
# metrics


def _summary(ranks: np.ndarray, k_values: Sequence[int]) -> dict:
    scores = {f"R@{k}": float(100.0 * np.mean(ranks <= k)) for k in k_values}
    scores.update(MdR=float(np.median(ranks)), MnR=float(np.mean(ranks)))
    return scores


def text_to_video_ranks(scores, caption_videos: Sequence[int]) -> np.ndarray:
    """(captions,) rank of each caption's video among all videos: 1 + the videos scoring at least as high (ties
    pessimistic). `scores` is (captions, videos)."""
    return ground_truth_ranks(scores, labels=list(caption_videos))


def video_to_text_ranks(scores, caption_videos: Sequence[int]) -> np.ndarray:
    """(videos,) rank of each video's best-ranked caption among all captions: 1 + the other videos' captions
    scoring at least as high as its best caption (ties pessimistic). `scores` is (captions, videos)."""
    scores = np.asarray(scores, dtype=np.float64)
    owner = np.asarray(caption_videos)
    ranks = np.empty(scores.shape[1], dtype=np.int64)
    for video in range(scores.shape[1]):
        column, own = scores[:, video], owner == video
        ranks[video] = 1 + int((column[~own] >= column[own].max()).sum())
    return ranks


def video_retrieval_metrics(scores, caption_videos: Sequence[int], k_values: Sequence[int] = K_VALUES) -> dict:
    """`{"text_to_video": {...}, "video_to_text": {...}}`, each with R@k (percent), MdR and MnR, from the
    (captions, videos) cosine scores."""
    return {
        "text_to_video": _summary(text_to_video_ranks(scores, caption_videos), k_values),
        "video_to_text": _summary(video_to_text_ranks(scores, caption_videos), k_values),
    }


# ---------------------------------------------------------------------------------------------------------------------
# evaluator


class VideoRetrievalEvaluator:
    r"""
    Zero-shot text-video retrieval of an embedding model on a `VideoRetrievalData` set (the module docstring gives
    the protocol).

    Each video is encoded once (video ids are checked unique; files are checked to exist before any encoding), each
    distinct caption once. With `output_dir`, embeddings are kept in `<name>_embeddings/` in chunks of
    `chunk_size` items, so that a run resumes where it stopped; `<name>.json` holds the scores. A folder written by
    another run (other model, data or frame settings) is an error rather than silently reused.

    Errors name the video (`video <id> (<path>)`): a missing or undecodable file, a video without frames, a video
    over the processor's `video_max_length` even at one frame.

    Args:
        data: the test set (`load_msrvtt`, `load_msvd`).
        output_dir: folder for the embeddings and results (optional: without it nothing resumes).
        batch_size: items per `encode` call.
        chunk_size: items per stored embedding chunk.
        query_instruction, target_text: the prompts (default: the LLaVE release's).

    Example:

    ```python
    >>> data = load_msrvtt("msrvtt_data/MSRVTT_JSFUSION_test.csv", "msrvtt_data/videos/")
    >>> results = VideoRetrievalEvaluator(data, output_dir="results/")(model)
    >>> results["text_to_video"]["R@1"]
    ```
    """

    def __init__(
        self,
        data: VideoRetrievalData,
        output_dir: str | None = None,
        batch_size: int = 4,
        chunk_size: int = 64,
        query_instruction: str = VIDEO_QUERY_INSTRUCTION,
        target_text: str = VIDEO_TARGET_TEXT,
        show_progress_bar: bool = True,
    ):
        if batch_size < 1 or chunk_size < 1:
            raise ValueError(f"batch_size and chunk_size must be positive, got {batch_size} and {chunk_size}.")
        self.data = data
        self.output_dir = output_dir
        self.batch_size = batch_size
        self.chunk_size = chunk_size
        self.query_instruction = query_instruction
        self.target_text = target_text
        self.show_progress_bar = show_progress_bar

    def signature(self, model, processor) -> dict:
        """What must match for stored embeddings to be reused: model, data, prompts, frame sampling."""
        data = self.data
        content = json.dumps([data.video_ids, data.video_paths, data.captions, data.caption_videos])
        frames = {
            name: getattr(processor, name, None)
            for name in ("video_fps", "video_max_frames", "video_max_length", "max_length")
        }
        return {
            "version": _RESULT_VERSION,
            "model": _model_id(model),
            "data": data.name,
            "data_sha256": hashlib.sha256(content.encode()).hexdigest()[:16],
            "query_instruction": self.query_instruction,
            "target_text": self.target_text,
            "frames": frames,
        }

    def _folder(self) -> str | None:
        return os.path.join(self.output_dir, f"{self.data.name}_embeddings") if self.output_dir else None

    def _check_signature(self, signature: dict) -> None:
        folder = self._folder()
        if folder is None:
            return
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, "signature.json")
        if os.path.exists(path):
            with open(path) as handle:
                stored = json.load(handle)
            if stored != signature:
                changed = sorted(key for key in signature if stored.get(key) != signature[key])
                raise ValueError(
                    f"{folder} holds embeddings of another run (differs in {', '.join(changed)}); use another "
                    "output folder or delete it."
                )
        else:
            with open(path, "w") as handle:
                json.dump(signature, handle, indent=2)

    def _encode(self, encode, kind: str, items: list[dict], names: list[str], instruction: str | None) -> torch.Tensor:
        """Embeddings of `items` (keyword arguments of `encode`, one per item), chunk by chunk, resuming from the
        chunks stored in the output folder."""
        folder = self._folder()
        chunks = []
        starts = range(0, len(items), self.chunk_size)
        bar = tqdm(starts, desc=f"{self.data.name} {kind}", disable=not self.show_progress_bar, unit="chunk")
        for number, start in enumerate(bar):
            path = os.path.join(folder, f"{kind}_{number:05d}.pt") if folder else None
            stop = min(start + self.chunk_size, len(items))
            if path and os.path.exists(path):
                chunk = torch.load(path, weights_only=True)
                if chunk.shape[0] == stop - start:
                    chunks.append(chunk)
                    continue
            batch = items[start:stop]
            arguments = {key: [item[key] for item in batch] for key in batch[0]}
            chunk = encode(
                **arguments,
                instruction=instruction,
                batch_size=self.batch_size,
                show_progress_bar=False,
                item_names=names[start:stop],
            )
            chunk = torch.as_tensor(chunk, dtype=torch.float32)
            if path:
                torch.save(chunk, path + ".tmp")
                os.replace(path + ".tmp", path)  # a chunk is either whole or absent
            chunks.append(chunk)
        return torch.cat(chunks)

    def __call__(self, model, processor=None) -> dict:
        """Encodes, scores and returns `{"text_to_video": {...}, "video_to_text": {...}, "counts": {...}}`."""
        data = self.data
        data.check_files()
        processor = processor if processor is not None else getattr(model, "processor", None)
        if processor is None and hasattr(model, "get_processor"):
            processor = model.get_processor()
        signature = self.signature(model, processor)
        result_path = os.path.join(self.output_dir, f"{data.name}.json") if self.output_dir else None
        if result_path and os.path.exists(result_path):
            with open(result_path) as handle:
                stored = json.load(handle)
            if stored.get("signature") == signature:
                logger.info(f"{data.name}: results already in {result_path}.")
                return stored
        self._check_signature(signature)
        encode = _encode_function(model, processor)

        video_names = [f"video {vid} ({path})" for vid, path in zip(data.video_ids, data.video_paths)]
        video_items = [{"texts": self.target_text, "videos": path} for path in data.video_paths]
        videos = self._encode(encode, "videos", video_items, video_names, None)
        distinct = list(dict.fromkeys(data.captions))
        caption_names = [f"caption {index}" for index in range(len(distinct))]
        caption_items = [{"texts": caption} for caption in distinct]
        texts = self._encode(encode, "captions", caption_items, caption_names, self.query_instruction)
        position = {caption: index for index, caption in enumerate(distinct)}
        queries = texts[[position[caption] for caption in data.captions]]

        scores = (queries @ videos.T).numpy()
        results = video_retrieval_metrics(scores, data.caption_videos)
        results["counts"] = {"videos": len(data.video_ids), "captions": len(data.captions)}
        results["signature"] = signature
        if result_path:
            os.makedirs(self.output_dir, exist_ok=True)
            with open(result_path, "w") as handle:
                json.dump(results, handle, indent=2)
        return results


def format_video_results(results: dict, name: str) -> str:
    """A Markdown table of one set's scores."""
    lines = [f"| {name} | R@1 | R@5 | R@10 | MdR | MnR |", "|---|---|---|---|---|---|"]
    for direction in ("text_to_video", "video_to_text"):
        scores = results[direction]
        label = direction.replace("_to_", "->")
        lines.append(
            f"| {label} | {scores['R@1']:.1f} | {scores['R@5']:.1f} | {scores['R@10']:.1f} | "
            f"{scores['MdR']:.1f} | {scores['MnR']:.1f} |"
        )
    return "\n".join(lines) + "\n"


__all__ = [
    "K_VALUES",
    "VIDEO_QUERY_INSTRUCTION",
    "VIDEO_TARGET_TEXT",
    "VideoRetrievalData",
    "VideoRetrievalEvaluator",
    "format_video_results",
    "load_msrvtt",
    "load_msvd",
    "text_to_video_ranks",
    "video_retrieval_metrics",
    "video_to_text_ranks",
]
