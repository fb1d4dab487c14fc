"""The audit log's hash chain, with no I/O: the canonical serialisation of a row, its hash,
and the verification of a chain (issue 5).

hash(row) = SHA-256(canonical(row) including prev_hash), hex. canonical() is JSON with sorted
keys, no whitespace, UTF-8; `tid` in UTC with microseconds, `request_id` as a lowercase UUID
string. The first row's prev_hash is GENESIS. seq starts at 1 and has no holes, so a row
deleted anywhere is a hole, and the chain head (last seq and hash, kept beside the log)
shows rows cut off the end.
"""

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

GENESIS = "0" * 64
FELT = ("seq", "tid", "konsument_org", "klient", "person_id", "felt", "formal", "request_id", "utfall", "prev_hash")


def _tid(tid: datetime) -> str:
    if tid.tzinfo is None:
        raise ValueError("tid must be timezone-aware")
    return tid.astimezone(UTC).isoformat(timespec="microseconds")


def canonical(row: Mapping[str, Any]) -> bytes:
    """The bytes a row's hash is taken over (every field but `hash`)."""
    doc = {
        "seq": int(row["seq"]),
        "tid": _tid(row["tid"]),
        "konsument_org": str(row["konsument_org"]),
        "klient": str(row["klient"]),
        "person_id": str(row["person_id"]),
        "felt": [str(f) for f in row["felt"]],
        "formal": str(row["formal"]),
        "request_id": str(UUID(str(row["request_id"]))),
        "utfall": str(row["utfall"]),
        "prev_hash": str(row["prev_hash"]),
    }
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def hash_of(row: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical(row)).hexdigest()


def chained(row: Mapping[str, Any], prev_seq: int, prev_hash: str) -> dict:
    """The next row after (prev_seq, prev_hash): seq, prev_hash and hash filled in."""
    ny = dict(row) | {"seq": prev_seq + 1, "prev_hash": prev_hash}
    return ny | {"hash": hash_of(ny)}


@dataclass(frozen=True)
class Brot:
    """Where the chain first breaks, and why."""

    seq: int
    grunn: str


class Verifikator:
    """Checks a chain row by row (for long chains read in batches): `add` each row in seq
    order, then `slutt` with the chain head if there is one. The first break is kept."""

    def __init__(self) -> None:
        self.neste = 1
        self.prev_hash = GENESIS
        self.brot: Brot | None = None
        self.rader = 0

    def add(self, row: Mapping[str, Any]) -> Brot | None:
        if self.brot is not None:
            return self.brot
        self.rader += 1
        seq = int(row["seq"])
        if seq != self.neste:
            grunn = f"seq {self.neste} is missing (next row has seq {seq})" if seq > self.neste else f"seq {seq} out of order"
            self.brot = Brot(self.neste, grunn)
        elif row["prev_hash"] != self.prev_hash:
            self.brot = Brot(seq, f"prev_hash does not match the hash of seq {seq - 1}")
        else:
            try:
                ok = hash_of(row) == row["hash"]
            except (ValueError, TypeError, KeyError) as exc:
                self.brot = Brot(seq, f"row cannot be serialised: {exc}")
                return self.brot
            if not ok:
                self.brot = Brot(seq, "content does not match its hash (row altered)")
            else:
                self.neste = seq + 1
                self.prev_hash = row["hash"]
        return self.brot

    def slutt(self, hode: tuple[int, str] | None = None) -> Brot | None:
        """The first break, also checking the chain head (seq, hash) if given."""
        if self.brot is None and hode is not None:
            seq, h = hode
            if seq >= self.neste:
                self.brot = Brot(self.neste, f"rows {self.neste}..{seq} are missing (the chain head is at seq {seq})")
            elif seq != self.neste - 1 or h != self.prev_hash:
                self.brot = Brot(seq, f"the chain head (seq {seq}) does not match the last row (seq {self.neste - 1})")
        return self.brot


def finn_brot(rows: Iterable[Mapping[str, Any]], hode: tuple[int, str] | None = None) -> Brot | None:
    v = Verifikator()
    for row in rows:
        if v.add(row) is not None:
            break
    return v.slutt(hode)


def verify(rows: Iterable[Mapping[str, Any]], hode: tuple[int, str] | None = None) -> int | None:
    """The first broken seq of a chain (rows in seq order), or None if it is intact."""
    brot = finn_brot(rows, hode)
    return brot.seq if brot else None
