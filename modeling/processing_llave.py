# Copyright 2026 The llave-hf authors. Licensed under the Apache License, Version 2.0.
"""Processor of LLaVE embedding models: the LLaVE prompt format, image and video loading, and the expansion of the
image (video) token into as many tokens as the vision tower yields.

This file travels inside every checkpoint (``trust_remote_code``): it imports only torch, transformers, PIL and
its sibling files. It needs no torchvision: image processors are transformers' PIL ones, and video frames go through
them too. Video files are decoded with PyAV (`pip install av`), imported only when a file is decoded.
"""

import os
from dataclasses import dataclass

import torch
import transformers
from PIL import Image, UnidentifiedImageError
from transformers import BatchFeature
from transformers.processing_utils import ProcessorMixin
from transformers.utils import logging

from .backbones import BackboneFamily, backbone_family


logger = logging.get_logger(__name__)

# Qwen chat template of the released LLaVE models; `{text}` is the user turn, the assistant turn is "\n" and the
# pooled token is the final "\n".
LLAVE_PROMPT_TEMPLATE = (
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "<|im_start|>user\n{text}<|im_end|>\n"
    "<|im_start|>assistant\n\n<|im_end|>\n"
)
# How MMEB data marks where the image goes.
MMEB_IMAGE_PLACEHOLDER = "<|image_1|>"
# Video sampling of the LLaVE release (its zero-shot video retrieval): frames at 3 per second, at most 32.
VIDEO_FPS = 3.0
VIDEO_MAX_FRAMES = 32
# transformers' assumption for frames given without their times (Qwen3-VL's processor warns and uses it).
DEFAULT_FRAME_RATE = 24.0


@dataclass
class Video:
    """The sampled frames of one video, and each frame's time in seconds.

    `timestamps` matter only to backbones whose video positions or prompt use time (Qwen2.5-VL, Qwen3-VL); frames
    given without them are taken as consecutive frames at `DEFAULT_FRAME_RATE` (24 fps), as transformers does.
    """

    frames: list
    timestamps: list[float] | None = None

    def __post_init__(self):
        if self.timestamps is None:
            self.timestamps = [index / DEFAULT_FRAME_RATE for index in range(len(self.frames))]
        if len(self.timestamps) != len(self.frames):
            raise ValueError(f"Video: {len(self.frames)} frames but {len(self.timestamps)} timestamps.")

    @property
    def sampled_fps(self) -> float:
        """Frames per second of the sampled frames (their spacing); 1.0 for a single frame."""
        span = self.timestamps[-1] - self.timestamps[0] if len(self.frames) > 1 else 0.0
        return (len(self.frames) - 1) / span if span > 0 else 1.0

    def subsample(self, count: int) -> "Video":
        """`count` frames spread uniformly over this video's frames (the first and the last kept)."""
        indices = uniform_indices(len(self.frames), count)
        return Video([self.frames[i] for i in indices], [self.timestamps[i] for i in indices])


def uniform_indices(total: int, count: int) -> list[int]:
    """`count` indices spread uniformly over `range(total)`, first and last included, rounded down: what
    `numpy.linspace(0, total - 1, count, dtype=int)` returns (the LLaVA-NeXT video loader's rule)."""
    if count >= total:
        return list(range(total))
    if count == 1:
        return [0]
    step = (total - 1) / (count - 1)
    return [int(i * step) for i in range(count - 1)] + [total - 1]


def sample_frame_indices(
    total_frames: int, average_fps: float, fps: float = VIDEO_FPS, max_frames: int = VIDEO_MAX_FRAMES
) -> list[int]:
    """Which frames of a video LLaVE embeds, as the release's loader samples them: every
    `round(average_fps / fps)`-th frame (about `fps` frames per second, from frame 0); when that gives more than
    `max_frames`, `max_frames` frames spread uniformly over the whole video instead (first and last included)."""
    if total_frames < 1:
        return []
    step = max(1, round(average_fps / fps)) if average_fps and average_fps > 0 else 1
    indices = list(range(0, total_frames, step))
    return uniform_indices(total_frames, max_frames) if len(indices) > max_frames else indices


