"""Running the ``dunning`` CLI from async tests, and example invoices with fresh ids."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from temporalio.testing import WorkflowEnvironment
from typer.testing import CliRunner, Result

from cli.main import app

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
RUNNER = CliRunner()


def cli_env(env: WorkflowEnvironment, task_queue: str) -> dict[str, str]:
    """Environment variables pointing the CLI at ``env``'s server and ``task_queue``."""
    return {
        "DUNNING_TEMPORAL_ADDRESS": env.client.service_client.config.target_host,
        "DUNNING_TEMPORAL_NAMESPACE": env.client.namespace,
        "DUNNING_TASK_QUEUE": task_queue,
        "DUNNING_TEMPORAL_UI_PORT": "8233",
    }


async def dunning(env: dict[str, str], *args: str) -> Result:
    """Run ``dunning <args>`` in a thread: the command calls ``asyncio.run`` itself, which the
    test's running event loop does not allow on its own thread."""
    return await asyncio.to_thread(RUNNER.invoke, app, list(args), env=env)


def succeeded(result: Result) -> str:
    """Exit code 0 and nothing on stderr; returns stdout."""
    assert result.exit_code == 0, f"exit {result.exit_code}: {result.output}"
    assert result.stderr == ""
    return result.stdout


def failed(result: Result, *fragments: str) -> str:
    """Exit code 1, nothing on stdout, exactly one line ``error: ...`` on stderr and no traceback."""
    assert result.exit_code == 1, f"exit {result.exit_code}: {result.output}"
    assert isinstance(result.exception, SystemExit), f"not handled by the CLI: {result.exception!r}"
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0]
    return lines[0]


def usage_error(result: Result, *fragments: str) -> str:
    """Exit code 2, nothing on stdout, one line ``error: ... (see `dunning ... -h`)`` on stderr."""
    assert result.exit_code == 2, f"exit {result.exit_code}: {result.output}"
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and lines[0].endswith(" -h`)"), result.stderr
    for fragment in fragments:
        assert fragment in lines[0]
    return lines[0]


def local_today(time_zone: str = "Europe/Bucharest") -> date:
    return datetime.now(ZoneInfo(time_zone)).date()


def example_invoice(tmp_path: Path, **changes: Any) -> tuple[Path, dict[str, Any]]:
    """examples/invoice.json with a unique id, issued today and due in 14 days, then ``changes``;
    written to ``tmp_path``. Returns the file and its content."""
    data = json.loads((EXAMPLES / "invoice.json").read_text())
    today = local_today(data["time_zone"])
    data.update(
        invoice_id=f"INV-{uuid.uuid4().hex[:10]}",
        issue_date=today.isoformat(),
        due_date=(today + timedelta(days=14)).isoformat(),
    )
    data.update(changes)
    path = tmp_path / f"{data['invoice_id']}.json"
    path.write_text(json.dumps(data, indent=2))
    return path, data
