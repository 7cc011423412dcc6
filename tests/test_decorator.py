"""@cache.cached on functions, coroutine functions and methods, against every server kind."""

from __future__ import annotations

import asyncio
import inspect
import sys

import pytest

from cachewise import MISSING, Cache, ConfigurationError, KeyTemplateError


def test_template_key_from_bound_arguments(cache: Cache) -> None:
    calls: list[int] = []

    @cache.cached(ttl=60, key="product:{product_id}")
    def get_product(product_id: int, currency: str = "BRL") -> dict[str, object]:
        calls.append(product_id)
        return {"id": product_id, "currency": currency}

    assert get_product(42) == {"id": 42, "currency": "BRL"}
    assert get_product(product_id=42) == {"id": 42, "currency": "BRL"}
    assert len(calls) == 1
    assert get_product.key_for(42) == "product:42"
    assert cache.get("product:42") == {"id": 42, "currency": "BRL"}


def test_default_key_positional_keyword_default_agree(cache: Cache) -> None:
    calls: list[tuple[int, int]] = []

    @cache.cached(ttl=60)
    def add(a: int, b: int = 2) -> int:
        calls.append((a, b))
        return a + b

    assert add(1) == add(1, 2) == add(a=1) == add(b=2, a=1) == 3
    assert len(calls) == 1
    assert add(1, 3) == 4 and len(calls) == 2
    key = add.key_for(1)
    assert key.startswith(f"{__name__}.test_default_key_positional_keyword_default_agree.<locals>.add:")
    assert key == add.key_for(a=1, b=2)


def test_arguments_of_different_types_do_not_collide(cache: Cache) -> None:
    @cache.cached(ttl=60)
    def echo(x: object) -> str:
        return repr(x)

    for value in ["1", 1, 1.0, True, None, (1,), [1], {"1": 1}]:
        assert echo(value) == repr(value)


def test_remembered_keys_keep_equal_values_of_other_types_apart(cache: Cache) -> None:
    """A repeated call looks its key up by its arguments (exact ``int``/``str`` only): ``1 == 1.0 == True`` must
    not let a float or a bool reuse the key of the int."""
    from cachewise.keys import MEMO_SIZE

    @cache.cached(ttl=60, key="n:{x}")
    def show(x: object) -> str:
        return repr(x)

    @cache.cached(ttl=60)
    def pair(a: object, b: object) -> str:
        return repr((a, b))

    for _ in range(2):
        assert [show(v) for v in (1, 1.0, True)] == ["1", "1.0", "True"]
        assert [pair(1, v) for v in (2, 2.0, False, "2")] == ["(1, 2)", "(1, 2.0)", "(1, False)", "(1, '2')"]
    assert show.key_for(True) == "n:True" and show.key_for(1.0) == "n:1.0"
    memo = show._call_key.memo  # type: ignore[attr-defined]
    assert list(memo) == [(1,)] and type(next(iter(memo))[0]) is int  # the float and the bool were never remembered
    assert len(pair._call_key.memo) == 2  # type: ignore[attr-defined]
    for n in range(MEMO_SIZE + 10):  # bounded: forgotten at once past MEMO_SIZE, still right
        assert show.key_for(n) == f"n:{n}"
    assert len(memo) <= MEMO_SIZE


def test_functions_with_same_name_in_different_scopes_do_not_share(cache: Cache) -> None:
    def make(result: str) -> object:
        @cache.cached(ttl=60)
        def f(x: int) -> str:
            return result

        return f

    first, second = make("first"), make("second")
    # Same qualname means same key: the qualified name is the function's identity, stable across processes.
    assert first.key_for(1) == second.key_for(1)  # type: ignore[attr-defined]

    @cache.cached(ttl=60)
    def g(x: int) -> str:
        return "g"

    assert g.key_for(1) != first.key_for(1)  # type: ignore[attr-defined]


