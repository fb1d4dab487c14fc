"""Group commit of audit entries: every read waits until its entry is committed, but the
entries of reads that arrive together share one transaction.

The audit log is one hash chain, so appends are serialised on its head row. Appending in
each read's own transaction held that lock across a WAL flush per read, and reads queued
behind it (bench/kompetanse.py: about 8 of 10 pool sessions waiting on the lock). Here one
writer at a time takes every entry waiting, chains them under one lock, and commits once.
A read is answered only after the commit that holds its entry, so no read goes unlogged;
a failed commit fails every read of that batch.
"""

import asyncio
from collections.abc import Mapping
from typing import Any

import asyncpg

from services.kompetanse import store

MAX_BATCH = 500  # bounds a transaction's size and the wait of the last read in it


class Revisor:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self._waiting: list[tuple[Mapping[str, Any], asyncio.Future]] = []
        self._writer: asyncio.Task | None = None

    async def logg(self, entry: Mapping[str, Any]) -> int:
        """Append `entry` (store.log_accesses' fields); its seq, once committed."""
        future = asyncio.get_running_loop().create_future()
        self._waiting.append((entry, future))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write())
        return await future

    async def _write(self) -> None:
        while self._waiting:
            batch, self._waiting = self._waiting[:MAX_BATCH], self._waiting[MAX_BATCH:]
            try:
                async with self.pool.acquire() as conn, conn.transaction():
                    seqs = await store.log_accesses(conn, [entry for entry, _ in batch])
            except Exception as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), seq in zip(batch, seqs, strict=True):
                if not future.done():  # the read may have been cancelled meanwhile
                    future.set_result(seq)


_REVISORAR: dict[int, tuple[asyncpg.Pool, Revisor]] = {}


def for_pool(pool: asyncpg.Pool) -> Revisor:
    """The pool's writer (asyncpg pools take no attributes and no weak references)."""
    known = _REVISORAR.get(id(pool))
    if known is None or known[0] is not pool:
        known = _REVISORAR[id(pool)] = (pool, Revisor(pool))
    return known[1]
