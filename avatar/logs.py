"""Logging through structlog: JSON lines when not on a terminal, readable console output on one.

Standard-library loggers (ours and the libraries') go through the same processors, so ``extra=`` fields
and the request id bound in context variables appear on every line, worker threads included
(``asyncio.to_thread`` copies the context).
"""

from __future__ import annotations

import logging
import sys

import structlog


def _drop_color_message(logger: object, method: str, event: structlog.types.EventDict) -> structlog.types.EventDict:
    # uvicorn passes an ANSI-coloured copy of each message as an `extra`; the plain one is enough.
    event.pop("color_message", None)
    return event


_SHARED: list[structlog.types.Processor] = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    structlog.stdlib.ExtraAdder(),
    _drop_color_message,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
]


def configure_logging(level: str = "INFO", *, json: bool | None = None, stream: object = None) -> None:
    """Route every logger to ``stream`` (stderr) as JSON (not a terminal) or console lines."""
    out = stream or sys.stderr
    if json is None:
        json = not getattr(out, "isatty", lambda: False)()
    route_structlog_to_stdlib()
    formatter = line_formatter(json=json)
    handler = logging.StreamHandler(out)  # type: ignore[arg-type]
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("httpx", "faster_whisper", "transformers", "multipart"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


def route_structlog_to_stdlib() -> None:
    """structlog's loggers hand their lines to the standard library's, whose handlers write them."""
    structlog.configure(
        processors=[*_SHARED, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )


def line_formatter(*, json: bool) -> logging.Formatter:
    """One line a record, structlog's and the standard library's alike: JSON, or console text."""
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    )
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=_SHARED,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
        ],
    )
