"""Feature store: entity features materialised from SQL (or any rows) into one Redis hash each, read online."""

from __future__ import annotations

from .feature_store import UPDATED_AT, FeatureStore, MaterializeSummary

__all__ = ["UPDATED_AT", "FeatureStore", "MaterializeSummary"]
