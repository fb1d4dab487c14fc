"""Business time: the real clock, or a simulated one that runs faster, so the demo can
live through a year in minutes (deadlines, monthly KPIs) with every process agreeing on
the date.

CHAIN_KLOKKE = "<ISO start>@<wall-clock epoch seconds>x<speed>": at the wall-clock moment
`anchor` the business time is `start`, and it runs `speed` times faster than the wall
clock. Unset: the real clock. Only business time follows it (event times, today's date for
deadlines, waiting times and the year of decided places); technical timestamps do not.
"""

import time
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

from shared.config import settings

OSLO = ZoneInfo("Europe/Oslo")


@lru_cache
def _simulert(spec: str | None) -> tuple[datetime, float, float] | None:
    if not spec:
        return None
    start, _, rest = spec.partition("@")
    anker, _, fart = rest.partition("x")
    return datetime.fromisoformat(start), float(anker), float(fart)


def spec(start: datetime, fart: float, anker: float | None = None) -> str:
    """The CHAIN_KLOKKE value for a simulated clock starting now (or at `anker`)."""
    return f"{start.isoformat()}@{time.time() if anker is None else anker}x{fart}"


def fart() -> float | None:
    """How many times faster than the wall clock business time runs; None: real time."""
    sim = _simulert(settings().klokke)
    return sim[2] if sim else None


def no() -> datetime:
    sim = _simulert(settings().klokke)
    if sim is None:
        return datetime.now(UTC)
    start, anker, fart = sim
    return (start + timedelta(seconds=(time.time() - anker) * fart)).astimezone(UTC)


def idag() -> date:
    """Today in Norway, by business time."""
    return no().astimezone(OSLO).date()
