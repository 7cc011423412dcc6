"""Prometheus export of a cache's counters (extra ``[metrics]``: ``prometheus-client``).

Nothing is added to a hit: a scrape reads the counters the cache keeps anyway (:meth:`~cachewise.Cache.stats`),
turned into families by :mod:`cachewise.metrics.families`.  Only the histograms cost something, when the counters
are folded (once per 4096 commands, and at each scrape): each duration is put in its bucket there.

* One process: :func:`instrument` registers a collector in a registry (the default one unless told): scrape it as
  usual (``prometheus_client.start_http_server``, ``make_asgi_app``, ``generate_latest``).  Exact at every scrape.
* Several worker processes (gunicorn, uvicorn ``--workers``): with ``PROMETHEUS_MULTIPROC_DIR`` set (or
  ``directory=``), each process writes its families to ``cachewise-<pid>-<n>.json`` there every ``interval``
  seconds, when the process exits, and on :meth:`Metrics.flush`; the process that serves ``/metrics`` adds
  :class:`MultiProcessCollector` to the registry it builds for ``prometheus_client``'s own multi-process mode.  Files
  of processes that have exited stay, as counters must: delete the directory's files when the service restarts,
  as ``prometheus_client`` asks for its own.
"""

from __future__ import annotations

import atexit
import glob
import itertools
import json
import math
import os
import tempfile
import threading
import weakref
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from ..errors import ConfigurationError
from ..forks import reset_in_child
from .families import Family, families, merge, since

if TYPE_CHECKING:
    from ..cache import Cache

try:
    from prometheus_client import REGISTRY, CollectorRegistry
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
    from prometheus_client.utils import floatToGoString as _go_float
except ImportError as exc:  # pragma: no cover - the extra is missing
    raise ImportError("cachewise.metrics needs prometheus-client: pip install 'cachewise[metrics]'") from exc

__all__ = ["DEFAULT_BUCKETS", "CacheCollector", "Metrics", "MultiProcessCollector", "instrument", "render"]

#: Upper bounds (seconds) of the duration histograms: a loopback round trip is ~0.1 ms, a database load 1 ms to 10 s.
DEFAULT_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)

_FILES = "cachewise-*.json"
_numbers = itertools.count()
#: One collector per registry, holding every cache instrumented into it: one family per metric name.
_collectors: weakref.WeakKeyDictionary[CollectorRegistry, CacheCollector] = weakref.WeakKeyDictionary()
_collectors_lock = threading.Lock()


def snapshot(cache: Cache) -> list[Family]:
    """The families of ``cache`` now."""
    return families(cache.stats(), cache.report.registry.durations())


def render(parts: Iterable[Family]) -> Iterator[Metric]:
    """``prometheus_client`` metric families of these families."""
    for family in parts:
        metric: Any
        if family.kind == "counter":
            metric = CounterMetricFamily(family.name, family.help, labels=family.labels)
            for labels, value in family.samples:
                metric.add_metric(labels, value)
        elif family.kind == "gauge":
            metric = GaugeMetricFamily(family.name, family.help, labels=family.labels)
            for labels, value in family.samples:
                metric.add_metric(labels, value)
        else:
            metric = HistogramMetricFamily(family.name, family.help, labels=family.labels)
            for labels, (buckets, total) in family.samples:
                metric.add_metric(labels, [(_bound(bound), count) for bound, count in buckets], total)
        yield metric


class CacheCollector:
    """A ``prometheus_client`` collector of some caches' counters, read at each scrape."""

    def __init__(self, caches: Sequence[Cache]) -> None:
        self.caches = list(caches)

    def collect(self) -> Iterator[Metric]:
        return render(merge(snapshot(cache) for cache in self.caches))

    def describe(self) -> list[Metric]:
        return []  # registered without a first collect


class MultiProcessCollector:
    """The families every process wrote to ``directory`` (default ``PROMETHEUS_MULTIPROC_DIR``), summed; add it to the
    registry that serves ``/metrics`` beside ``prometheus_client.multiprocess.MultiProcessCollector``."""

    def __init__(self, registry: CollectorRegistry | None = None, directory: str | None = None) -> None:
        self.directory = _directory(directory)
        if registry is not None:
            registry.register(self)

    def collect(self) -> Iterator[Metric]:
        parts = []
        for path in sorted(glob.glob(os.path.join(self.directory, _FILES))):
            try:
                with open(path, encoding="utf-8") as fh:
                    parts.append(_load(json.load(fh)))
            except (OSError, ValueError):  # being replaced right now, or not ours: the next scrape reads it
                continue
        return render(merge(parts))

    def describe(self) -> list[Metric]:
        return []


