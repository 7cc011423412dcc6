"""Two versions of cachewise, one benchmark, one run: the ratios of each case printed side by side.

A refactor must not cost speed; this is how to check it.  ``--old`` is a source tree of the other version (e.g. a
``git worktree add /tmp/old <commit>``); the benchmark script comes from *this* tree and imports cachewise from the
tree under test (through ``PYTHONPATH``: the benchmarks use the public API only).  The two are run alternately,
``--repeat`` times each, so that machine noise hits both alike, and for each case the median of its ratios to the
raw baseline is printed for both, with the change.

Run from the repository root::

    git worktree add /tmp/old <commit>
    .venv/bin/python benchmarks/versus.py --old /tmp/old hit_path.py -- --no-peers --pin same
    .venv/bin/python benchmarks/versus.py --old /tmp/old ratelimit.py -- --no-limits --pin same
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

HERE = Path(__file__).resolve().parent
console = Console(width=160)


def run_once(script: Path, src: Path, extra: list[str], out: Path) -> list[dict[str, Any]]:
    """Run ``script`` with cachewise imported from ``src``; its per-case rows."""
    env = dict(os.environ, PYTHONPATH=str(src))
    cmd = [sys.executable, str(script), "--json", str(out), *extra]
    done = subprocess.run(cmd, env=env, cwd=HERE.parent, capture_output=True, text=True, check=False)
    if done.returncode != 0 or not out.exists():
        raise SystemExit(f"{script.name} with {src} failed ({done.returncode}):\n{done.stdout[-2000:]}{done.stderr}")
    doc = json.loads(out.read_text())
    rows: list[dict[str, Any]] = doc.get("cases") or doc.get("cost") or []
    return rows


def ratios(runs: list[list[dict[str, Any]]]) -> dict[str, list[float]]:
    by_case: dict[str, list[float]] = {}
    for rows in runs:
        for row in rows:
            if row.get("ratio") is not None:
                by_case.setdefault(row["case"], []).append(row["ratio"])
    return by_case


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--old", required=True, type=Path, help="source tree of the version to compare with")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each version, alternating (default 3)")
    parser.add_argument("script", help="a benchmark of this directory that writes --json (hit_path.py, ratelimit.py)")
    parser.add_argument("extra", nargs="*", help="arguments for the benchmark (after --)")
    args = parser.parse_args(argv)
    script = HERE / args.script
    trees = {"old": args.old.resolve() / "src", "new": HERE.parent / "src"}
    for name, src in trees.items():
        if not (src / "cachewise" / "__init__.py").exists():
            parser.error(f"{name}: no cachewise package under {src}")
    runs: dict[str, list[list[dict[str, Any]]]] = {"old": [], "new": []}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeat):
            for name in ("old", "new") if i % 2 == 0 else ("new", "old"):
                console.print(f"run {i + 1}/{args.repeat}: {name}", style="dim")
                runs[name].append(run_once(script, trees[name], args.extra, Path(tmp) / f"{name}{i}.json"))
    old, new = ratios(runs["old"]), ratios(runs["new"])
    table = Table(title=f"{args.script}: median × raw over {args.repeat} runs each", title_justify="left")
    for column in ("case", "old × raw", "new × raw", "change"):
        table.add_column(column, justify="left" if column == "case" else "right")
    for case in dict.fromkeys([*old, *new]):
        a = statistics.median(old[case]) if case in old else None
        b = statistics.median(new[case]) if case in new else None
        change = f"{(b / a - 1) * 100:+.1f} %" if a and b else "—"
        table.add_row(case, f"{a:.2f}×" if a else "—", f"{b:.2f}×" if b else "—", change)
    console.print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
