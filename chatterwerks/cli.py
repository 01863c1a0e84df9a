"""The command line: chatterwerks serve | migrate | reset-db."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
import sys
from collections.abc import Sequence

import uvloop

from chatterwerks import __version__, db
from chatterwerks.config import ConfigError, Settings, redact_url
from chatterwerks.embedded import EmbeddedPostgres
from chatterwerks.realtime import APPLICATION_NAME

log = logging.getLogger("chatterwerks")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="chatterwerks", description="A self-hosted team chat on PostgreSQL."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="apply pending migrations, then serve HTTP")
    serve.add_argument("--host", help="address to listen on (default: $HOST or 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default: $PORT or 8080)")
    serve.add_argument(
        "--workers", type=int, default=1, help="worker processes (more than 1 runs gunicorn)"
    )
    commands.add_parser("migrate", help="apply the sql/ migrations not yet applied")
    reset = commands.add_parser("reset-db", help="drop everything and re-create the schema")
    reset.add_argument("--yes", action="store_true", help="yes, delete every user and message")
    return parser


def _fail(message: str, status: int = 1) -> int:
    print(f"chatterwerks: {message}", file=sys.stderr)
    return status


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        return _fail(str(exc), 2)
    from chatterwerks.app import configure_logging

    configure_logging(settings.log_level)
    if args.command == "reset-db" and not args.yes:
        return _fail("reset-db deletes all data; run it with --yes to confirm.", 2)
    # A SIGTERM before serving starts (say, during migrations) still runs the
    # finally below, which stops the embedded server.
    signal.signal(signal.SIGTERM, _interrupt)
    listener = None
    if args.command == "serve":
        # Bound before anything starts: a busy port is one line, and no
        # embedded server is started for nothing.
        host = args.host or settings.host
        port = settings.port if args.port is None else args.port
        try:
            listener = _bind(host, port)
        except OSError as exc:
            return _fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}")
    embedded = None
    try:
        url = settings.database_url
        if url is None:
            embedded = EmbeddedPostgres(settings.data_dir)
            url = embedded.start()
            log.info("database: embedded PostgreSQL in %s", embedded.pgdata)
        else:
            log.info("database: %s", redact_url(url))
        # Migrations hold a session-level lock: past PgBouncer if it is there.
        direct_url = settings.listen_url or url
        if args.command == "migrate":
            applied = asyncio.run(db.migrate_url(direct_url))
            print(
                f"applied {len(applied)} migration(s)"
                + (f": {', '.join(applied)}" if applied else "")
            )
        elif args.command == "reset-db":
            servers = asyncio.run(_reset(direct_url))
            if servers:
                return _fail(
                    f"reset-db refused: {servers} server{' is' if servers == 1 else 's are'}"
                    " connected to this database; stop them first."
                )
            print("database reset: schema and seed rows re-created")
        else:
            asyncio.run(db.migrate_url(direct_url))
            _serve(settings.replace(database_url=url), listener, args.workers)
    except db.DatabaseUnavailable as exc:
        return _fail(str(exc))
    except KeyboardInterrupt:
        pass
    finally:
        if listener is not None:
            listener.close()
        if embedded is not None:
            embedded.stop()
    return 0


async def _reset(url: str) -> int:
    """Resets the database unless servers are connected to it; returns how many are.

    A running server would keep answering for sessions it has cached, and a
    token of a deleted user could then pass for the new user given its id."""
    conn = await db.connect(url)
    try:
        servers = await conn.fetchval(db.QUERIES.connected_servers, APPLICATION_NAME)
        if servers == 0:
            await db.reset(conn)
        return servers
    finally:
        await conn.close()


def _bind(host: str, port: int) -> socket.socket:
    """A socket bound to host:port, not yet listening (connections are refused
    until the server is ready to answer them)."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    return sock


def _serve(settings: Settings, listener: socket.socket, workers: int) -> None:
    if workers > 1:
        _serve_gunicorn(settings, listener, workers)
        return
    from aiohttp import web

    from chatterwerks.app import create_app, make_runner

    async def run() -> None:
        runner = make_runner(await create_app(settings))
        await runner.setup()
        site = web.SockSite(runner, listener)
        await site.start()
        log.info("Chatterwerks listening on %s", site.name)
        stop = asyncio.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            asyncio.get_running_loop().add_signal_handler(signum, stop.set)
        try:
            await stop.wait()
            log.info("shutting down")
        finally:
            await runner.cleanup()

    uvloop.run(run())  # as gunicorn's workers: see the Procfile


def _serve_gunicorn(settings: Settings, listener: socket.socket, workers: int) -> None:
    """Several worker processes; each has its own pool and listener. The
    database (embedded or not) was started once, here, before them."""
    from gunicorn.app.base import BaseApplication
    from gunicorn.glogging import Logger

    # Workers read their settings from the environment (gunicorn_app()).
    os.environ["DATABASE_URL"] = settings.database_url or ""

    class OurFormatLogger(Logger):
        """Gunicorn's messages go to the root logger set up by
        configure_logging, so every line has the one format."""

        def setup(self, cfg: object) -> None:
            super().setup(cfg)
            for handler in list(self.error_log.handlers):
                self.error_log.removeHandler(handler)
            self.error_log.propagate = True

    host, port = listener.getsockname()[:2]
    # The socket bound by main(); gunicorn listens on it, and closes it.
    fd = listener.detach()

    class Gunicorn(BaseApplication):
        def load_config(self) -> None:
            self.cfg.set("bind", f"fd://{fd}")
            self.cfg.set("workers", workers)
            self.cfg.set("worker_class", "aiohttp.GunicornUVLoopWebWorker")  # as the Procfile
            self.cfg.set("graceful_timeout", 10)
            self.cfg.set("logger_class", OurFormatLogger)
            self.cfg.set("loglevel", settings.log_level.lower())
            # Its control socket would live under $HOME/.gunicorn/; nothing of
            # ours documents it, and two serves on one data dir would share it.
            self.cfg.set("control_socket_disable", True)

        def load(self) -> object:
            from chatterwerks.app import gunicorn_app

            return gunicorn_app

    log.info("Chatterwerks listening on http://%s:%d with %d workers", host, port, workers)
    Gunicorn().run()
