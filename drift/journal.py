"""The operations journal: every replay, redrive, drop and rebuild, recorded before it
starts (who, what, parameters) and completed with its result, in the database
`<prefix>drift`. A crashed operation shows as one without a result."""

import contextlib
import getpass
import json
import os
from collections.abc import AsyncIterator
from typing import Any

import asyncpg

from shared.config import Settings
from shared.db import ensure_database, migrate


def operator() -> str:
    """Who is acting: CHAIN_OPERATOR, else the login name."""
    return os.environ.get("CHAIN_OPERATOR") or getpass.getuser()


async def connect(cfg: Settings) -> asyncpg.Connection:
    url = cfg.database_url("drift")
    await ensure_database(url)
    conn = await asyncpg.connect(url)
    await migrate(conn, ["drift"])
    return conn


class Operasjon:
    def __init__(self, parametrar: dict) -> None:
        self.parametrar = parametrar
        self.resultat: dict[str, Any] = {}


@contextlib.asynccontextmanager
async def record(cfg: Settings, kommando: str, parametrar: dict, who: str | None = None) -> AsyncIterator[Operasjon]:
    """Record an operation: the entry is written before it runs; fill `op.resultat` and it is
    written when the block ends (with the error, if it raised)."""
    conn = await connect(cfg)
    try:
        op_id = await conn.fetchval(
            "INSERT INTO operasjon (operator, kommando, parametrar) VALUES ($1, $2, $3) RETURNING id",
            who or operator(),
            kommando,
            json.dumps(parametrar, default=str),
        )
        op = Operasjon(parametrar)
        try:
            yield op
        except BaseException as exc:
            op.resultat["feil"] = f"{type(exc).__name__}: {exc}"[:500]
            raise
        finally:
            await conn.execute("UPDATE operasjon SET resultat = $2 WHERE id = $1", op_id, json.dumps(op.resultat, default=str))
    finally:
        await conn.close()


async def entries(cfg: Settings, limit: int = 50) -> list[dict]:
    conn = await connect(cfg)
    try:
        rows = await conn.fetch("SELECT id, tid, operator, kommando, parametrar, resultat FROM operasjon ORDER BY id DESC LIMIT $1", limit)
    finally:
        await conn.close()
    return [dict(r) | {"parametrar": json.loads(r["parametrar"]), "resultat": json.loads(r["resultat"]) if r["resultat"] else None} for r in rows]
