"""The demo's source of truth: a real SQLite shop (products, users, purchases), generated deterministically.

The database rules (the seed guide's golden rule); the cache only ever holds copies of what these queries return.
Every statement is parametrised with ``?`` placeholders: the seed's ``f"... WHERE id = {produto_id}"`` is an SQL
injection hole, and it is not repeated here.

The product page query is deliberately the kind of query worth caching: the product, its sales, and its revenue
rank within its category, which aggregates every purchase of every product of that category on each call.
"""

from __future__ import annotations

import contextlib
import functools
import os
import random
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any, TypedDict

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

__all__ = [
    "DataSizes",
    "Product",
    "fetch_product",
    "open_database",
    "product_ids",
    "update_price",
]

#: Bumped whenever the schema or the generator changes, so that a kept ``--db`` file is regenerated.
GENERATOR_VERSION = "1"
_CATEGORIES = (
    "books", "games", "garden", "kitchen", "music", "office", "outdoor", "pets", "sports", "tools",
    "toys", "audio", "baby", "beauty", "bikes", "camera", "crafts", "fitness", "lighting", "travel",
)  # fmt: skip
_COUNTRIES = ("BR", "PT", "AR", "MX", "US", "DE", "FR", "ES", "IT", "JP")
_EPOCH = 1_735_689_600  # 2025-01-01T00:00:00Z: every generated timestamp is after it, so runs are reproducible
_YEAR = 365 * 24 * 3600
_BATCH = 20_000

_SCHEMA = (
    """CREATE TABLE demo_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)""",
    """CREATE TABLE products (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL,
        category TEXT NOT NULL,
        price REAL NOT NULL,
        updated_at TEXT NOT NULL
    )""",
    """CREATE TABLE users (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL,
        country TEXT NOT NULL,
        created_at TEXT NOT NULL
    )""",
    """CREATE TABLE purchases (
        id INTEGER PRIMARY KEY,
        user_id INTEGER NOT NULL REFERENCES users (id),
        product_id INTEGER NOT NULL REFERENCES products (id),
        amount REAL NOT NULL,
        purchased_at TEXT NOT NULL
    )""",
)
#: The indexes a real shop has; created after the bulk load, as a bulk load does.
_INDEXES = (
    "CREATE INDEX products_category ON products (category)",
    "CREATE INDEX users_country ON users (country)",
    "CREATE INDEX purchases_user ON purchases (user_id)",
    "CREATE INDEX purchases_product ON purchases (product_id)",
    "CREATE INDEX purchases_time ON purchases (purchased_at)",
)
_DROP = (
    "DROP TABLE IF EXISTS purchases",
    "DROP TABLE IF EXISTS users",
    "DROP TABLE IF EXISTS products",
    "DROP TABLE IF EXISTS demo_meta",
)

#: The product page: the product, its sales, and its revenue rank among every product of its category.
PRODUCT_PAGE_SQL = """
WITH category_sales AS (
    SELECT p.id AS product_id, COUNT(s.id) AS sales, COALESCE(SUM(s.amount), 0.0) AS revenue
    FROM products AS p
    LEFT JOIN purchases AS s ON s.product_id = p.id
    WHERE p.category = (SELECT category FROM products WHERE id = ?)
    GROUP BY p.id
),
ranked AS (
    SELECT product_id, sales, revenue,
           RANK() OVER (ORDER BY revenue DESC) AS category_rank,
           COUNT(*) OVER () AS category_size
    FROM category_sales
)
SELECT p.id, p.name, p.category, p.price, p.updated_at,
       r.sales, ROUND(r.revenue, 2), r.category_rank, r.category_size
FROM products AS p
JOIN ranked AS r ON r.product_id = p.id
WHERE p.id = ?
"""
_UPDATE_PRICE_SQL = "UPDATE products SET price = ?, updated_at = ? WHERE id = ?"


class Product(TypedDict):
    """One product page, as the database computes it and the cache copies it."""

    id: int
    name: str
    category: str
    price: float
    updated_at: str
    sales: int
    revenue: float
    category_rank: int
    category_size: int


@dataclass(frozen=True)
class DataSizes:
    """How many rows to generate (and the seed that makes them reproducible)."""

    products: int
    users: int
    purchases: int
    seed: int = 42

    def __post_init__(self) -> None:
        if min(self.products, self.users) < 1 or self.purchases < 0:
            raise ValueError(f"the demo needs at least one product and one user, got {self}")

    def fingerprint(self) -> str:
        return f"v{GENERATOR_VERSION}:{self.products}:{self.users}:{self.purchases}:{self.seed}"


@contextlib.contextmanager
def _transaction(db: sqlite3.Connection) -> Iterator[None]:
    """One explicit transaction: committed when the block ends, rolled back when it raises."""
    db.execute("BEGIN")
    try:
        yield
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def _stamp(seconds: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(seconds))


def _products(rng: random.Random, count: int) -> Iterator[tuple[int, str, str, float, str]]:
    for pid in range(1, count + 1):
        category = _CATEGORIES[pid % len(_CATEGORIES)]
        price = round(rng.uniform(2.0, 500.0), 2)
        yield pid, f"{category} item {pid}", category, price, _stamp(_EPOCH + rng.randrange(_YEAR))


