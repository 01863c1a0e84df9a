"""Small assertions and utilities shared by the test modules."""

from __future__ import annotations

import socket
from typing import Any


def assert_error(body: Any, code: str) -> None:
    """The one error shape of docs/api.md, with the expected code."""
    assert isinstance(body, dict) and set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message"}, body
    assert body["error"]["code"] == code, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