def test_invalidate_and_invalidate_all(cache: Cache) -> None:
    calls: list[int] = []

    @cache.cached(ttl=60, key="product:{pid}")
    def get_product(pid: int) -> int:
        calls.append(pid)
        return pid * 10

    get_product(1), get_product(2)
    assert get_product.invalidate(1) is True
    assert get_product.invalidate(1) is False
    get_product(1), get_product(2)
    assert calls == [1, 2, 1]
    get_product.invalidate_all()
    get_product(1), get_product(2)
    assert calls == [1, 2, 1, 1, 2]


def test_invalidate_all_needs_a_fixed_group(cache: Cache) -> None:
    @cache.cached(ttl=60, key="{kind}:{pid}")
    def f(kind: str, pid: int) -> int:
        return pid

    with pytest.raises(ConfigurationError, match="tag"):
        f.invalidate_all()


def test_tags_and_tag_templates(cache: Cache) -> None:
    calls: list[int] = []

    @cache.cached(ttl=60, key="order:{order_id}", tags=("orders", "user:{user_id}"))
    def get_order(order_id: int, user_id: int) -> int:
        calls.append(order_id)
        return order_id

    get_order(1, 7), get_order(2, 7), get_order(3, 8)
    cache.invalidate_tags("user:7")
    get_order(1, 7), get_order(2, 7), get_order(3, 8)
    assert calls == [1, 2, 3, 1, 2]
    cache.invalidate_tags("orders")
    get_order(3, 8)
    assert calls == [1, 2, 3, 1, 2, 3]


def test_template_naming_unknown_argument_fails_at_decoration(cache: Cache) -> None:
    with pytest.raises(KeyTemplateError, match="product_id"):

        @cache.cached(ttl=60, key="product:{product_id}")
        def f(pid: int) -> int:
            return pid

    with pytest.raises(KeyTemplateError, match="positional"):

        @cache.cached(ttl=60, key="product:{}")
        def g(pid: int) -> int:
            return pid


def test_argument_without_stable_text_needs_a_key(cache: Cache) -> None:
    class Conn:
        pass

    @cache.cached(ttl=60)
    def query(conn: Conn, sql: str) -> str:
        return sql

    with pytest.raises(KeyTemplateError, match="conn"):
        query(Conn(), "select 1")

    @cache.cached(ttl=60, key="q:{sql}")
    def query2(conn: Conn, sql: str) -> str:
        return sql

    assert query2(Conn(), "select 1") == "select 1"


def test_methods_share_cache_across_instances_and_bind_self(cache: Cache) -> None:
    calls: list[int] = []

    class Repo:
        def __init__(self, name: str) -> None:
            self.name = name

        @cache.cached(ttl=60)
        def find(self, pid: int) -> int:
            calls.append(pid)
            return pid + 1

        @cache.cached(ttl=60, key="repo:{self.name}:{pid}")
        def find_named(self, pid: int) -> str:
            return f"{self.name}-{pid}"

    a, b = Repo("a"), Repo("b")
    assert a.find(1) == 2 and b.find(1) == 2 and a.find(pid=1) == 2
    assert calls == [1]
    assert a.find.invalidate(1) is True
    assert b.find(1) == 2 and calls == [1, 1]
    assert a.find_named(5) == "a-5" and b.find_named(5) == "b-5"
    assert a.find_named.key_for(5) == "repo:a:5"
    assert cache.get("repo:b:5") == "b-5"


def test_staticmethod_order(cache: Cache) -> None:
    with pytest.raises(ConfigurationError, match="staticmethod"):

        class Bad:
            @cache.cached(ttl=60)  # type: ignore[arg-type]
            @staticmethod
            def f(x: int) -> int:
                return x

    class Good:
        @staticmethod
        @cache.cached(ttl=60)
        def f(x: int) -> int:
            return x * 2

    assert Good.f(2) == 4 and Good().f(2) == 4


def test_wrapper_keeps_metadata(cache: Cache) -> None:
    @cache.cached(ttl=60)
    def documented(x: int) -> int:
        """Docstring."""
        return x

    assert documented.__name__ == "documented"
    assert documented.__doc__ == "Docstring."
    assert list(inspect.signature(documented).parameters) == ["x"]


