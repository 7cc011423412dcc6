"""The generated users both feature benchmarks write (ours and Feast's), so that they store the same values.

Pure Python with no imports from cachewise or Feast: ``features.py`` runs in the repository's venv and
``feast_peer.py`` in one that has Feast, and both import this file from the benchmarks folder.
"""

from __future__ import annotations

__all__ = ["kinds", "row", "value"]


def kinds(features: int) -> list[str]:
    """feature_0 float, feature_1 int, feature_2 string, then alternating float/int."""
    base = ["float", "int", "string"]
    return [base[k] if k < 3 else ("float" if k % 2 == 1 else "int") for k in range(features)]


def value(i: int, k: int, kind: str) -> float | int | str:
    """Feature ``k`` (of ``kind``) of user ``i``."""
    if kind == "float":
        return (i * (k + 1) % 9000) / 100 + 1.0
    if kind == "int":
        return (i + k) % 17
    return f"s{i % 5}"


def row(i: int, feature_kinds: list[str]) -> dict[str, float | int | str]:
    """User ``i`` as a row: ``user_id`` and ``feature_0`` … ``feature_{n-1}``."""
    out: dict[str, float | int | str] = {"user_id": i}
    for k, kind in enumerate(feature_kinds):
        out[f"feature_{k}"] = value(i, k, kind)
    return out
