"""Which transport a URL needs: one server (:class:`Connection`) or a Cluster (:class:`ClusterConnection`)."""

from __future__ import annotations

from .cluster import ClusterConnection
from .connection import ClientOptions, Connection
from .urls import parse_url

__all__ = ["AnyConnection", "connect"]

#: What the executor sends through: both have ``send``/``asend``, ``sync``, ``notifier``, ``breaker``, ``close``.
AnyConnection = Connection | ClusterConnection


def connect(url: str | None, options: ClientOptions | None = None) -> AnyConnection:
    """The transport for ``url`` (None: ``CACHEWISE_URL``, else ``embedded://``)."""
    address = parse_url(url)
    options = options or ClientOptions()
    if address.scheme == "embedded+cluster":
        from ..server.cluster import release_cluster, shared_cluster

        cluster = shared_cluster()
        try:
            return ClusterConnection(
                parse_url(cluster.url), options, list(parse_url(cluster.url).seeds), server=cluster
            )
        except BaseException:
            release_cluster(cluster)
            raise
    if address.cluster:
        return ClusterConnection(address, options, list(address.seeds))
    return Connection(url, options)
