"""Server URLs: pure logic, no server."""

from __future__ import annotations

import pytest

from cachewise.errors import ConfigurationError
from cachewise.transport.urls import parse_url, redact


def test_default_and_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CACHEWISE_URL", raising=False)
    assert parse_url(None).embedded
    monkeypatch.setenv("CACHEWISE_URL", "redis://127.0.0.1:6379/2")
    assert parse_url(None).scheme == "redis"


def test_embedded_directory() -> None:
    assert parse_url("embedded://").directory is None
    assert parse_url("embedded:///var/cache/cw").directory == "/var/cache/cw"
    with pytest.raises(ConfigurationError, match="three slashes"):
        parse_url("embedded://relative")


@pytest.mark.parametrize("url", ["http://x", "redis://", "unix://", "memcached://h:1", 5])
def test_bad_urls(url: object) -> None:
    with pytest.raises(ConfigurationError):
        parse_url(url)  # type: ignore[arg-type]


def test_redact() -> None:
    assert redact("redis://user:pa55@host:6379/0") == "redis://user:***@host:6379/0"
    assert redact("rediss://:pa55@host/1") == "rediss://:***@host/1"
    assert redact("redis://host:6379") == "redis://host:6379"
    with pytest.raises(ConfigurationError) as info:
        parse_url("mysql://root:pa55@db/x")
    assert "pa55" not in str(info.value)


def test_cluster_urls_list_their_seeds_and_credentials() -> None:
    address = parse_url("redis+cluster://app:p%40ss@10.0.0.1:7000,10.0.0.2:7001/")
    assert address.cluster and address.seeds == (("10.0.0.1", 7000), ("10.0.0.2", 7001))
    assert address.params == {"username": "app", "password": "p@ss"}
    assert "p%40ss" not in repr(address)
    assert parse_url("rediss+cluster://h:7000").params == {"ssl": True}
    assert parse_url("embedded+cluster://").cluster


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("redis+cluster://h:7000/1", "only database 0"),
        ("redis+cluster://h", "host:port"),
        ("redis+cluster://:1", "host"),
    ],
)
def test_bad_cluster_urls_say_what_is_wrong(url: str, says: str) -> None:
    with pytest.raises(ConfigurationError, match=says):
        parse_url(url)


def test_sentinel_urls_name_the_sentinels_the_service_and_the_database() -> None:
    address = parse_url("redis+sentinel://app:s3cret@10.0.0.1:26379,10.0.0.2:26380/mymaster/2?sentinel_password=x")
    assert address.sentinel and not address.cluster
    assert address.seeds == (("10.0.0.1", 26379), ("10.0.0.2", 26380))
    assert address.service == "mymaster" and address.db == 2
    assert address.params == {"username": "app", "password": "s3cret"}
    assert address.sentinel_options == (("sentinel_password", "x"),)
    assert "s3cret" not in repr(address) and "sentinel_password=x" not in redact(address.url)
    assert parse_url("redis+sentinel://h:26379/svc").db == 0
    assert parse_url("embedded+sentinel://").scheme == "embedded+sentinel"


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("redis+sentinel://h:26379", "names no service"),
        ("redis+sentinel://h:26379/svc/x", "must be a number"),
        ("redis+sentinel://h/svc", "host:port"),
    ],
)
def test_bad_sentinel_urls_say_what_is_wrong(url: str, says: str) -> None:
    with pytest.raises(ConfigurationError, match=says):
        parse_url(url)
