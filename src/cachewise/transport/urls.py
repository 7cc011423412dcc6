"""Server URLs, without I/O: which server a :class:`~cachewise.Cache` talks to.

* ``embedded://`` — a private Valkey started by cachewise in a temporary directory (the default);
  ``embedded:///some/dir`` — one kept in ``some/dir``, shared with other local processes using the same URL.
* ``redis://[user:password@]host:port/db``, ``rediss://`` (TLS), ``unix:///path/to.sock?db=0``.
* ``redis+cluster://[user:password@]host:port[,host:port...]`` and ``rediss+cluster://`` — a Redis/Valkey Cluster
  (the seed nodes; the rest of the topology is discovered); ``embedded+cluster://`` — a private local cluster
  (3 primaries, 3 replicas) started from the embedded binary.
* ``redis+sentinel://[user:password@]host:port[,host:port...]/service_name[/db]`` — the primary of a
  Sentinel-managed set (the sentinels' addresses; ``?sentinel_password=`` for sentinels that need one, the
  user-info or ``?password=`` for the data nodes); ``embedded+sentinel://`` — a private local set (1 primary,
  1 replica, 3 sentinels) started from the embedded binary.

``CACHEWISE_URL`` is used when code passes no URL.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit, urlunsplit

from ..errors import ConfigurationError

__all__ = ["DEFAULT_URL", "ENV_VAR", "ServerAddress", "parse_url", "redact"]

ENV_VAR = "CACHEWISE_URL"
DEFAULT_URL = "embedded://"
_SCHEMES = (
    "embedded",
    "redis",
    "rediss",
    "unix",
    "redis+cluster",
    "rediss+cluster",
    "embedded+cluster",
    "redis+sentinel",
    "embedded+sentinel",
)


@dataclass(frozen=True)
class ServerAddress:
    """A parsed server URL."""

    url: str
    scheme: str
    #: For ``embedded://``: the directory to keep the server in (None: a private temporary one).
    directory: str | None = None
    #: For a cluster URL: the seed nodes (for a Sentinel URL: the sentinels), and the client options the URL gives
    #: (username, password, ssl).
    seeds: tuple[tuple[str, int], ...] = ()
    options: tuple[tuple[str, Any], ...] = ()
    #: For a Sentinel URL: the monitored service's name, its database, and the sentinels' own options
    #: (``sentinel_password``, ``sentinel_username``).
    service: str = ""
    db: int = 0
    sentinel_options: tuple[tuple[str, Any], ...] = ()

    @property
    def cluster(self) -> bool:
        return self.scheme.endswith("+cluster")

    @property
    def sentinel(self) -> bool:
        return self.scheme.endswith("+sentinel")

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.options)

    @property
    def embedded(self) -> bool:
        return self.scheme == "embedded"

    def __repr__(self) -> str:
        return f"ServerAddress({redact(self.url)!r})"


def parse_url(url: str | None) -> ServerAddress:
    """Parse a URL (None: ``CACHEWISE_URL``, else ``embedded://``)."""
    if url is None:
        url = os.environ.get(ENV_VAR) or DEFAULT_URL
    if not isinstance(url, str):
        raise ConfigurationError(f"a server URL must be a string, got {type(url).__name__}")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in _SCHEMES:
        raise ConfigurationError(
            f"cannot use server URL {redact(url)!r}: the scheme must be one of "
            + ", ".join(f"{s}://" for s in _SCHEMES)
        )
    if scheme in ("embedded+cluster", "embedded+sentinel"):
        return ServerAddress(url=url, scheme=scheme)
    if scheme in ("redis+cluster", "rediss+cluster"):
        return _cluster_address(url, scheme)
    if scheme == "redis+sentinel":
        return _sentinel_address(url, scheme)
    if scheme == "embedded":
        directory = (parts.netloc + parts.path) or None
        if parts.netloc and not parts.path:
            raise ConfigurationError(
                f"embedded URL {url!r}: give an absolute directory with three slashes, e.g. embedded:///var/cache/cw"
            )
        return ServerAddress(url=url, scheme=scheme, directory=directory)
    if scheme in ("redis", "rediss") and not parts.hostname:
        raise ConfigurationError(f"server URL {redact(url)!r} has no host: e.g. redis://127.0.0.1:6379/0")
    try:
        parts.port  # noqa: B018 - validates the port, which urlsplit parses lazily
    except ValueError:
        raise ConfigurationError(
            f"server URL {redact(url)!r} has no valid port; if the password contains '/', '?', '#' or '@', "
            "percent-encode it (urllib.parse.quote(password, safe=''))"
        ) from None
    if scheme == "unix" and not parts.path:
        raise ConfigurationError(f"server URL {redact(url)!r} has no socket path: e.g. unix:///run/redis.sock")
    return ServerAddress(url=url, scheme=scheme)


def _cluster_address(url: str, scheme: str) -> ServerAddress:
    """``redis+cluster://[user:password@]host:port[,host:port...][?param=value]``."""
    rest, query = _split(url)
    if "/" in rest:
        raise ConfigurationError(
            f"cluster URL {redact(url)!r} names a database: a Redis Cluster has only database 0, drop the '/...'"
        )
    userinfo, _, hosts = rest.rpartition("@")
    options = _credentials(userinfo, query)
    if scheme == "rediss+cluster":
        options.append(("ssl", True))
    seeds = _hosts(hosts, url, "cluster URL", "redis+cluster://10.0.0.1:7000,10.0.0.2:7000")
    return ServerAddress(url=url, scheme=scheme, seeds=seeds, options=tuple(options))


def _sentinel_address(url: str, scheme: str) -> ServerAddress:
    """``redis+sentinel://[user:password@]host:port[,host:port...]/service_name[/db][?param=value]``."""
    example = "redis+sentinel://10.0.0.1:26379,10.0.0.2:26379/mymaster/0"
    rest, query = _split(url)
    userinfo, _, located = rest.rpartition("@")
    hosts, _, path = located.partition("/")
    service, _, db = path.partition("/")
    if not service:
        raise ConfigurationError(
            f"Sentinel URL {redact(url)!r} names no service: give the monitored primary's name after the hosts, "
            f"e.g. {example}"
        )
    if db and not db.isdigit():
        raise ConfigurationError(f"Sentinel URL {redact(url)!r}: the database must be a number, e.g. {example}")
    sentinel_options = [
        (key, value) for key, value in parse_qsl(query) if key in ("sentinel_password", "sentinel_username")
    ]
    seeds = _hosts(hosts, url, "Sentinel URL", example)
    return ServerAddress(
        url=url,
        scheme=scheme,
        seeds=seeds,
        options=tuple(_credentials(userinfo, query)),
        service=unquote(service),
        db=int(db or 0),
        sentinel_options=tuple(sentinel_options),
    )


def _split(url: str) -> tuple[str, str]:
    """What follows the scheme of a many-host URL, without trailing slashes, and its query."""
    rest, _, query = url.split("://", 1)[1].partition("?")
    return rest.rstrip("/"), query


def _credentials(userinfo: str, query: str) -> list[tuple[str, Any]]:
    """The data nodes' username and password, from the user-info or the query."""
    options: list[tuple[str, Any]] = []
    if userinfo:
        user, _, password = userinfo.partition(":")
        if user:
            options.append(("username", unquote(user)))
        if password:
            options.append(("password", unquote(password)))
    for key, value in parse_qsl(query):
        if key in ("password", "username"):
            options.append((key, value))
    return options


def _hosts(hosts: str, url: str, what: str, example: str) -> tuple[tuple[str, int], ...]:
    seeds = []
    for item in hosts.split(","):
        host, sep, port = item.strip().rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ConfigurationError(f"{what} {redact(url)!r}: each host must be host:port, e.g. {example}")
        seeds.append((host.strip("[]"), int(port)))
    return tuple(seeds)


_SECRET_PARAMS = ("password", "pass", "pwd", "auth", "ssl_password", "token", "sentinel_password")


def redact(url: str) -> str:
    """The URL with every password replaced by ``***``, safe for logs, reprs and error messages.

    Hides the user-info password (``redis://user:pw@host``) and secret query parameters (``?password=``, redis-py's
    form for ``unix://`` URLs).  A password that breaks URL syntax (an unescaped ``/``, ``?`` or ``#``) cannot be
    told from the host, so everything between the scheme and the last ``@`` is hidden then.
    """
    if not isinstance(url, str):
        return "<not a URL>"
    scheme, sep, rest = url.partition("://")
    if not sep:
        return "<unparsable URL>"
    if "@" in rest:
        userinfo, _, hostpart = rest.rpartition("@")
        user = userinfo.split(":", 1)[0] if ":" in userinfo else userinfo
        if ":" in userinfo or any(c in userinfo for c in "/?#"):
            user = user.split("/", 1)[0].split("?", 1)[0].split("#", 1)[0]
            rest = f"{user}:***@{hostpart}"
    try:
        parts = urlsplit(f"{scheme}://{rest}")
    except ValueError:
        return f"{scheme}://<unparsable>"
    if parts.query:
        pairs = [
            (k, "***" if k.lower() in _SECRET_PARAMS else v) for k, v in parse_qsl(parts.query, keep_blank_values=True)
        ]
        query = "&".join(f"{k}={v}" for k, v in pairs)
        parts = parts._replace(query=query)
    if not parts.netloc:  # unix:///path: urlunsplit would drop the empty authority
        tail = f"?{parts.query}" if parts.query else ""
        return f"{parts.scheme}://{parts.path}{tail}"
    return urlunsplit(parts)
