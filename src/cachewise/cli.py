"""The ``cachewise`` command line."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from . import __version__
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
) -> None:
    """Every cache pattern of the guide, against a real server and a real SQLite database, with measured numbers."""
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


@app.command()
def version() -> None:
    """Print the installed cachewise version."""
    typer.echo(f"cachewise {__version__}")


def main() -> None:
    """The ``cachewise`` console script."""
    app()


if __name__ == "__main__":
    main()
