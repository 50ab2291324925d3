"""Cost of embedding one video: tokens, and seconds for decoding, preprocessing and the forward pass, side by side.

The video is MSR-VTT-like (320x240, 30 fps, 10 s: 300 frames -> 30 sampled at 3 fps, or 32 at the cap for longer
ones), written with PyAV. The model is a tiny random LLaVA-OneVision (hidden 64, 2 layers) with LLaVE's real vision
geometry (384-px frames, 14-px patches: 27x27 features pooled to 14x14 = 196 tokens per frame), so the token count
is the real one and the forward time is that of a tiny language model over it.

    python benchmarks/bench_video.py [--seconds 10] [--repeats 3]
"""

import argparse
import os
import statistics
import tempfile
import time

import av
import numpy as np
import torch

from llave_hf.modeling.configuration_llave import LlaveEmbeddingConfig
from llave_hf.modeling.modeling_llave import LlaveEmbeddingModel
from llave_hf.modeling.processing_llave import decode_video
from llave_hf.processors import build_processor
from llave_hf.testing import tiny_backbone_config, tiny_image_processor, tiny_tokenizer


def write_video(path: str, seconds: float, width: int = 320, height: int = 240, fps: int = 30) -> None:
    rng = np.random.default_rng(0)
    with av.open(path, "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        base = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        for index in range(int(seconds * fps)):
            frame = np.roll(base, 4 * index, axis=1)  # a moving texture: realistic decode work
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    tokenizer = tiny_tokenizer()
    backbone = tiny_backbone_config("llava_onevision", tokenizer, image_size=384, patch_size=14, max_position_embeddings=16384)
    torch.manual_seed(0)
    model = LlaveEmbeddingModel._from_config(LlaveEmbeddingConfig(backbone_config=backbone)).eval()
    processor = build_processor(backbone, tokenizer, tiny_image_processor("llava_onevision", image_size=384), max_length=8192)

    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "clip.mp4")
        write_video(path, args.seconds)
        timings = {"decode + sample": [], "preprocess": [], "forward": []}
        for _ in range(args.repeats):
            start = time.perf_counter()
            video = decode_video(path, "clip")
            decoded = time.perf_counter()
            inputs = processor(text=["<|image_1|>\nRepresent the given video."], videos=[video])
            processed = time.perf_counter()
            with torch.inference_mode():
                model(**inputs)
            timings["decode + sample"].append(decoded - start)
            timings["preprocess"].append(processed - decoded)
            timings["forward"].append(time.perf_counter() - processed)

    tokens = int(inputs["attention_mask"].sum())
    video_tokens = int((inputs["input_ids"] == processor.video_token_id).sum())
    print(f"video: {args.seconds:g} s at 30 fps, 320x240 -> {len(video.frames)} frames sampled")
    print(f"prompt tokens: {tokens} ({video_tokens} video tokens: {len(video.frames)} x 196 + 1 newline)")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; median of {args.repeats}:")
    total = 0.0
    for name, values in timings.items():
        median = statistics.median(values)
        total += median
        print(f"  {name:16s} {median:6.2f} s")
    print(f"  {'total':16s} {total:6.2f} s per video (tiny 2-layer, 64-wide language model)")


if __name__ == "__main__":
    main()