def _users(rng: random.Random, count: int) -> Iterator[tuple[int, str, str, str]]:
    for uid in range(1, count + 1):
        yield uid, f"user {uid}", rng.choice(_COUNTRIES), _stamp(_EPOCH + rng.randrange(_YEAR))


def _purchases(rng: random.Random, count: int, products: int, users: int) -> Iterator[tuple[int, int, int, float, str]]:
    rand, randrange = rng.random, rng.randrange
    for purchase_id in range(1, count + 1):
        product_id = 1 + int(products * rand() ** 2)  # a few best sellers, a long tail
        amount = round(1.0 + 499.0 * rand(), 2)
        yield purchase_id, 1 + randrange(users), product_id, amount, _stamp(_EPOCH + randrange(_YEAR))


def _load(db: sqlite3.Connection, sql: str, rows: Iterator[tuple[Any, ...]], advance: Callable[[int], None]) -> None:
    """Insert ``rows`` in batches (one ``executemany`` each), reporting progress after every batch."""
    while batch := list(islice(rows, _BATCH)):
        db.executemany(sql, batch)
        advance(len(batch))


def _generate(db: sqlite3.Connection, sizes: DataSizes, console: Console) -> None:
    rng = random.Random(sizes.seed)
    plan: list[tuple[str, str, int, Iterator[tuple[Any, ...]]]] = [
        ("products", "INSERT INTO products VALUES (?, ?, ?, ?, ?)", sizes.products, _products(rng, sizes.products)),
        ("users", "INSERT INTO users VALUES (?, ?, ?, ?)", sizes.users, _users(rng, sizes.users)),
        (
            "purchases",
            "INSERT INTO purchases VALUES (?, ?, ?, ?, ?)",
            sizes.purchases,
            _purchases(rng, sizes.purchases, sizes.products, sizes.users),
        ),
    ]
    columns = (
        TextColumn("{task.description:<18}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console) as progress, _transaction(db):
        for statement in _SCHEMA:
            db.execute(statement)
        for table, sql, count, rows in plan:
            task = progress.add_task(f"{table}", total=count)
            _load(db, sql, rows, functools.partial(progress.advance, task))
        task = progress.add_task("indexes", total=len(_INDEXES))
        for statement in _INDEXES:
            db.execute(statement)
            progress.advance(task)
        db.execute("INSERT INTO demo_meta VALUES (?, ?)", ("fingerprint", sizes.fingerprint()))
    db.execute("ANALYZE")


def _fingerprint(db: sqlite3.Connection) -> str | None:
    try:
        row = db.execute("SELECT value FROM demo_meta WHERE key = ?", ("fingerprint",)).fetchone()
    except sqlite3.OperationalError:
        return None
    return None if row is None else str(row[0])


def _user_tables(db: sqlite3.Connection) -> list[str]:
    rows = db.execute("SELECT name FROM sqlite_master WHERE type = ? AND name NOT LIKE ?", ("table", "sqlite_%"))
    return [str(name) for (name,) in rows]


def open_database(path: Path, sizes: DataSizes, console: Console) -> tuple[sqlite3.Connection, bool]:
    """Open the demo database at ``path``, generating it unless it already holds this exact data.

    Returns the connection and whether rows were generated.  A file that holds anything but an earlier demo
    database is refused rather than overwritten.
    """
    db = sqlite3.connect(path, isolation_level=None)  # autocommit: transactions are explicit (_transaction)
    try:
        found = _fingerprint(db)
        if found == sizes.fingerprint():
            return db, False
        tables = _user_tables(db)
        if tables and found is None:
            raise FileExistsError(
                f"{path} already holds tables ({', '.join(tables)}) that the demo did not create; "
                "give --db a new file name"
            )
        with _transaction(db):
            for statement in _DROP:
                db.execute(statement)
        _generate(db, sizes, console)
    except BaseException:
        db.close()
        raise
    return db, True


def remove_database(path: Path) -> None:
    """Delete a database file and its journal."""
    for name in (str(path), f"{path}-journal", f"{path}-wal", f"{path}-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name)


def fetch_product(db: sqlite3.Connection, product_id: int) -> Product | None:
    """The product page of ``product_id`` straight from the database; None when there is no such product."""
    row = db.execute(PRODUCT_PAGE_SQL, (product_id, product_id)).fetchone()
    if row is None:
        return None
    pid, name, category, price, updated_at, sales, revenue, rank, size = row
    return Product(
        id=pid,
        name=name,
        category=category,
        price=price,
        updated_at=updated_at,
        sales=sales,
        revenue=revenue,
        category_rank=rank,
        category_size=size,
    )


def update_price(db: sqlite3.Connection, product_id: int, price: float) -> None:
    """Change a product's price in the database (the source of truth), committed before returning."""
    with _transaction(db):
        cursor = db.execute(_UPDATE_PRICE_SQL, (price, _stamp(time.time()), product_id))
    if cursor.rowcount != 1:
        raise LookupError(f"no product {product_id} to update")


def product_ids(db: sqlite3.Connection, count: int) -> list[int]:
    """The first ``count`` product ids."""
    return [int(pid) for (pid,) in db.execute("SELECT id FROM products ORDER BY id LIMIT ?", (count,))]
