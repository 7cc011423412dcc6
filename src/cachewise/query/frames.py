"""DataFrames to bytes and back, without I/O: Arrow IPC (stream format), zstd-compressed when pyarrow has zstd.

Arrow keeps the pandas dtypes (``int64``, ``float64``, ``str``/``object``, ``datetime64[..., tz]``, nullable
``Int64``/``boolean``, categoricals) and the index through the pandas metadata of the schema, and reading it back
runs no code (unlike pickle).  The cache's JSON serializer cannot hold raw bytes compactly (``bytes`` become tagged
hex, twice the size), so :func:`to_cache_value` wraps the IPC bytes as base64 text (a third larger) in a small dict.
"""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd  # type: ignore[import-untyped]

__all__ = ["FORMAT", "from_cache_value", "from_ipc", "is_frame_value", "to_cache_value", "to_ipc"]

#: The marker of a cached DataFrame value.
FORMAT = "arrow-ipc+b64"


def to_ipc(df: pd.DataFrame) -> bytes:
    """``df`` as Arrow IPC stream bytes (zstd-compressed when available)."""
    import pyarrow as pa  # type: ignore[import-untyped]

    table = pa.Table.from_pandas(df)
    compression = "zstd" if pa.Codec.is_available("zstd") else None
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema, options=pa.ipc.IpcWriteOptions(compression=compression)) as writer:
        writer.write_table(table)
    data: bytes = sink.getvalue().to_pybytes()
    return data


def from_ipc(data: bytes) -> pd.DataFrame:
    """The DataFrame of Arrow IPC stream bytes written by :func:`to_ipc`."""
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


def to_cache_value(df: pd.DataFrame) -> dict[str, str]:
    """A JSON-safe cache value holding ``df``."""
    return {"format": FORMAT, "data": base64.b64encode(to_ipc(df)).decode("ascii")}


def is_frame_value(value: Any) -> bool:
    """True when ``value`` was made by :func:`to_cache_value`."""
    return isinstance(value, dict) and value.get("format") == FORMAT and isinstance(value.get("data"), str)


def from_cache_value(value: dict[str, Any]) -> pd.DataFrame:
    """The DataFrame held by a value made by :func:`to_cache_value`."""
    return from_ipc(base64.b64decode(value["data"]))