def test_none_result_is_cached(cache: Cache) -> None:
    calls: list[int] = []

    @cache.cached(ttl=60)
    def nothing(x: int) -> None:
        calls.append(x)

    assert nothing(1) is None and nothing(1) is None
    assert calls == [1]


def test_exceptions_are_not_cached(cache: Cache) -> None:
    calls: list[int] = []

    @cache.cached(ttl=60)
    def flaky(x: int) -> int:
        calls.append(x)
        if len(calls) == 1:
            raise RuntimeError("database down")
        return x

    with pytest.raises(RuntimeError):
        flaky(1)
    assert flaky(1) == 1 and flaky(1) == 1
    assert calls == [1, 1]


def test_per_function_stats(cache: Cache) -> None:
    @cache.cached(ttl=60)
    def f(x: int) -> int:
        return x

    f(1), f(1), f(2)
    stats = cache.stats()
    counters = stats.functions[f"{__name__}.test_per_function_stats.<locals>.f"]
    assert (counters.hits, counters.misses, counters.loads) == (1, 2, 2)
    assert stats.total.hits == 1


# -- async ---------------------------------------------------------------------------------------------------
async def test_async_function(cache: Cache) -> None:
    calls: list[int] = []

    @cache.cached(ttl=60, key="product:{pid}", tags=("products",))
    async def get_product(pid: int) -> dict[str, int]:
        calls.append(pid)
        await asyncio.sleep(0)
        return {"id": pid}

    # What frameworks check (Starlette/FastAPI look at __call__; asyncio at its marker; inspect on 3.12+).
    assert inspect.iscoroutinefunction(get_product.__call__)
    if sys.version_info >= (3, 12):
        assert inspect.iscoroutinefunction(get_product)
    if sys.version_info < (3, 14):
        assert asyncio.iscoroutinefunction(get_product)
    assert await get_product(1) == {"id": 1}
    assert await get_product(pid=1) == {"id": 1}
    assert calls == [1]
    assert await get_product.ainvalidate(1) is True
    await get_product(1)
    assert calls == [1, 1]
    await cache.ainvalidate_tags("products")
    await get_product(1)
    assert calls == [1, 1, 1]
    await get_product.ainvalidate_all()
    assert await cache.aget("product:1", MISSING) is MISSING


async def test_async_method(cache: Cache) -> None:
    class Service:
        @cache.cached(ttl=60, key="svc:{x}")
        async def compute(self, x: int) -> int:
            return x * 3

    s = Service()
    assert await s.compute(2) == 6
    assert await s.compute.ainvalidate(2) is True


async def test_many_concurrent_tasks_get_the_same_answer(cache: Cache) -> None:
    @cache.cached(ttl=60)
    async def slow(x: int) -> int:
        await asyncio.sleep(0.01)
        return x

    results = await asyncio.gather(*(slow(i % 5) for i in range(200)))
    assert results == [i % 5 for i in range(200)]


def test_write_through_uses_the_functions_key_ttl_and_tags(cache: Cache) -> None:
    calls: list[int] = []

    @cache.cached(ttl=120, key="product:{pid}", tags=("products",))
    def get_product(pid: int) -> dict[str, int]:
        calls.append(pid)
        return {"id": pid, "price": 1}

    assert get_product.set({"id": 7, "price": 2}, 7) is True
    assert get_product(7) == {"id": 7, "price": 2} and calls == []
    left = cache.ttl("product:7")
    assert left is not None and 110 < left <= 120
    cache.invalidate_tags("products")
    assert get_product(7) == {"id": 7, "price": 1} and calls == [7]


async def test_async_write_through(cache: Cache) -> None:
    @cache.cached(ttl=60, key="p:{pid}")
    async def get_p(pid: int) -> int:
        return 0

    assert await get_p.aset(5, pid=1) is True
    assert await get_p(1) == 5


def test_reset_stats_keeps_function_counters_live(cache: Cache) -> None:
    @cache.cached(ttl=60)
    def f(x: int) -> int:
        return x

    f(1)
    cache.reset_stats()
    f(1)
    name = f"{__name__}.test_reset_stats_keeps_function_counters_live.<locals>.f"
    assert cache.stats().functions[name].hits == 1