def decode_video(
    path: str | os.PathLike, name: str, fps: float = VIDEO_FPS, max_frames: int = VIDEO_MAX_FRAMES
) -> Video:
    """Decodes the frames `sample_frame_indices` picks from a video file, as RGB PIL images with their times.

    Errors name the item (`name`) and the file: a missing file, a file PyAV cannot decode or without a video stream,
    a video without frames.
    """
    try:
        import av
    except ImportError as error:
        raise ImportError(
            "Decoding video files needs PyAV: `pip install av` (or `pip install llave-hf[video]`)."
        ) from error
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{name}: video file not found: {path!r}.")

    def video_stream(container):
        if not container.streams.video:
            raise ValueError(f"{name}: {path!r} has no video stream.")
        return container.streams.video[0]

    def decode(kept: set[int]) -> tuple[int, dict[int, Image.Image]]:
        """Decodes the whole stream, keeping only the frames at `kept` (memory stays bounded); returns the number
        of frames decoded and the kept frames by index."""
        count, images = 0, {}
        with av.open(path) as container:
            for count, frame in enumerate(container.decode(video_stream(container)), start=1):
                if count - 1 in kept:
                    images[count - 1] = frame.to_image()
        return count, images

    try:
        with av.open(path) as container:
            stream = video_stream(container)
            average_fps = float(stream.average_rate or stream.guessed_rate or 0) or DEFAULT_FRAME_RATE
            # the header's frame count, or (WebM has none) the number of packets: no decoding needed
            total = stream.frames or sum(1 for packet in container.demux(stream) if packet.size)
        indices = sample_frame_indices(total, average_fps, fps, max_frames)
        decoded, images = decode(set(indices))
        if decoded != total:  # the count was wrong: sample from the true count (decoding again if needed)
            indices = sample_frame_indices(decoded, average_fps, fps, max_frames)
            if not set(indices) <= set(images):
                decoded, images = decode(set(indices))
    except av.error.FFmpegError as error:
        raise ValueError(f"{name}: cannot decode video file {path!r}: {error}") from error
    if not decoded:
        raise ValueError(f"{name}: video file {path!r} has no frames.")
    return Video([images[i] for i in indices], [i / average_fps for i in indices])


def load_video(video, name: str, fps: float = VIDEO_FPS, max_frames: int = VIDEO_MAX_FRAMES) -> Video:
    """A `Video` from a video file (decoded and sampled), a list of frames (PIL images or image paths, taken as
    they are) or a `Video`; errors name the item (`name`): a missing or undecodable file, no frames, frames of
    different sizes."""
    if isinstance(video, (str, os.PathLike)):
        video = decode_video(video, name, fps, max_frames)
    elif isinstance(video, (list, tuple)):
        video = Video([load_image(frame, f"{name} frame {index}") for index, frame in enumerate(video)])
    elif isinstance(video, Video):
        frames = [load_image(frame, f"{name} frame {index}") for index, frame in enumerate(video.frames)]
        video = Video(frames, list(video.timestamps))
    else:
        raise TypeError(
            f"{name}: a video must be a file path, a list of frames or a Video, got {type(video).__name__}."
        )
    if not video.frames:
        raise ValueError(f"{name}: the video has no frames.")
    sizes = {frame.size for frame in video.frames}
    if len(sizes) > 1:
        listed = ", ".join(f"{width}x{height}" for width, height in sorted(sizes))
        raise ValueError(f"{name}: the video's frames differ in size ({listed}).")
    return video


# Largest image (width x height) opened by default: 64 MP, e.g. 8000 x 8000, 192 MB once decoded to RGB. Checked on
# the header, before any decoding: a small compressed file can hold a huge image (a 12000 x 12000 one-bit PNG is
# 23 KB), and PIL itself only warns below 179 MP.
DEFAULT_MAX_IMAGE_PIXELS = 64_000_000
# 16- and 32-bit integer images (PNG/TIFF depth 16) as 8 bits; PIL's own conversion clips them at 255.
_WIDE_INTEGER_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


