"""Runs `llave-eval` and `encode(distributed=True)` in every process of a `torchrun` launch.

Usage: torchrun --nproc_per_node 2 eval_worker.py OUT_DIR MODEL_DIR DATA_DIR
Writes OUT_DIR/eval/ (the evaluation's files) and OUT_DIR/rank<r>.pt: the embeddings `encode` returned on this
process and how many items each path encoded here.
"""

import os
import sys

import torch
import torch.distributed as dist


sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from trainer_fixtures import colour_image  # noqa: E402

from llave_hf.cli.evaluate import main as llave_eval  # noqa: E402
from llave_hf.evaluation import MMEBEvaluator  # noqa: E402
from llave_hf.testing import tiny_model_and_processor  # noqa: E402


def encode_items():
    """Seven items (shares of 4 and 3), texts and images of several lengths."""
    texts = ["a red car", "<|image_1|> Represent the given image.", None, "dog", "a much longer text " * 4, None, "x"]
    images = [None, colour_image(1), colour_image(2), None, None, colour_image(5, size=24), None]
    return texts, images


def main(out_dir: str, model_dir: str, data_dir: str) -> None:
    encoded = {"evaluator": 0, "encode": 0}
    embed_items = MMEBEvaluator._embed_items

    def counting_embed_items(self, name, items, order, *args):
        encoded["evaluator"] += len(order)
        return embed_items(self, name, items, order, *args)

    MMEBEvaluator._embed_items = counting_embed_items
    llave_eval(["--model", model_dir, "--data", data_dir, "--output", os.path.join(out_dir, "eval")]
               + ["--batch-size", "3", "--no-histograms"])  # fmt: skip

    model, _ = tiny_model_and_processor("llava_onevision")
    model.register_forward_pre_hook(
        lambda module, args, kwargs: encoded.__setitem__("encode", encoded["encode"] + len(kwargs["input_ids"])),
        with_kwargs=True,
    )
    texts, images = encode_items()
    embeddings = model.encode(texts=texts, images=images, batch_size=2, distributed=True)
    torch.save({"embeddings": embeddings, **{k: torch.tensor(v) for k, v in encoded.items()}},
               os.path.join(out_dir, f"rank{dist.get_rank()}.pt"))  # fmt: skip


if __name__ == "__main__":
    try:
        main(*sys.argv[1:4])
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
