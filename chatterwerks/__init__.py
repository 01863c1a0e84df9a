"""Chatterwerks: a self-hosted team chat on aiohttp and PostgreSQL."""

from pathlib import Path

__version__ = "0.1.0"

# sql/, templates/ and static/ live beside the package in the checkout.
BASE_DIR = Path(__file__).resolve().parent.parent
