"""The ``cachewise`` command line."""

from __future__ import annotations

import contextlib
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import Progress, TextColumn, TimeElapsedColumn

from . import __version__
from .cache import Cache
from .demo import DemoError, DemoSizes, run_demo

__all__ = ["app", "main"]

app = typer.Typer(
    name="cachewise",
    help="Caching with Redis-compatible servers, done right.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.command()
def demo(
    url: Annotated[
        str | None,
        typer.Option(help="Server URL; default: CACHEWISE_URL, else an embedded Valkey started for the demo."),
    ] = None,
    namespace: Annotated[str, typer.Option(help="Namespace of every demo key (the only keys touched).")] = (
        "cachewise-demo"
    ),
    products: Annotated[int, typer.Option(min=4, help="Products to generate.")] = DemoSizes.products,
    users: Annotated[int, typer.Option(min=1, help="Users to generate.")] = DemoSizes.users,
    purchases: Annotated[int, typer.Option(min=0, help="Purchase rows to generate.")] = DemoSizes.purchases,
    quick: Annotated[
        bool, typer.Option("--quick", help="Tiny sizes (a few seconds; overrides the sizes above): a first look.")
    ] = False,
    db: Annotated[
        Path | None,
        typer.Option(help="Keep the SQLite database in this file (reused next time); default: a temporary file."),
    ] = None,
    cluster: Annotated[
        bool,
        typer.Option("--cluster", help="Run on a private local Redis Cluster (embedded+cluster://) unless --url."),
    ] = False,
) -> None:
    """Every cache pattern of the guide, against a real server and a real SQLite database, with measured numbers."""
    if cluster and url is None:
        url = "embedded+cluster://"
    sizes = DemoSizes.quick() if quick else replace(DemoSizes(), products=products, users=users, purchases=purchases)
    console = Console()
    try:
        result = run_demo(url=url, namespace=namespace, sizes=sizes, console=console, db_path=db)
    except DemoError as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(code=1) from None
    console.print(
        f"done in {result.seconds:.1f} s (data: {result.data_seconds:.1f} s); "
        f"{result.keys_without_ttl} keys without a TTL"
    )
    if result.keys_without_ttl:
        raise typer.Exit(code=1)


features = typer.Typer(name="features", help="The ML feature store: materialise features from SQL into the cache.")
app.add_typer(features)


@features.command("materialize")
def features_materialize(
    database: Annotated[str, typer.Option(help="SQLAlchemy database URL of the source, e.g. postgresql+psycopg://...")],
    sql: Annotated[Path, typer.Option(help="File holding the SELECT that yields one row per entity.")],
    entity: Annotated[str, typer.Option(help="The entity's id column, e.g. user_id (the entity is its prefix).")],
    ttl: Annotated[str, typer.Option(help="How long features live: seconds, or with a unit: 90s, 30m, 2h, 1d.")],
    url: Annotated[str | None, typer.Option(help="Cache server URL; default: CACHEWISE_URL, else embedded.")] = None,
    namespace: Annotated[str, typer.Option(help="Cache namespace.")] = "cachewise",
    batch_size: Annotated[int, typer.Option(min=1, help="Rows per pipelined batch.")] = 5000,
) -> None:
    """Run a SQL file against DATABASE and store one hash per entity (for cron or Airflow)."""
    from .features import FeatureStore

    try:
        import sqlalchemy
    except ImportError:  # pragma: no cover - depends on the environment
        raise typer.BadParameter("this command needs SQLAlchemy: pip install 'cachewise[data]'") from None
    seconds = parse_duration(ttl)
    name = entity[: -len("_id")] if entity.endswith("_id") else entity
    console = Console()
    engine = sqlalchemy.create_engine(database)
    try:
        with Cache(url, namespace=namespace) as cache, Progress(
            TextColumn("{task.description}"), TextColumn("{task.completed:,} rows"), TimeElapsedColumn(),
            console=console, transient=True,
        ) as bar:  # fmt: skip
            task = bar.add_task(f"materialising {name} features")
            store = FeatureStore(cache, entity=name, ttl=seconds, id_column=entity, batch_size=batch_size)
            summary = store.materialize_sql(
                engine, sql.read_text(encoding="utf-8"), progress=lambda done: bar.update(task, completed=done)
            )
    finally:
        engine.dispose()
    console.print(
        f"materialised {summary.rows:,} {name} entities in {summary.seconds:.1f} s "
        f"({summary.rows_per_second:,.0f}/s), TTL {seconds:,.0f} s"
    )


def parse_duration(text: str) -> float:
    """Seconds from ``"7200"``, ``"90s"``, ``"30m"``, ``"2h"`` or ``"1d"``."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    text = text.strip().lower()
    try:
        value = float(text[:-1]) * units[text[-1]] if text and text[-1] in units else float(text)
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not a duration: use seconds or 90s, 30m, 2h, 1d") from None
    if value <= 0:
        raise typer.BadParameter("a TTL must be positive")
    return value


@app.command()
def server(
    cluster: Annotated[
        bool, typer.Option("--cluster", help="A Redis Cluster: 3 primaries and 3 replicas on loopback ports.")
    ] = False,
    sentinel: Annotated[
        bool, typer.Option("--sentinel", help="A Sentinel set: 1 primary, 1 replica and 3 sentinels.")
    ] = False,
    directory: Annotated[
        Path | None,
        typer.Option("--dir", help="One server: keep it in this folder (its URL is embedded:///<folder>)."),
    ] = None,
    port: Annotated[
        int | None,
        typer.Option(
            "--port", min=1, max=65535, help="One server: also listen on 127.0.0.1:PORT (its URL is redis://...)."
        ),
    ] = None,
    unix: Annotated[
        Path | None,
        typer.Option("--unix", help="One server: its unix socket at this path (its URL is unix://<path>)."),
    ] = None,
) -> None:
    """Run a local server from the embedded Valkey binary until Ctrl-C (or SIGTERM), for several local processes to
    share (a notebook, a worker and an API on one laptop); prints the URL to give them (CACHEWISE_URL=... or
    --url ...).

    Example: cachewise server --port 6390, then CACHEWISE_URL=redis://127.0.0.1:6390 in each process.
    """
    import signal
    import threading

    from .server.cluster import EmbeddedCluster
    from .server.embedded import EmbeddedServer
    from .server.sentinel import EmbeddedSentinel

    if cluster and sentinel:
        raise typer.BadParameter("choose one of --cluster and --sentinel")
    if (cluster or sentinel) and (directory is not None or port is not None or unix is not None):
        raise typer.BadParameter("--dir, --port and --unix are for one server, not with --cluster or --sentinel")
    running: EmbeddedCluster | EmbeddedSentinel | EmbeddedServer
    if cluster:
        running = EmbeddedCluster()
    elif sentinel:
        running = EmbeddedSentinel()
    else:
        running = EmbeddedServer(directory, port=port or 0, socket_path=unix)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with running:
        if port is not None:
            url = f"redis://127.0.0.1:{port}"
        elif directory is not None and unix is None and not (cluster or sentinel):
            url = f"embedded://{directory.resolve()}"  # an absolute path: embedded:///...
        else:
            url = running.url
        typer.echo(f"serving {url}")
        if port is not None:
            typer.echo(f"also on {running.url}")
        typer.echo("press Ctrl-C to stop")
        with contextlib.suppress(KeyboardInterrupt):
            stop.wait()
    typer.echo("stopped")


@app.command()
def version() -> None:
    """Print the installed cachewise version."""
    typer.echo(f"cachewise {__version__}")


def main() -> None:
    """The ``cachewise`` console script."""
    app()


if __name__ == "__main__":
    main()
