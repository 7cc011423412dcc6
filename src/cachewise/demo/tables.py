"""How the demo prints: one rich table per story, titled from :data:`TITLES`, times in milliseconds."""

from __future__ import annotations

from rich.table import Table

__all__ = ["TITLES", "format_ms", "new_table"]

#: The title of each story's table, in the order the demo prints them.
TITLES = (
    "1. Database vs cache",
    "2. Many requests, one product",
    "3. A stampede: many requests at once for a cold product",
    "4. TTL expiry",
    "5. Write-through, delete-on-write",
    "6. Version bump and tags",
    "7. The cache server goes down",
    "8. Rate limiting: 100 requests a minute per IP",
    "9. Server-side sessions",
    "10. A feature store for ML",
    "11. A dashboard query, 50 viewers at once",
    "12. A local tier in every process",
    "13. Cache statistics",
    "14. Every key has a TTL",
)


def new_table(title: str, *columns: str) -> Table:
    """A table whose first column is a label and the others right-aligned numbers."""
    table = Table(title=title, title_justify="left", title_style="bold")
    for i, name in enumerate(columns):
        table.add_column(name, justify="left" if i == 0 else "right")
    return table


def format_ms(value: float) -> str:
    """Milliseconds, with three decimals below 10 ms."""
    return f"{value:,.3f} ms" if value < 10 else f"{value:,.1f} ms"
