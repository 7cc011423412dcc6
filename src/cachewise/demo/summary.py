"""The demo's closing tables: what ``cache.stats()`` counted, and the TTL audit of the demo's keys."""

from __future__ import annotations

from collections.abc import Callable

from rich.console import Console

from ..stats import CacheStats, Counters
from .namespace import TTLAudit
from .tables import TITLES, format_ms, new_table

__all__ = ["show_audit", "show_stats"]


_ROWS: tuple[tuple[str, Callable[[Counters], str]], ...] = (
    ("hits", lambda c: f"{c.hits:,}"),
    ("misses", lambda c: f"{c.misses:,}"),
    ("hit ratio", lambda c: f"{c.hit_ratio:.1%}"),
    ("loads (loader runs)", lambda c: f"{c.loads:,}"),
    ("mean load", lambda c: format_ms(c.mean_load_ms)),
    ("server round trips", lambda c: f"{c.roundtrips:,}"),
    ("mean round trip", lambda c: format_ms(c.mean_roundtrip_ms)),
    ("server errors (failed open)", lambda c: f"{c.errors:,}"),
)


def show_stats(console: Console, stats: CacheStats) -> None:
    """What ``cache.stats()`` counted during the demo: one column per cached function, then the namespace."""
    scopes = [(name.rsplit(".", 1)[-1] + "()", c) for name, c in sorted(stats.functions.items())]
    scopes.append((f"namespace {stats.namespace}", stats.total))
    table = new_table(TITLES[12], "cache.stats()", *(name for name, _ in scopes))
    for label, show in _ROWS:
        table.add_row(label, *(show(c) for _, c in scopes))
    console.print(table)


def show_audit(console: Console, audit: TTLAudit, pattern: str) -> None:
    """The anti-pattern check: a key without a TTL on the server is a bug waiting to happen."""
    table = new_table(TITLES[13], "check", "result")
    table.add_row(f"keys matching {pattern!r}", f"{audit.keys:,}")
    table.add_row("keys without a TTL", str(len(audit.without_ttl)))
    if audit.min_pttl_ms is not None and audit.max_pttl_ms is not None:
        table.add_row("PTTL range", f"{audit.min_pttl_ms:,} .. {audit.max_pttl_ms:,} ms")
    if audit.without_ttl:
        shown = ", ".join(audit.without_ttl[:5]) + (" ..." if len(audit.without_ttl) > 5 else "")
        table.caption = f"[red]keys without a TTL: {shown}[/]"
    else:
        table.caption = "[green]all have a TTL[/]"
    console.print(table)
