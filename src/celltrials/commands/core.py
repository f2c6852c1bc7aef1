"""Core commands: ingest, stats, show, dups, export."""

from __future__ import annotations
