"""Settings, read once from the environment into one frozen object."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path

import platformdirs

from chatterwerks.ratelimit import Limit


class ConfigError(ValueError):
    """A setting has a value we cannot use; the message names it."""


@dataclasses.dataclass(frozen=True, slots=True)
class Settings:
    # None means: start (or reuse) the embedded PostgreSQL in data_dir.
    database_url: str | None = None
    host: str = "127.0.0.1"
    port: int = 8080
    pool_min_size: int = 2
    pool_max_size: int = 10
    data_dir: Path = Path(platformdirs.user_data_dir("chatterwerks"))
    # Long-poll bounds in seconds (docs/api.md: default 25, at most 60).
    poll_default_timeout: float = 25.0
    poll_max_timeout: float = 60.0
    session_days: int = 30
    # A session unused this long ends, whatever its expiry.
    session_idle_days: int = 14
    secure_cookies: bool = False
    # argon2id cost; the defaults are argon2-cffi's (RFC 9106 low-memory profile).
    argon2_time_cost: int = 3
    argon2_memory_kib: int = 65536
    log_level: str = "INFO"
    # Rate limits, "BURST/SECONDS" in the environment ("off" disables one).
    limit_login_address: Limit | None = Limit(20, 3.0)  # all sign-in attempts per address
    # Failed sign-ins per (username, address), and, looser, per username from
    # any address: guessing stays slow, and one attacker's address cannot lock
    # the owner out.
    limit_login_failures: Limit | None = Limit(10, 30.0)
    limit_login_username: Limit | None = Limit(50, 10.0)
    limit_register_address: Limit | None = Limit(5, 60.0)
    limit_messages_user: Limit | None = Limit(30, 0.2)  # a burst of 30, then 5 a second
    # Parked long-polls per user in one process: a script cannot hold 10,000.
    max_polls_per_user: int = 20
    # Behind a reverse proxy, the client address is the last X-Forwarded-For hop.
    trust_forwarded_for: bool = False
    # Files (docs/api.md "Files"): the largest upload, each user's total,
    # where the bytes go (None: PostgreSQL; s3://...: chatterwerks/storage/s3.py),
    # and uploads per user (a burst of 30, then one every 2 seconds).
    max_upload_bytes: int = 25 * 1024 * 1024
    upload_quota_bytes: int = 1024 * 1024 * 1024
    storage_url: str | None = None
    limit_uploads_user: Limit | None = Limit(30, 2.0)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        defaults = cls()

        def number(name: str, default: float, kind: type = int, low: float = 0) -> float:
            raw = env.get(name)
            if raw is None or raw == "":
                return default
            try:
                value = kind(raw)
            except ValueError:
                raise ConfigError(f"{name} must be a number, got {raw!r}") from None
            if value < low:
                raise ConfigError(f"{name} must be at least {low}, got {raw!r}")
            return value

        def flag(name: str, default: bool) -> bool:
            raw = env.get(name, "").strip().lower()
            if not raw:
                return default
            if raw in {"1", "true", "yes", "on"}:
                return True
            if raw in {"0", "false", "no", "off"}:
                return False
            raise ConfigError(f"{name} must be true or false, got {raw!r}")

        def limit(name: str, default: Limit | None) -> Limit | None:
            raw = env.get(name)
            if not raw:
                return default
            try:
                return Limit.parse(raw)
            except ValueError:
                raise ConfigError(
                    f"{name} must be BURST/SECONDS (like 10/30) or off, got {raw!r}"
                ) from None

        port = number("PORT", defaults.port, int, 0)
        if port > 65535:
            raise ConfigError(f"PORT must be at most 65535, got {port}")
        pool_max = number("CHATTERWERKS_POOL_SIZE", defaults.pool_max_size, int, 1)
        return cls(
            database_url=env.get("DATABASE_URL") or None,
            host=env.get("HOST") or defaults.host,
            port=port,
            pool_min_size=min(defaults.pool_min_size, pool_max),
            pool_max_size=pool_max,
            data_dir=Path(env.get("CHATTERWERKS_DATA_DIR") or defaults.data_dir).expanduser(),
            poll_default_timeout=number(
                "CHATTERWERKS_POLL_TIMEOUT", defaults.poll_default_timeout, float, 0
            ),
            poll_max_timeout=number(
                "CHATTERWERKS_POLL_MAX_TIMEOUT", defaults.poll_max_timeout, float, 0
            ),
            session_days=number("CHATTERWERKS_SESSION_DAYS", defaults.session_days, int, 1),
            session_idle_days=number(
                "CHATTERWERKS_SESSION_IDLE_DAYS", defaults.session_idle_days, int, 1
            ),
            secure_cookies=flag("CHATTERWERKS_SECURE_COOKIES", defaults.secure_cookies),
            argon2_time_cost=number(
                "CHATTERWERKS_ARGON2_TIME_COST", defaults.argon2_time_cost, int, 1
            ),
            argon2_memory_kib=number(
                "CHATTERWERKS_ARGON2_MEMORY_KIB", defaults.argon2_memory_kib, int, 8
            ),
            log_level=(env.get("CHATTERWERKS_LOG_LEVEL") or defaults.log_level).upper(),
            limit_login_address=limit(
                "CHATTERWERKS_LIMIT_LOGIN_ADDRESS", defaults.limit_login_address
            ),
            limit_login_failures=limit(
                "CHATTERWERKS_LIMIT_LOGIN_FAILURES", defaults.limit_login_failures
            ),
            limit_login_username=limit(
                "CHATTERWERKS_LIMIT_LOGIN_USERNAME", defaults.limit_login_username
            ),
            limit_register_address=limit(
                "CHATTERWERKS_LIMIT_REGISTER_ADDRESS", defaults.limit_register_address
            ),
            limit_messages_user=limit(
                "CHATTERWERKS_LIMIT_MESSAGES_USER", defaults.limit_messages_user
            ),
            max_polls_per_user=number(
                "CHATTERWERKS_MAX_POLLS_PER_USER", defaults.max_polls_per_user, int, 1
            ),
            trust_forwarded_for=flag(
                "CHATTERWERKS_TRUST_FORWARDED_FOR", defaults.trust_forwarded_for
            ),
            max_upload_bytes=int(
                number("CHATTERWERKS_MAX_UPLOAD_MB", defaults.max_upload_bytes / 2**20, float, 0)
                * 2**20
            ),
            upload_quota_bytes=int(
                number(
                    "CHATTERWERKS_UPLOAD_QUOTA_MB", defaults.upload_quota_bytes / 2**20, float, 0
                )
                * 2**20
            ),
            storage_url=env.get("CHATTERWERKS_STORAGE_URL") or None,
            limit_uploads_user=limit(
                "CHATTERWERKS_LIMIT_UPLOADS_USER", defaults.limit_uploads_user
            ),
        )

    def replace(self, **changes: object) -> Settings:
        return dataclasses.replace(self, **changes)


def redact_url(url: str) -> str:
    """The URL without its password, for logs and error messages."""
    from urllib.parse import urlsplit, urlunsplit

    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    userinfo = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{userinfo}:***@{netloc[-1]}"))
