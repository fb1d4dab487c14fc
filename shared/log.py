"""structlog JSON logs. Personal fields are never logged on purpose; as a safety net a
processor redacts anything that looks like a fødselsnummer (11 digits) in every value."""

import logging
import re
import sys

import structlog

FNR_LIKE = re.compile(r"(?<!\d)\d{6}\s?\d{5}(?!\d)")
REDACTED = "[redacted]"


def redact(value):
    if isinstance(value, str):
        return FNR_LIKE.sub(REDACTED, value)
    if isinstance(value, dict):
        return {redact(k): redact(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    if isinstance(value, int) and not isinstance(value, bool) and 10**10 <= abs(value) < 10**11:
        return REDACTED
    return value


def _redact_processor(_logger, _method, event_dict):
    return {k: redact(v) for k, v in event_dict.items()}


def configure(service: str, level: str = "INFO") -> None:
    logging.basicConfig(format="%(message)s", stream=sys.stdout, level=level)
    # Libraries log through stdlib; keep them quiet unless they warn.
    for noisy in ("aiormq", "aio_pika", "faststream", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            _redact_processor,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        logger_factory=structlog.PrintLoggerFactory(),
        cache_logger_on_first_use=True,
    )
    structlog.contextvars.bind_contextvars(service=service)


def get_logger(**initial):
    return structlog.get_logger(**initial)
