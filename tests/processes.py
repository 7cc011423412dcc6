"""Real concurrency across processes: several Pythons run one script and start their work at the same moment."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["in_forked_child", "run_together"]


def run_together(code: str, n: int, go: Path, timeout: float = 120) -> list[Any]:
    """Start ``n`` processes on ``code``, which prints ``ready``, waits for the file ``go`` to exist, works, and
    prints one JSON line last; create ``go`` once all are ready; return each process's JSON (all must exit 0)."""
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True) for _ in range(n)]
    try:
        for proc in procs:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        go.touch()
        outputs = [json.loads(proc.communicate(timeout=timeout)[0].strip().splitlines()[-1]) for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert [p.returncode for p in procs] == [0] * n
    return outputs


def in_forked_child(check: Callable[[], bool]) -> bool:
    """Run ``check`` in a child forked from this process (with whatever threads and locks it has now) and return
    its answer; an exception or a crash in the child is False."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            ok = False
            try:
                ok = bool(check())
            finally:
                os.write(write, b"1" if ok else b"0")
        finally:
            os._exit(0)
    os.close(write)
    try:
        _, status = os.waitpid(pid, 0)
        return os.read(read, 1) == b"1" and status == 0
    finally:
        os.close(read)