class Metrics:
    """The export of one cache (what :func:`instrument` returns): :meth:`flush` writes its file now (several
    processes), :meth:`close` stops exporting."""

    def __init__(
        self, cache: Cache, registry: CollectorRegistry | None, directory: str | None, interval: float
    ) -> None:
        self.cache = cache
        self.registry = registry
        self.directory = directory
        self.interval = interval
        self._registered = False
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._baseline: list[Family] | None = None  # a forked child exports what it did itself
        self.path: str | None = None
        if directory is None:
            target = registry or REGISTRY
            with _collectors_lock:
                collector = _collectors.get(target)
                if collector is None:
                    collector = _collectors[target] = CacheCollector([])
                    target.register(collector)
                if any(c is cache for c in collector.caches):
                    raise ConfigurationError(f"{cache!r} is instrumented in this registry already")
                collector.caches.append(cache)
            self._registered = True
        else:
            self._start()
            atexit.register(self.flush)
            reset_in_child(self)

    def flush(self) -> None:
        """Write this process's families to its file now (several processes; a no-op otherwise)."""
        if self.directory is None or self.path is None:
            return
        parts = snapshot(self.cache)
        if self._baseline is not None:
            parts = since(parts, self._baseline)
        data = json.dumps(_dump(parts))
        with self._lock:
            fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".cachewise-", suffix=".tmp")
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(data)
            os.replace(tmp, self.path)  # a scrape reads the old file or the new one, never half of one

    def close(self) -> None:
        """Stop exporting: unregister the collector, or write the file a last time and stop its thread."""
        if self._registered:
            target = self.registry or REGISTRY
            with _collectors_lock:
                collector = _collectors.get(target)
                if collector is not None:
                    collector.caches = [c for c in collector.caches if c is not self.cache]
                    if not collector.caches:
                        target.unregister(collector)
                        del _collectors[target]
            self._registered = False
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.flush()
        atexit.unregister(self.flush)

    def reset_after_fork(self) -> None:
        """In a forked child: a file of its own, the counts it inherited left out, a writer thread again."""
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._baseline = snapshot(self.cache)
        self._start()

    def _start(self) -> None:
        assert self.directory is not None
        self.path = os.path.join(self.directory, f"cachewise-{os.getpid()}-{next(_numbers)}.json")
        self.flush()
        self._thread = threading.Thread(target=self._run, name="cachewise-metrics", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.flush()
            except OSError:  # the directory went away: try again later
                continue


def instrument(
    cache: Cache,
    registry: CollectorRegistry | None = None,
    *,
    buckets: Sequence[float] = DEFAULT_BUCKETS,
    directory: str | None = None,
    interval: float = 1.0,
) -> Metrics:
    """Export ``cache``'s counters to Prometheus: registered in ``registry`` (default: ``prometheus_client``'s), or,
    with ``directory`` / ``PROMETHEUS_MULTIPROC_DIR`` set, written there for :class:`MultiProcessCollector`."""
    if not (isinstance(interval, (int, float)) and math.isfinite(interval) and interval > 0):
        raise ConfigurationError(f"interval={interval!r}: give the seconds between two writes, e.g. 1.0")
    cache.report.registry.track_durations(buckets)
    chosen = directory or os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if chosen is not None:
        chosen = _directory(chosen)
    return Metrics(cache, registry, chosen, float(interval))


def _bound(bound: float) -> str:
    """A bucket's upper bound as Prometheus writes it (``+Inf``, ``0.001``)."""
    text: str = _go_float(bound)  # type: ignore[no-untyped-call]
    return text


def _directory(directory: str | None) -> str:
    chosen = directory or os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not chosen:
        raise ConfigurationError(
            "several processes: set PROMETHEUS_MULTIPROC_DIR (or pass directory=) to a folder they all can write"
        )
    if not os.path.isdir(chosen):
        raise ConfigurationError(f"metrics directory {chosen!r} does not exist: create it before the workers start")
    return chosen


def _dump(parts: list[Family]) -> list[dict[str, Any]]:
    out = []
    for family in parts:
        samples: list[Any] = []
        for labels, value in family.samples:
            if family.kind == "histogram":
                buckets, total = value
                value = [[("+Inf" if math.isinf(b) else b), c] for b, c in buckets], total
            samples.append([list(labels), value])
        out.append({"name": family.name, "kind": family.kind, "help": family.help, "labels": list(family.labels),
                    "samples": samples})  # fmt: skip
    return out


def _load(data: list[dict[str, Any]]) -> list[Family]:
    out = []
    for item in data:
        family = Family(item["name"], item["kind"], item["help"], tuple(item["labels"]))
        for labels, value in item["samples"]:
            if family.kind == "histogram":
                buckets, total = value
                value = ([(math.inf if b == "+Inf" else float(b), c) for b, c in buckets], total)
            family.samples.append((tuple(labels), value))
        out.append(family)
    return out
