# Copyright 2026 The llave-hf Authors. Licensed under the Apache License, Version 2.0.
"""`llave-eval-video`: zero-shot text-video retrieval on MSR-VTT 1k-A or MSVD, as the LLaVE paper reports it
(R@1/5/10, median and mean rank, text->video and video->text). Resumes from the embeddings in --output."""

import argparse
from collections.abc import Sequence

import torch
from transformers import AutoModel, AutoProcessor

from ..evaluation.video import VideoRetrievalEvaluator, format_video_results, load_msrvtt, load_msvd


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="llave-eval-video", description=__doc__)
    parser.add_argument("--model", required=True, help="model folder or Hub id (loaded with trust_remote_code)")
    parser.add_argument("--dataset", required=True, choices=["msrvtt", "msvd"])
    parser.add_argument("--videos", required=True, help="folder of the video files (<video_id>.mp4 / .avi)")
    parser.add_argument("--csv", help="MSR-VTT: MSRVTT_JSFUSION_test.csv (columns video_id, sentence)")
    parser.add_argument("--captions", help="MSVD: raw-captions.pkl, or a text file of '<video_id> <caption>' lines")
    parser.add_argument("--test-list", help="MSVD: test_list.txt (one video id per line)")
    parser.add_argument("--output", required=True, help="folder for embeddings (resumable) and <name>.json")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--max-videos", type=int, default=None, help="only the first N videos and their captions")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="auto", help="model dtype, e.g. bfloat16 (default: the checkpoint's)")
    args = parser.parse_args(argv)
    if args.dataset == "msrvtt" and not args.csv:
        parser.error("--dataset msrvtt needs --csv")
    if args.dataset == "msvd" and not (args.captions and args.test_list):
        parser.error("--dataset msvd needs --captions and --test-list")
    return args


def main(argv: Sequence[str] | None = None):
    """Runs `llave-eval-video` with `argv` (default: the command line)."""
    args = parse_args(argv)
    # Data first: a bad file list fails before the model is loaded.
    if args.dataset == "msrvtt":
        data = load_msrvtt(args.csv, args.videos)
    else:
        data = load_msvd(args.captions, args.test_list, args.videos)
    if args.max_videos:
        data = data.subset(args.max_videos)
    data.check_files()
    model = AutoModel.from_pretrained(args.model, trust_remote_code=True, dtype=args.dtype).to(args.device).eval()
    processor = AutoProcessor.from_pretrained(args.model, trust_remote_code=True)
    results = VideoRetrievalEvaluator(data, output_dir=args.output, batch_size=args.batch_size)(model, processor)
    print(format_video_results(results, data.name), end="")


if __name__ == "__main__":
    main()
