"""The command line: chatterwerks serve | migrate | reset-db."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Sequence

import uvloop

from chatterwerks import db
from chatterwerks.config import ConfigError, Settings, redact_url
from chatterwerks.embedded import EmbeddedPostgres

log = logging.getLogger("chatterwerks")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="chatterwerks", description="A self-hosted team chat on PostgreSQL."
    )
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


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(f"chatterwerks: {exc}", file=sys.stderr)
        return 2
    from chatterwerks.app import configure_logging

    configure_logging(settings.log_level)
    if args.command == "reset-db" and not args.yes:
        print(
            "chatterwerks: reset-db deletes all data; run it with --yes to confirm.",
            file=sys.stderr,
        )
        return 2
    embedded = None
    try:
        url = settings.database_url
        if url is None:
            embedded = EmbeddedPostgres(settings.data_dir)
            url = embedded.start()
            log.info("database: embedded PostgreSQL in %s", embedded.pgdata)
        else:
            log.info("database: %s", redact_url(url))
        if args.command == "migrate":
            applied = asyncio.run(db.migrate_url(url))
            print(
                f"applied {len(applied)} migration(s)"
                + (f": {', '.join(applied)}" if applied else "")
            )
        elif args.command == "reset-db":
            asyncio.run(_reset(url))
            print("database reset: schema and seed rows re-created")
        else:
            asyncio.run(db.migrate_url(url))
            _serve(settings.replace(database_url=url), args)
    except db.DatabaseUnavailable as exc:
        print(f"chatterwerks: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    finally:
        if embedded is not None:
            embedded.stop()
    return 0


async def _reset(url: str) -> None:
    conn = await db.connect(url)
    try:
        await db.reset(conn)
    finally:
        await conn.close()


def _serve(settings: Settings, args: argparse.Namespace) -> None:
    host = args.host or settings.host
    port = settings.port if args.port is None else args.port
    if args.workers > 1:
        _serve_gunicorn(settings, host, port, args.workers)
        return
    from aiohttp import web

    from chatterwerks.app import create_app, make_runner

    async def run() -> None:
        runner = make_runner(await create_app(settings))
        await runner.setup()
        await web.TCPSite(runner, host, port).start()
        log.info("Chatterwerks listening on http://%s:%d", host, port)
        stop = asyncio.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            asyncio.get_running_loop().add_signal_handler(signum, stop.set)
        try:
            await stop.wait()
            log.info("shutting down")
        finally:
            await runner.cleanup()

    uvloop.run(run())  # as gunicorn's workers: see the Procfile


def _serve_gunicorn(settings: Settings, host: str, port: int, workers: int) -> None:
    """Several worker processes; each has its own pool and listener. The
    database (embedded or not) was started once, here, before them."""
    from gunicorn.app.base import BaseApplication

    # Workers read their settings from the environment (gunicorn_app()).
    os.environ["DATABASE_URL"] = settings.database_url or ""

    class Gunicorn(BaseApplication):
        def load_config(self) -> None:
            self.cfg.set("bind", f"{host}:{port}")
            self.cfg.set("workers", workers)
            self.cfg.set("worker_class", "aiohttp.GunicornUVLoopWebWorker")  # as the Procfile
            self.cfg.set("graceful_timeout", 10)

        def load(self) -> object:
            from chatterwerks.app import gunicorn_app

            return gunicorn_app

    log.info("Chatterwerks listening on http://%s:%d with %d workers", host, port, workers)
    Gunicorn().run()
