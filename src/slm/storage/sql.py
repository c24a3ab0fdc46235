"""SQL engines for slm's stores (the monitor's, the feedback store): SQLite by default, PostgreSQL by URL.

One place that turns what a user gave (``sqlite:///x.db``, ``postgresql+psycopg://user:pw@host/db``, or a bare
file path such as ``slm-feedback.sqlite``) into a SQLAlchemy engine with the settings every store needs, and
every failure to reach it into one :class:`~slm.errors.ConfigError` line that never shows the password.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from slm.errors import ConfigError

if TYPE_CHECKING:
    from sqlalchemy.dialects.postgresql import Insert as PostgresInsert
    from sqlalchemy.dialects.sqlite import Insert as SqliteInsert

    DialectInsert = Callable[[sa.Table], PostgresInsert | SqliteInsert]

SUPPORTED = "use sqlite:/// or postgresql+psycopg://"
# Seconds a PostgreSQL connection attempt may take unless the URL says otherwise (?connect_timeout=N):
# libpq's default is to wait for the operating system, minutes for a host that drops packets.
CONNECT_TIMEOUT_S = 10


def database_url(value: str | Path) -> str:
    """``value`` as a SQLAlchemy URL: a URL (it has ``://``) as it is, a file path as a SQLite URL.

    ``slm-feedback.sqlite`` becomes ``sqlite:///slm-feedback.sqlite`` (relative to the working folder),
    ``/var/lib/slm/f.db`` becomes ``sqlite:////var/lib/slm/f.db``.
    """
    text = str(value).strip()
    if not text:
        raise ConfigError("give a database URL (sqlite:///FILE, postgresql+psycopg://...) or a file path")
    if "://" in text:
        return text
    return f"sqlite:///{Path(text).expanduser()}"


def absolute_database_url(value: str | Path) -> str:
    """:func:`database_url`, with a relative SQLite file made absolute against the working folder now.

    For a server: its workers (Ray Serve replicas) may run in another folder than the one it started in.
    """
    url = database_url(value)
    path = sqlite_file(url)
    if path is None or path.is_absolute():
        return url
    return sa.engine.make_url(url).set(database=str(path.resolve())).render_as_string(hide_password=False)


def sqlite_file(url: str) -> Path | None:
    """The file a SQLite URL names; None for another database or an in-memory one."""
    try:
        parsed = sa.engine.make_url(url)
    except sa.exc.ArgumentError:
        return None
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        return None
    return Path(parsed.database)


def open_engine(url: str, *, what: str = "storage") -> sa.Engine:
    """An engine for ``url`` (SQLite or PostgreSQL); ConfigError naming ``what`` for a URL it cannot use.

    Connects lazily: :func:`create_tables` is where an unreachable server is found out.
    """
    try:
        parsed = sa.engine.make_url(url)
        if parsed.get_backend_name() not in ("sqlite", "postgresql"):
            raise ConfigError(f"{what}: {parsed.get_backend_name()} is not supported ({SUPPORTED})")
        connect_args: dict[str, Any] = {}
        if parsed.get_backend_name() == "postgresql" and "connect_timeout" not in parsed.query:
            connect_args["connect_timeout"] = CONNECT_TIMEOUT_S
        engine = sa.create_engine(parsed, pool_pre_ping=True, connect_args=connect_args)
    except (sa.exc.ArgumentError, sa.exc.NoSuchModuleError, ImportError) as exc:
        raise ConfigError(f"{what}: cannot use '{safe_url(url)}': {first_line(exc)}") from None
    if engine.dialect.name == "sqlite":
        sa.event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def create_tables(engine: sa.Engine, metadata: sa.MetaData, *, what: str = "storage") -> None:
    """Create ``metadata``'s missing tables; ConfigError (one line) when the database cannot be reached."""
    try:
        metadata.create_all(engine)
    except sa.exc.SQLAlchemyError as exc:
        engine.dispose()
        raise ConfigError(f"{what}: cannot open '{safe_url(engine.url)}': {first_line(driver_error(exc))}") from None


def dialect_insert(engine: sa.Engine) -> DialectInsert:
    """The dialect's INSERT, which has ON CONFLICT DO NOTHING / DO UPDATE (SQLite and PostgreSQL spell it alike)."""
    if engine.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as postgres_insert

        return postgres_insert
    if engine.dialect.name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert
    raise ConfigError(f"storage: {engine.dialect.name} is not supported ({SUPPORTED})")


def driver_error(exc: BaseException) -> BaseException:
    """The database driver's own error where SQLAlchemy wraps one (its message says what went wrong)."""
    if isinstance(exc, sa.exc.StatementError) and exc.orig is not None:
        return exc.orig
    return exc


def safe_url(url: str | sa.URL) -> str:
    """The URL without its password, for messages and logs."""
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return str(url)


def first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _sqlite_pragmas(connection: Any, _record: Any) -> None:
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")  # readers (reports, exports, dashboards) never block the writer
    cursor.execute("PRAGMA synchronous=NORMAL")  # with WAL: a killed process loses nothing committed
    cursor.execute("PRAGMA busy_timeout=10000")  # a second writer (another server, an import) waits, not fails
    cursor.close()
