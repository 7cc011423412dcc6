"""DataFrames to bytes and back, without I/O: Arrow IPC (stream format), zstd-compressed when available.

pandas goes through pyarrow: Arrow keeps the pandas dtypes (``int64``, ``float64``, ``str``/``object``,
``datetime64[..., tz]``, nullable ``Int64``/``boolean``, categoricals) and the index through the pandas metadata of
the schema.  polars writes and reads Arrow IPC itself (its dtypes are Arrow's: ``Int64``, ``Float64``, ``String``,
``Datetime(time_zone=...)``, ``Decimal``, nulls in any column).  Reading either back runs no code (unlike pickle).

The cache's JSON serializer cannot hold raw bytes compactly (``bytes`` become tagged hex, twice the size), so
:func:`to_cache_value` wraps the IPC bytes as base64 text (a third larger) in a small dict that also names the
library the frame is for.
"""

from __future__ import annotations

import base64
import io
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import pandas as pd  # type: ignore[import-untyped]
    import polars as pl

__all__ = ["FORMAT", "Kind", "from_cache_value", "from_ipc", "is_frame_value", "kind_of", "to_cache_value", "to_ipc"]

#: The marker of a cached DataFrame value.
FORMAT = "arrow-ipc+b64"

#: The DataFrame libraries a frame can be stored for.
Kind = Literal["pandas", "polars"]


def kind_of(df: Any) -> Kind:
    """``"polars"`` for a polars DataFrame, ``"pandas"`` for a pandas one (anything else is a ``TypeError``)."""
    module = type(df).__module__.split(".")[0]
    if module == "polars":
        return "polars"
    if module == "pandas":
        return "pandas"
    raise TypeError(f"expected a pandas or polars DataFrame, got {type(df).__name__}")


def to_ipc(df: pd.DataFrame | pl.DataFrame) -> bytes:
    """``df`` as Arrow IPC stream bytes (zstd-compressed when available)."""
    if kind_of(df) == "polars":
        sink = io.BytesIO()
        df.write_ipc_stream(sink, compression="zstd")
        return sink.getvalue()
    import pyarrow as pa  # type: ignore[import-untyped]

    table = pa.Table.from_pandas(df)
    compression = "zstd" if pa.Codec.is_available("zstd") else None
    out = pa.BufferOutputStream()
    with pa.ipc.new_stream(out, table.schema, options=pa.ipc.IpcWriteOptions(compression=compression)) as writer:
        writer.write_table(table)
    data: bytes = out.getvalue().to_pybytes()
    return data


def from_ipc(data: bytes, kind: Kind = "pandas") -> Any:
    """The DataFrame (of ``kind``) of Arrow IPC stream bytes written by :func:`to_ipc`."""
    if kind == "polars":
        import polars as pl

        return pl.read_ipc_stream(io.BytesIO(data))
    import pandas as pd
    import pyarrow as pa

    table = pa.ipc.open_stream(data).read_all()
    frame: pd.DataFrame = table.to_pandas()
    # pandas 3 reads Arrow strings back as its ``str`` dtype; give ``object`` string columns back as ``object``.
    meta = table.schema.pandas_metadata or {}
    for column in meta.get("columns", []):
        name = column.get("field_name")
        if column.get("numpy_type") == "object" and name in frame.columns and frame[name].dtype != object:
            frame[name] = pd.Series(table.column(name).to_pylist(), index=frame.index, dtype=object, name=name)
    return frame


def to_cache_value(df: pd.DataFrame | pl.DataFrame) -> dict[str, str]:
    """A JSON-safe cache value holding ``df``."""
    return {"format": FORMAT, "kind": kind_of(df), "data": base64.b64encode(to_ipc(df)).decode("ascii")}


def is_frame_value(value: Any) -> bool:
    """True when ``value`` was made by :func:`to_cache_value`."""
    return isinstance(value, dict) and value.get("format") == FORMAT and isinstance(value.get("data"), str)


def from_cache_value(value: dict[str, Any]) -> Any:
    """The DataFrame held by a value made by :func:`to_cache_value` (pandas or polars, as it was stored)."""
    kind: Kind = "polars" if value.get("kind") == "polars" else "pandas"
    return from_ipc(base64.b64decode(value["data"]), kind)
