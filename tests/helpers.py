"""Small assertions and utilities shared by the test modules."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any

import aiohttp


def assert_error(body: Any, code: str) -> None:
    """The one error shape of docs/api.md, with the expected code."""
    assert isinstance(body, dict) and set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message"}, body
    assert body["error"]["code"] == code, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


async def start_server(
    database_url: str, *extra: str, host: str = "127.0.0.1", env: dict[str, str] | None = None
) -> tuple[subprocess.Popen, str]:
    """`chatterwerks serve` on a free port of `host` (argon2 made cheap,
    default rate limits unless `env` says otherwise), once /healthz answers:
    (the process, its base URL). What it prints is kept and shown if it fails
    to start."""
    port = free_port(host)
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "CHATTERWERKS_ARGON2_TIME_COST": "1",
        "CHATTERWERKS_ARGON2_MEMORY_KIB": "64",
        "CHATTERWERKS_LOG_LEVEL": "WARNING",
        **(env or {}),
    }
    output = tempfile.TemporaryFile()  # closed by stop_server
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "chatterwerks",
            "serve",
            "--host",
            host,
            "--port",
            str(port),
            *extra,
        ],
        env=env,
        stdout=output,
        stderr=subprocess.STDOUT,
    )
    process.output = output  # type: ignore[attr-defined]
    base = f"http://{host}:{port}"

    def printed() -> str:
        output.seek(0)
        return output.read().decode(errors="replace")

    deadline = time.monotonic() + 60
    async with aiohttp.ClientSession() as session:
        while True:
            assert process.poll() is None, printed()
            try:
                async with session.get(base + "/healthz") as response:
                    if response.status == 200:
                        return process, base
            except aiohttp.ClientError:
                pass
            assert time.monotonic() < deadline, "server did not start:\n" + printed()
            await asyncio.sleep(0.1)


def stop_server(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    process.output.close()  # type: ignore[attr-defined]
