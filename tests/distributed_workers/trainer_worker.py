"""Runs a few ContrastiveTrainer steps in every process of a `torchrun` launch and saves the final parameters.

Usage: torchrun --nproc_per_node 2 trainer_worker.py OUT_DIR RUN [RUN ...]
A RUN is `name:family:per_device_batch:grad_cache_chunk_size:zero_stage[:lora_r]` (zero_stage 0 = DDP; with lora_r,
LoRA adapters of that rank (`tests/test_lora.py`'s `lora_model`) trained with SGD).
"""

import os
import sys

import torch
import torch.distributed as dist


sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from trainer_fixtures import SGD_COMPARISON, TinyCollator, rows, tiny_training_args  # noqa: E402

from llave_hf.testing import tiny_model_and_processor  # noqa: E402
from llave_hf.trainer import ContrastiveTrainer  # noqa: E402



def train(out_dir: str, name: str, family: str, batch: int, chunk: int, zero_stage: int, lora_r: int = 0) -> None:
    model, processor = tiny_model_and_processor(family, seed=0)
    overrides = SGD_COMPARISON  # SGD: a wrong gradient scale shows in the parameters (Adam normalises it away)
    if lora_r:
        from test_lora import lora_model

        model, overrides = lora_model(model, lora_r), {"optim": "sgd"}
    deepspeed = None
    if zero_stage:
        deepspeed = {
            "zero_optimization": {"stage": zero_stage},
            "train_micro_batch_size_per_gpu": "auto",
            "gradient_accumulation_steps": "auto",
            "train_batch_size": "auto",
            "gradient_clipping": "auto",
        }
    args = tiny_training_args(
        os.path.join(out_dir, name),
        per_device_train_batch_size=batch,
        grad_cache_chunk_size=chunk,
        deepspeed=deepspeed,
        **overrides,
    )
    trainer = ContrastiveTrainer(
        model=model,
        args=args,
        train_dataset=rows(batch * args.max_steps * args.world_size, negatives=1),
        data_collator=TinyCollator(processor),
        processing_class=processor,
    )
    trainer.train()
    if args.process_index == 0:
        unwrapped = trainer.accelerator.unwrap_model(trainer.model)
        torch.save(
            {"params": {k: v.detach().cpu() for k, v in unwrapped.state_dict().items()}, "logs": trainer.state.log_history},
            os.path.join(out_dir, f"{name}.pt"),
        )


if __name__ == "__main__":
    out_dir = sys.argv[1]
    for run in sys.argv[2:]:
        name, family, *numbers = run.split(":")
        train(out_dir, name, family, *map(int, numbers))
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
