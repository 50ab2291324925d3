# Copyright 2026 The llave-hf authors. Licensed under the Apache License, Version 2.0.
"""
One training run of the emoji demo, in a process of its own: `llave-train` (`llave_hf.cli.train.main`) with a
callback that keeps the run's step count in a file, which the demo reads to draw its progress bars.

    python examples/emoji_demo/train_run.py PROGRESS_FILE PRESET.yaml [--key value ...]

Everything after `PROGRESS_FILE` goes to `llave-train` unchanged: the callback only reads the Trainer's state, so the
run trains exactly as `llave-train PRESET.yaml [--key value ...]` would.
"""

import json
import os
import sys
from pathlib import Path

from transformers import TrainerCallback

from llave_hf.cli import train


class ProgressFileCallback(TrainerCallback):
    """Writes `{"step": ..., "max_steps": ...}` to `path` when training starts and after every optimizer step.

    The file is replaced atomically (written beside, then renamed), so a reader in another process never sees a partial
    write. Only the main process writes.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def _write(self, state):
        if not state.is_world_process_zero:
            return
        partial = self.path.with_name(self.path.name + ".tmp")
        partial.write_text(json.dumps({"step": state.global_step, "max_steps": state.max_steps}), encoding="utf-8")
        os.replace(partial, self.path)

    def on_train_begin(self, args, state, control, **kwargs):
        self._write(state)

    def on_step_end(self, args, state, control, **kwargs):
        self._write(state)


def read_progress(path: str | os.PathLike) -> int:
    """The step count last written by `ProgressFileCallback` to `path`; 0 before the run has written any."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))["step"]
    except FileNotFoundError:
        return 0


def main(argv: list[str] | None = None) -> None:
    """Trains with `llave_hf.cli.train.main(argv[1:])`, reporting progress to the file `argv[0]`."""
    progress_file, *train_argv = sys.argv[1:] if argv is None else argv
    train.main(train_argv, callbacks=[ProgressFileCallback(progress_file)])


if __name__ == "__main__":
    main()
