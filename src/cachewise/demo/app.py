"""The demo's application: a product page read through the cache, and price updates that keep it correct.

SQLite is the source of truth; the cache holds copies with a TTL.  Every database read of a product page goes
through :meth:`ProductPages.load`, which counts it, so the stories can show how many queries really ran.
"""

from __future__ import annotations

import sqlite3

from ..cache import Cache
from ..decorator import CachedFunction
from .data import Product, fetch_product, update_price

__all__ = ["PRODUCT_TAGS", "PRODUCT_TTL", "ProductPages"]

#: Seconds a product page stays cached (the seed's ``setex(key, 300, ...)``).
PRODUCT_TTL = 300
PRODUCT_TAGS = ("products",)


class ProductPages:
    """Product pages: cache-aside reads, write-through and delete-on-write price updates."""

    def __init__(self, cache: Cache, db: sqlite3.Connection) -> None:
        self.cache = cache
        self.db = db
        #: Product page queries run by reads (cache misses, or reads that bypass the cache).
        self.db_reads = 0
        #: Product page queries run by write-through updates, to build the value they write to the cache.
        self.write_path_reads = 0

        @cache.cached(ttl=PRODUCT_TTL, key="product:{product_id}", tags=PRODUCT_TAGS)
        def get_product(product_id: int) -> Product:
            return self.load(product_id)

        self.get_product: CachedFunction[[int], Product] = get_product

    def load(self, product_id: int) -> Product:
        """The product page straight from the database (no cache), counted in :attr:`db_reads`."""
        self.db_reads += 1
        product = fetch_product(self.db, product_id)
        if product is None:
            raise LookupError(f"no product {product_id}")
        return product

    def set_price_db_only(self, product_id: int, price: float) -> None:
        """The naive update: the database changes, the cache is not told (it serves the old price until its TTL)."""
        update_price(self.db, product_id, price)

    def set_price_write_through(self, product_id: int, price: float) -> Product:
        """Write-through: the database first (it rules), then the same page into the cache, in one call."""
        update_price(self.db, product_id, price)
        self.write_path_reads += 1
        product = fetch_product(self.db, product_id)
        if product is None:
            raise LookupError(f"no product {product_id}")
        self.get_product.set(product, product_id)  # the function's own key, TTL and tags
        return product

    def set_price_delete_on_write(self, product_id: int, price: float) -> None:
        """Delete-on-write: the database first, then drop the cached copy; the next read loads the new page."""
        update_price(self.db, product_id, price)
        self.get_product.invalidate(product_id)