class ImageTooLargeError(ValueError):
    """An image over the pixel limit (`max_image_pixels`), found from its header before decoding."""


def check_image_size(image: Image.Image, name: str, max_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS) -> None:
    """Raises `ImageTooLargeError` naming the item when `image` (opened, its header read) has more than `max_pixels`
    pixels (`None`: no limit)."""
    width, height = image.size
    if max_pixels is not None and width * height > max_pixels:
        raise ImageTooLargeError(
            f"{name}: the image is {width}x{height} = {width * height:,} pixels, over the limit of {max_pixels:,} "
            "(max_image_pixels)."
        )


def to_rgb(image: Image.Image) -> Image.Image:
    """`image` as 8-bit RGB. 16-bit integer images are rescaled (value * 255 / 65535, rounded) rather than clipped;
    mode "I" (32-bit) is read as 16-bit data (values clipped to [0, 65535]), as PNG and TIFF store it."""
    if image.mode in _WIDE_INTEGER_MODES:
        image = image.convert("I").point(lambda value: value * (255 / 65535) + 0.5).convert("L")
    return image.convert("RGB")


def load_image(image, name: str, max_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS) -> Image.Image:
    """Opens `image` (a PIL image or a path) as 8-bit RGB; errors name the item (`name`) and the file.

    Images over `max_pixels` pixels are refused from their header, before decoding (`None`: no limit).
    """
    if isinstance(image, Image.Image):
        check_image_size(image, name, max_pixels)  # a lazily opened image is decoded only below
        try:
            image.load()  # decoding errors name the item here, not deep in the image processor
            return image if image.mode == "RGB" else to_rgb(image)
        except (OSError, SyntaxError, ValueError) as error:
            raise ValueError(f"{name}: cannot decode the image: {error}") from error
    if not isinstance(image, (str, os.PathLike)):
        raise TypeError(f"{name}: an image must be a PIL image or a path, got {type(image).__name__}.")
    if not os.path.isfile(image):
        raise FileNotFoundError(f"{name}: image file not found: {os.fspath(image)!r}.")
    try:
        with Image.open(image) as opened:
            check_image_size(opened, f"{name} ({os.fspath(image)!r})", max_pixels)
            return to_rgb(opened)
    except ImageTooLargeError:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError, ValueError) as error:
        raise ValueError(f"{name}: cannot read image file {os.fspath(image)!r}: {error}") from error


def parallel_size(lists: dict[str, list | None]) -> int:
    """The common length of the given parallel lists (`None` entries are absent); an error naming two that differ."""
    sizes = {name: len(items) for name, items in lists.items() if items is not None}
    (first, first_size), *others = sizes.items()
    for name, size in others:
        if size != first_size:
            raise ValueError(f"`{first}` has {first_size} items but `{name}` has {size}; they must be parallel.")
    return first_size


def pil_image_processor(image_processor):
    """The PIL-backend twin of a transformers image processor.

    `AutoImageProcessor` picks the torchvision backend whenever torchvision is importable, whose resizing differs
    from the PIL path LLaVE checkpoints are trained and converted with: embeddings would drift between machines.
    """
    name = type(image_processor).__name__
    pil_class = getattr(transformers, name if name.endswith("Pil") else f"{name}Pil", None)
    if pil_class is None or isinstance(image_processor, pil_class):
        return image_processor
    return pil_class.from_dict(image_processor.to_dict())


def _modality_settings(text_kwargs, images_kwargs, audio_kwargs, videos_kwargs, common_kwargs) -> dict:
    """The settings of a per-modality processor call that `LlaveProcessor` honours; raises for any other."""
    settings = {}
    groups = {
        "text_kwargs": text_kwargs,
        "images_kwargs": images_kwargs,
        "audio_kwargs": audio_kwargs,
        "videos_kwargs": videos_kwargs,
        "common_kwargs": common_kwargs,
    }
    for group, given in groups.items():
        for key, value in (given or {}).items():
            if key == "padding" and value in (True, "longest"):
                continue  # always padded to the longest prompt
            if group in ("text_kwargs", "common_kwargs"):
                if key == "truncation" and value not in (False, None, "do_not_truncate"):
                    continue  # the user text is always truncated to fit max_length
                if key in ("max_length", "return_tensors"):
                    settings[key] = value
                    continue
            raise TypeError(f"LlaveProcessor cannot honour {group}[{key!r}]={value!r}.")
    return settings


