"""PostgreSQL: one database per service, created if missing, migrated at start."""

import asyncio
from importlib import resources
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from shared.log import get_logger

log = get_logger()

MIGRATION_LOCK = 7_310_001  # advisory lock id: replicas starting together migrate one at a time


async def ensure_database(url: str) -> None:
    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    admin = urlunsplit(parts._replace(path="/postgres"))
    conn = await asyncpg.connect(admin)
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if not exists:
            try:
                await conn.execute(f'CREATE DATABASE "{name}"')
                log.info("database_created", database=name)
            # Another process won the race: PostgreSQL reports it either way, depending on
            # whether the other CREATE DATABASE had committed when ours checked the catalogue.
            except (asyncpg.DuplicateDatabaseError, asyncpg.UniqueViolationError):
                pass
    finally:
        await conn.close()


def _migration_files(package: str) -> list[tuple[str, str]]:
    folder = resources.files(package).joinpath("migrations")
    files = sorted((p for p in folder.iterdir() if p.name.endswith(".sql")), key=lambda p: p.name)
    return [(f"{package}/{p.name}", p.read_text()) for p in files]


async def migrate(conn: asyncpg.Connection, packages: list[str]) -> None:
    """Apply each package's migrations/*.sql once, in name order, each in its own transaction."""
    await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK)
    try:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r["name"] for r in await conn.fetch("SELECT name FROM schema_migrations")}
        for package in packages:
            for name, sql in _migration_files(package):
                if name in done:
                    continue
                async with conn.transaction():
                    await conn.execute(sql)
                    await conn.execute("INSERT INTO schema_migrations (name) VALUES ($1)", name)
                log.info("migration_applied", migration=name)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK)


async def open_database(url: str, packages: list[str], pool_size: int = 10) -> asyncpg.Pool:
    """Create the database if missing, migrate it, and return a connection pool."""
    for attempt in range(30):  # PostgreSQL may still be starting (or restarting)
        try:
            await ensure_database(url)
            break
        except (OSError, asyncpg.CannotConnectNowError):
            await asyncio.sleep(min(0.2 * 2**attempt, 2.0))
    conn = await asyncpg.connect(url)
    try:
        await migrate(conn, packages)
    finally:
        await conn.close()
    return await asyncpg.create_pool(url, min_size=2, max_size=pool_size)


def package_dir(package: str) -> Path:
    return Path(str(resources.files(package)))
