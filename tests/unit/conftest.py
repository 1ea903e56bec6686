"""Unit tests: no server, no database, no network; pure modules (domain, audit's pure
parts, the flow engine, input rules) called directly. What they share is here."""

from __future__ import annotations

from pathlib import Path

# The checkout, for the seed flows and the examples.
ROOT = Path(__file__).resolve().parents[2]
