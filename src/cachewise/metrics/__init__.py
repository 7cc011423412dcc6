"""Operations: the cache's counters as Prometheus metrics (extra ``[metrics]``).

>>> from cachewise.metrics import instrument
>>> metrics = instrument(cache)        # then scrape prometheus_client's registry as usual

:mod:`cachewise.metrics.families` (pure: which metrics, named how, with which bounded labels) and
:mod:`cachewise.metrics.prometheus` (the exporter, one process or several).  See README "Operating it".
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .families import DIRECT, Family, families, merge

if TYPE_CHECKING:
    from .prometheus import Metrics, MultiProcessCollector, instrument

__all__ = ["DIRECT", "Family", "Metrics", "MultiProcessCollector", "families", "instrument", "merge"]


def __getattr__(name: str) -> Any:
    """The exporter's names, imported on first use (it needs ``prometheus-client``)."""
    if name in ("Metrics", "MultiProcessCollector", "instrument"):
        from . import prometheus

        return getattr(prometheus, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
