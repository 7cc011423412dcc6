"""How long another process's writes take to reach this process's local tier, measured with a real second process.

:func:`measure_delivery` starts a writer process (a plain :class:`~cachewise.Cache`, no local tier) that sets one
key ``count`` times, each value carrying the wall-clock time its write began; this process reads the key through a
cache with the local tier on, and notes, for each new value it sees, how long after its write began it saw it (the
write's own round trip, the server's invalidation, then the next read: what a user of the tier waits for).  The
demo's story 12 and ``benchmarks/hit_path.py`` both report it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

__all__ = ["measure_delivery", "quantile_ms"]

#: The other process: writes the key ``count`` times, each value carrying the wall-clock time it was written at.
_WRITER = r"""
import json, sys, time
from cachewise import Cache
url, namespace, key, count, gap = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5])
with Cache(url, namespace=namespace, default_ttl=60) as cache:
    print("ready", flush=True)
    sys.stdin.readline()
    for n in range(1, count + 1):
        cache.set(key, {"n": n, "at": time.time()})
        time.sleep(gap)
print(json.dumps({"written": count}), flush=True)
"""


def measure_delivery(
    tiered: Any, count: int = 50, gap: float = 0.01, poll: float = 0.0002, key: str = "written-elsewhere"
) -> list[float]:
    """Seconds from each of ``count`` writes made by another process (``gap`` seconds apart) to ``tiered`` (a
    :class:`~cachewise.Cache` with ``local=`` on, read every ``poll`` seconds) returning the new value; a write
    whose value was overtaken before it was read has no entry.  The writer uses ``tiered``'s server and
    namespace."""
    url, namespace = tiered.connection.target, tiered.namespace
    proc = subprocess.Popen(
        [sys.executable, "-c", _WRITER, url, namespace, key, str(count), str(gap)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    delays: list[float] = []
    try:
        assert proc.stdin is not None and proc.stdout is not None
        if proc.stdout.readline().strip() != "ready":
            return delays
        proc.stdin.write("go\n")
        proc.stdin.flush()
        seen, deadline = 0, time.monotonic() + 10 + count * (gap + 0.04)
        while seen < count and time.monotonic() < deadline:
            value = tiered.get(key)
            if isinstance(value, dict) and value["n"] > seen:
                delays.append(max(0.0, time.time() - value["at"]))
                seen = value["n"]
            time.sleep(poll)
        json.loads(proc.communicate(timeout=30)[0].strip().splitlines()[-1])
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return delays


def quantile_ms(delays: Sequence[float], quantile: float) -> float:
    """The ``quantile`` (0..1, nearest rank) of ``delays``, in milliseconds."""
    ordered = sorted(delays)
    return 1000 * ordered[max(0, min(len(ordered) - 1, round(quantile * len(ordered)) - 1))]
