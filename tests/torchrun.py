"""Two-process launches for the multi-process tests: `torchrun` on CPU with gloo, on loopback."""

import os
import socket
import subprocess
import sys
from pathlib import Path


# gloo's worker threads sometimes abort a process's interpreter teardown after its work is done ("terminate called
# without an active exception", exit code -6/134), even with the process group destroyed: an abort of the launcher's
# exit status, not of the run, which is then run again (up to ATTEMPTS times in all).
_TEARDOWN_ABORT = "terminate called without an active exception"
ATTEMPTS = 3


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def torchrun(script: str | Path, *arguments: str, timeout: int = 600, cwd=None, env=None) -> str:
    """Runs `script arguments` in 2 processes; returns their output, failing the test (with it) on a non-zero exit."""
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", **(env or {})}
    aborts = 0
    for _ in range(ATTEMPTS):
        command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1"]
        command += ["--master_port", str(free_port()), str(script), *map(str, arguments)]
        result = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=timeout, cwd=cwd)
        if result.returncode == 0 or _TEARDOWN_ABORT not in result.stdout + result.stderr:
            break
        aborts += 1
    assert result.returncode == 0, f"{aborts} teardown abort(s)\n" + result.stdout[-3000:] + result.stderr[-6000:]
    return result.stdout + result.stderr