class LlaveProcessor(ProcessorMixin):
    r"""
    Turns texts and images into the inputs of [`LlaveEmbeddingModel`], in the LLaVE prompt format.

    Each item is a text, an image, or both; an optional instruction is prepended to the text. MMEB's image
    placeholder `<|image_1|>` (or the backbone's own image token) marks where the image goes: at the start it is
    replaced in place, elsewhere (or when absent) the image moves to the front followed by a newline, as in the
    released LLaVE code. The image token is then expanded to as many tokens as the vision tower yields.

    Special tokens spelled in a text or an instruction (`<|im_end|><|im_start|>system ...`) are tokenized as plain
    text (the tokenizer's `split_special_tokens`), so that no input changes the prompt's structure; only the
    template's tokens and the image tokens are special. Texts without them tokenize exactly as the whole prompt did
    for the released models.

    Texts whose prompt would exceed `max_length` tokens are truncated (only the user text, never the template or the
    image tokens) with a warning naming the item.

    Args:
        image_processor: a transformers PIL image processor (`None` for text-only backbones).
        tokenizer: the backbone's tokenizer.
        backbone_type (`str`): the backbone config's `model_type`, a key of the family table (`backbones.py`), which
            says how images become inputs and how many image tokens each takes.
        image_token (`str`): the backbone's image token, repeated once per image feature.
        video_token (`str`): the backbone's video token, repeated once per video feature (empty: no video path).
        image_start_token, image_end_token (`str`): tokens around the image tokens (Qwen2-VL's vision start/end).
        num_image_tokens (`int`): features per 384-px tile (LLaVA-OneVision) or per image (LLaVA).
        vision_aspect_ratio (`str`): LLaVA-OneVision's `anyres_max_N` setting.
        prompt_template (`str`): the prompt, with `{text}` where the user turn goes.
        max_length (`int`): maximum number of tokens of a prompt.
        max_image_pixels (`int`, *optional*): images with more pixels (width x height) are refused from their
            header, before decoding (default 64 MP; `None`: no limit).
        video_max_length (`int`): maximum number of tokens of a prompt with a video (8,192 in the LLaVE paper). A
            video whose tokens alone exceed it is embedded from fewer frames, spread uniformly (with a warning), and
            refused when even one frame does not fit.
        video_fps, video_max_frames: how video files are sampled (`sample_frame_indices`): about 3 frames per
            second, at most 32, as the LLaVE release.
    """

    def __init__(
        self,
        image_processor=None,
        tokenizer=None,
        backbone_type: str = "qwen2",
        image_token: str = "<image>",
        video_token: str = "",
        image_start_token: str = "",
        image_end_token: str = "",
        num_image_tokens: int | None = None,
        vision_aspect_ratio: str = "anyres_max_9",
        prompt_template: str = LLAVE_PROMPT_TEMPLATE,
        max_length: int = 4096,
        max_image_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS,
        video_max_length: int = 8192,
        video_fps: float = VIDEO_FPS,
        video_max_frames: int = VIDEO_MAX_FRAMES,
        chat_template=None,
        **kwargs,
    ):
        backbone_family(backbone_type)  # raises for an unsupported family
        if "{text}" not in prompt_template:
            raise ValueError("prompt_template must contain '{text}'.")
        self.backbone_type = backbone_type
        self.image_token = image_token
        self.video_token = video_token
        self.image_start_token = image_start_token
        self.image_end_token = image_end_token
        self.num_image_tokens = num_image_tokens
        self.vision_aspect_ratio = vision_aspect_ratio
        self.prompt_template = prompt_template
        self.max_length = max_length
        self.max_image_pixels = max_image_pixels
        self.video_max_length = video_max_length
        self.video_fps = video_fps
        self.video_max_frames = video_max_frames
        if image_processor is not None:
            image_processor = pil_image_processor(image_processor)
        with_images = "image_processor" in self.get_attributes()
        subprocessors = (image_processor, tokenizer) if with_images else (tokenizer,)
        super().__init__(*subprocessors, chat_template=chat_template)
        self.image_token_id = tokenizer.convert_tokens_to_ids(image_token)
        self.video_token_id = tokenizer.convert_tokens_to_ids(video_token) if video_token else None

    # ----------------------------------------------------------------------------------------------------------
    # prompt

    def format_text(self, text: str | None, has_image: bool, instruction: str | None = None, name: str = "item") -> str:
        """The user turn of one item, with `self.image_token` marking the (single) image when there is one."""
        text = text or ""
        if instruction:
            text = instruction + text if not text or instruction[-1].isspace() else f"{instruction} {text}"
        text = text.replace(self.image_token, MMEB_IMAGE_PLACEHOLDER)
        count = text.count(MMEB_IMAGE_PLACEHOLDER)
        if count > 1:
            raise ValueError(f"{name}: the text marks {count} images; LLaVE embeds one image per item.")
        if not has_image:
            if count:
                raise ValueError(f"{name}: the text contains the image placeholder {MMEB_IMAGE_PLACEHOLDER!r} but no image was given.")
            if not text.strip():
                raise ValueError(f"{name}: empty text and no image: nothing to embed.")
            return text
        if text.startswith(MMEB_IMAGE_PLACEHOLDER):
            return self.image_token + text[len(MMEB_IMAGE_PLACEHOLDER) :]
        return self.image_token + "\n" + text.replace(MMEB_IMAGE_PLACEHOLDER, "").strip()

    def _image_tokens(self, count: int) -> str:
        return self.image_start_token + self.image_token * count + self.image_end_token

    # ----------------------------------------------------------------------------------------------------------
    # images

    def process_images(self, images: list) -> tuple[dict, list[int]]:
        """Image inputs of the backbone for a list of loaded images, and the number of image tokens of each."""
        if not self.family.multimodal:
            raise ValueError(f"This processor's backbone ({self.backbone_type}) is text-only: it takes no images.")
        outputs = self.image_processor(images, return_tensors="pt")
        inputs = {name: outputs[name] for name in self.family.image_inputs}
        return inputs, self.family.count_image_tokens(self, outputs)

    def prompt_lengths(
        self, texts: list[str | None], image_sizes: list[tuple[int, int] | None], instruction: str | None = None
    ) -> list[tuple[int, int]]:
        """
        The tokens of each item's prompt before any truncation, and the part of them that truncation cannot shorten
        (template and image tokens), from image sizes alone: no image is opened. A prompt over `max_length` is
        truncated (a warning) when the second leaves room for a token of text, else it is an error.

        Args:
            texts: the items' texts (`None` for an image-only item).
            image_sizes: each item's image size as (height, width), e.g. read from the file's header; `None` for no
                image.
            instruction: as in `__call__`.
        """
        sized = [size for size in image_sizes if size is not None]
        counts = iter(self.family.count_image_tokens_from_sizes(self, sized) if sized else [])
        # one image token stands for each image: the others are added to the count; one tokenizer call for all
        user_texts = [self.format_text(text, size is not None, instruction) for text, size in zip(texts, image_sizes)]
        prompts = [
            self.prompt_template.replace("{text}", user_text.replace(self.image_token, self._image_tokens(1)))
            for user_text in ["", self.image_token, *user_texts]
        ]
        encoded = self.tokenizer(prompts, add_special_tokens=False, return_attention_mask=False)["input_ids"]
        text_only, with_image, *lengths = map(len, encoded)
        result = []
        for length, size in zip(lengths, image_sizes):
            extra = next(counts) - 1 if size is not None else 0
            result.append((length + extra, (with_image if size is not None else text_only) + extra))
        return result

    # ----------------------------------------------------------------------------------------------------------
    # videos

    def _video_tokens(self, video: Video) -> str:
        """The tokens a video expands to, as the backbone lays them out (`BackboneFamily.count_video_tokens`)."""
        family = self.family
        width, height = video.frames[0].size
        steps, per_step = family.count_video_tokens(self, len(video.frames), height, width)
        if not family.video_timestamps:
            return self.image_start_token + self.video_token * (steps * per_step) + self.image_end_token
        # one block per temporal patch, after its time: the mean of its first and last frame's (Qwen3-VL)
        group = self.image_processor.temporal_patch_size
        times = video.timestamps + video.timestamps[-1:] * (-len(video.timestamps) % group)
        return "".join(
            f"<{(times[step * group] + times[step * group + group - 1]) / 2:.1f} seconds>"
            + self.image_start_token + self.video_token * per_step + self.image_end_token
            for step in range(steps)
        )  # fmt: skip

    def fit_video(self, video: Video, name: str) -> Video:
        """`video`, or fewer of its frames (spread uniformly, with a warning) when the prompt template and its tokens
        exceed `video_max_length`; a `ValueError` naming the item when even one frame does not fit."""

        def length(candidate: Video) -> int:
            prompt = self.prompt_template.replace("{text}", self._video_tokens(candidate))
            return len(self.tokenizer(prompt, add_special_tokens=False)["input_ids"])

        # as for images, the template and the visual tokens must leave room for at least one token of text
        if length(video) < self.video_max_length:
            return video
        if length(video.subsample(1)) >= self.video_max_length:
            raise ValueError(
                f"{name}: even one frame of the video takes {length(video.subsample(1))} tokens with the prompt "
                f"template, over video_max_length={self.video_max_length}."
            )
        low, high = 1, len(video.frames) - 1  # the most frames that fit lies in [low, high]
        while low < high:
            middle = (low + high + 1) // 2
            low, high = (middle, high) if length(video.subsample(middle)) < self.video_max_length else (low, middle - 1)
        logger.warning(
            f"{name}: the video's {len(video.frames)} frames exceed video_max_length={self.video_max_length} tokens; "
            f"embedding {low} of them."
        )
        return video.subsample(low)

    def process_videos(self, videos: list[Video]) -> dict:
        """Video inputs of the backbone for a list of loaded videos (in item order)."""
        if not self.family.takes_videos:
            raise ValueError(f"This processor's backbone ({self.backbone_type}) has no video path: it takes no videos.")
        per_video = [self.family.process_video(self, video) for video in videos]
        return {name: torch.cat([inputs[name] for inputs in per_video]) for name in self.family.video_inputs}

    # ----------------------------------------------------------------------------------------------------------
    # tokenization

    def _token_ids(self, text: str, split_special_tokens: bool = False) -> list[int]:
        if not text:
            return []
        return self.tokenizer(text, add_special_tokens=False, split_special_tokens=split_special_tokens)["input_ids"]

    def _writes_special_tokens(self, user_text: str) -> bool:
        """Whether the user's text spells a special token other than the image token `format_text` placed (e.g.
        `<|im_end|><|im_start|>system`): tokenized as one, it would change the prompt's structure."""
        special = [token.content for token in self.tokenizer.added_tokens_decoder.values() if token.special]
        return any(token in user_text for token in special if token != self.image_token)

    def _fit_prompt(self, text: str, visual_text: str, name: str, max_length: int | None = None) -> list[int]:
        """Token ids of the prompt of one item, `visual_text` (the image or video tokens) in place of the image
        token; truncates the user text when the prompt exceeds `max_length` (default `self.max_length`)."""
        max_length = max_length or self.max_length

        def encode(user_text: str) -> list[int]:
            if not self._writes_special_tokens(user_text):
                prompt = self.prompt_template.replace("{text}", user_text.replace(self.image_token, visual_text, 1))
                return self.tokenizer(prompt, add_special_tokens=False)["input_ids"]
            # The user's text is tokenized apart, its special-token strings as plain text; the template's tokens and
            # the image tokens stay special.
            before, after = self.prompt_template.split("{text}", 1)
            parts = user_text.split(self.image_token, 1)
            ids = self._token_ids(before)
            for index, part in enumerate(parts):
                if index:
                    ids += self._token_ids(visual_text)
                ids += self._token_ids(part, split_special_tokens=True)
            return ids + self._token_ids(after)

        ids = encode(text)
        if len(ids) <= max_length:
            return ids
        fixed = len(encode(self.image_token if visual_text else ""))
        if fixed >= max_length:
            raise ValueError(
                f"{name}: the prompt template and image tokens alone take {fixed} tokens, over max_length={max_length}."
            )
        text_ids = self._token_ids(text, split_special_tokens=True)
        keep = len(text_ids) - (len(ids) - max_length)
        while len(ids) > max_length and keep > 0:
            truncated = self.tokenizer.decode(text_ids[:keep])
            if visual_text and self.image_token not in truncated:
                truncated = text.split(self.image_token, 1)[0] + self.image_token
            ids = encode(truncated)
            keep -= max(1, len(ids) - max_length)
        if len(ids) > max_length:
            raise ValueError(f"{name}: cannot fit the prompt into max_length={max_length} tokens.")
        logger.warning(f"{name}: text truncated to fit max_length={max_length} tokens.")
        return ids

    def __call__(
        self,
        text: str | list[str | None] | None = None,
        images=None,
        videos=None,
        instruction: str | None = None,
        return_tensors: str | None = "pt",
        item_names: list[str] | None = None,
        max_length: int | None = None,
        text_kwargs: dict | None = None,
        images_kwargs: dict | None = None,
        audio_kwargs: dict | None = None,
        videos_kwargs: dict | None = None,
        common_kwargs: dict | None = None,
        **kwargs,
    ) -> BatchFeature:
        """
        Args:
            text: one text or a list (an entry may be `None` for an image-only or video-only item).
            images: one image or a list parallel to `text` (PIL images or paths; an entry may be `None`).
            videos: one video or a list parallel to `text`, each a video file path (decoded and sampled with
                `video_fps`, `video_max_frames`), a list of frames (PIL images or image paths, taken as given) or a
                `Video`; an entry may be `None`. The video goes where an image would (the image placeholder in the
                text, else before the text); an item has an image or a video, not both.
            instruction: prepended to every text (e.g. `"Represent the given image for classification."`).
            item_names: names used in error messages (defaults to `"item <i>"`).
            max_length: overrides `self.max_length` for this call.
            text_kwargs, images_kwargs, audio_kwargs, videos_kwargs, common_kwargs: transformers' per-modality
                convention, as sentence-transformers calls processors. Honoured: `padding` (`True`/`"longest"`, what
                this processor always does), `truncation` (true: the user text is always truncated to fit),
                `max_length` and `return_tensors`; any other setting raises `TypeError` rather than being ignored.

        Returns:
            `BatchFeature` with `input_ids`, `attention_mask` and the backbone's image inputs (`pixel_values` with
            `image_sizes` or `image_grid_thw`) and video inputs (`pixel_values_videos` with `video_num_frames` or
            `video_grid_thw`), plus `mm_token_type_ids` for Qwen-VL backbones.
        """
        if kwargs:
            raise TypeError(f"LlaveProcessor got unexpected arguments: {', '.join(kwargs)}.")
        settings = _modality_settings(text_kwargs, images_kwargs, audio_kwargs, videos_kwargs, common_kwargs)
        return_tensors = settings.get("return_tensors", return_tensors)
        max_length = settings.get("max_length", max_length) or self.max_length
        texts = [text] if isinstance(text, str) else list(text) if text is not None else None
        image_list = [images] if images is not None and not isinstance(images, (list, tuple)) else images
        video_list = [videos] if isinstance(videos, (str, os.PathLike, Video)) else videos
        if texts is None and image_list is None and video_list is None:
            raise ValueError("Nothing to process: give `text`, `images` or both, or `videos`.")
        size = parallel_size({"text": texts, "images": image_list, "videos": video_list})
        texts = texts if texts is not None else [None] * size
        image_list = list(image_list) if image_list is not None else [None] * size
        video_list = list(video_list) if video_list is not None else [None] * size
        if size == 0:
            raise ValueError("Nothing to process: the input lists are empty.")
        names = item_names or [f"item {i}" for i in range(size)]
        for name, item_text, image, video in zip(names, texts, image_list, video_list):
            if item_text is not None and not isinstance(item_text, str):
                raise TypeError(f"{name}: a text must be a string or None, got {type(item_text).__name__}.")
            if image is not None and video is not None:
                raise ValueError(f"{name}: both an image and a video; LLaVE embeds one of them per item.")
        if any(video is not None for video in video_list):
            if not self.family.takes_videos:
                raise ValueError(
                    f"This processor's backbone ({self.backbone_type}) has no video path: it takes no videos."
                )
            if not self.video_token:
                raise ValueError(
                    "This processor has no video token (saved before videos were supported?): rebuild it with "
                    "llave_hf.build_processor."
                )

        prompts = [
            self.format_text(item_text, image is not None or video is not None, instruction, name)
            for name, item_text, image, video in zip(names, texts, image_list, video_list)
        ]
        loaded = [
            load_image(image, name, self.max_image_pixels)
            for name, image in zip(names, image_list)
            if image is not None
        ]
        image_inputs, counts = self.process_images(loaded) if loaded else ({}, [])
        loaded_videos = [
            self.fit_video(load_video(video, name, self.video_fps, self.video_max_frames), name)
            for name, video in zip(names, video_list)
            if video is not None
        ]
        video_inputs = self.process_videos(loaded_videos) if loaded_videos else {}
        counts_iter, videos_iter = iter(counts), iter(loaded_videos)
        input_ids = []
        for name, prompt, image, video in zip(names, prompts, image_list, video_list):
            if video is not None:
                video_text = self._video_tokens(next(videos_iter))
                input_ids.append(self._fit_prompt(prompt, video_text, name, self.video_max_length))
            else:
                visual_text = self._image_tokens(next(counts_iter)) if image is not None else ""
                input_ids.append(self._fit_prompt(prompt, visual_text, name, max_length))
        batch = self.tokenizer.pad({"input_ids": input_ids}, padding=True, return_tensors=return_tensors)
        data = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
        data.update(**image_inputs, **video_inputs)
        if "mm_token_type_ids" in self.family.token_inputs:
            token_types = (batch["input_ids"] == self.image_token_id).int()
            if self.video_token_id is not None:
                token_types += 2 * (batch["input_ids"] == self.video_token_id).int()
            data["mm_token_type_ids"] = token_types
        return BatchFeature(data=data, tensor_type=return_tensors)

    @property
    def family(self) -> BackboneFamily:
        """The backbone's entry in the family table."""
        return backbone_family(self.backbone_type)

    @property
    def model_input_names(self):
        family = self.family
        return ["input_ids", "attention_mask", *family.image_inputs, *family.video_inputs, *family.token_inputs]


class LlaveTextProcessor(LlaveProcessor):
    """[`LlaveProcessor`] of text-only backbones: a tokenizer and the LLaVE prompt format, no image processor."""

    def __init__(
        self,
        tokenizer=None,
        backbone_type: str = "qwen2",
        prompt_template: str = LLAVE_PROMPT_TEMPLATE,
        max_length: int = 4096,
        max_image_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS,
        chat_template=None,
        **kwargs,
    ):
        super().__init__(
            None,
            tokenizer,
            backbone_type=backbone_type,
            prompt_template=prompt_template,
            max_length=max_length,
            max_image_pixels=max_image_pixels,
            chat_template=chat_template,
        )


__all__ = [
    "DEFAULT_MAX_IMAGE_PIXELS",
    "ImageTooLargeError",
    "LlaveProcessor",
    "LlaveTextProcessor",
    "pil_image_processor",
    "LLAVE_PROMPT_TEMPLATE",
    "MMEB_IMAGE_PLACEHOLDER",
    "load_image",
    "parallel_size",
    "to_rgb",
    "Video",
    "load_video",
    "decode_video",
    "sample_frame_indices",
    "uniform_indices",
]
