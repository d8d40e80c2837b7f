"""Errors a person can act on: each is one line saying what to do; usage errors exit 2 and list the
choices; read commands print JSON on ``--json``; logging is configured once, with the ids on each line."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import socket
import sys

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from temporalio.testing import ActivityEnvironment

from api.app import LogIds
from cli.main import ui_url
from client.logs import configure_logging
from client.settings import Settings
from tests.cli_helpers import dunning, failed, succeeded, usage_error
from tests.conftest import free_port


@pytest.fixture
def stopped_stack(tmp_path) -> dict[str, str]:
    """The environment of a machine where `make run` is not running: nothing under the data folder,
    nothing on Temporal's port."""
    return {"DUNNING_DATA_DIR": str(tmp_path / "data"), "DUNNING_TEMPORAL_ADDRESS": f"127.0.0.1:{free_port()}"}


async def test_a_database_command_with_the_stack_stopped_says_how_to_start_it(stopped_stack):
    for command in (["projections", "lag"], ["projections", "rebuild"], ["equipment", "status", "CUST-1"]):
        line = failed(await dunning(stopped_stack, *command), "is the stack running? Start it with `make run`")
        assert "DATABASE_URL" in line and "Errno" not in line, line


async def test_a_temporal_command_with_the_stack_stopped_says_how_to_start_it(stopped_stack):
    line = failed(await dunning(stopped_stack, "invoice", "resend", "INV-1"), "cannot connect to Temporal at 127.0.0.1:")
    assert "Start it with `make run`" in line and "DUNNING_TEMPORAL_ADDRESS" in line


async def test_a_taken_port_names_the_process_holding_it_and_the_setting(tmp_path):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        env = {
            "DUNNING_DATA_DIR": str(tmp_path / "data"),
            "DUNNING_TEMPORAL_ADDRESS": f"localhost:{free_port()}",
            "DUNNING_TEMPORAL_UI_PORT": str(port),
            "DUNNING_API_PORT": str(free_port()),
            "DUNNING_SMTP_PORT": str(free_port()),
        }
        line = failed(await dunning(env, "dev"), f"port {port} is in use by pid {os.getpid()} (")
    assert "set DUNNING_TEMPORAL_UI_PORT to a free port" in line
    assert not (tmp_path / "data" / "temporal.db").exists()  # nothing was started


async def test_an_api_whose_port_is_taken_names_the_process_and_the_setting():
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        env = {"DUNNING_API_PORT": str(port), "DUNNING_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none"}
        line = failed(await dunning(env, "api"), f"the API cannot listen on 127.0.0.1:{port}: the port is in use by pid {os.getpid()}")
    assert line.endswith("stop it or set DUNNING_API_PORT")


async def test_usage_errors_exit_2_on_one_line_and_help_lists_the_choices():
    usage_error(await dunning({}, "invoice", "resolve", "INV-1", "--outcome", "maybe"), "'maybe' is not one of 'upheld', 'rejected'")
    usage_error(await dunning({}, "invoice", "pay", "INV-1"), "Missing option '--amount'", "dunning invoice pay -h")
    usage_error(await dunning({}, "invoice", "frobnicate"), "No such command 'frobnicate'")
    usage_error(await dunning({}, "--log-level", "loud", "invoice", "status", "INV-1"), "'loud' is not one of")
    wide = {"COLUMNS": "200"}  # help is wrapped to the terminal's width
    assert "upheld|rejected" in succeeded(await dunning(wide, "invoice", "resolve", "-h"))
    assert "sue|settle|write_off|agency" in succeeded(await dunning(wide, "invoice", "decide", "--help"))
    assert succeeded(await dunning({}, "--version")).startswith("dunning ")


async def test_read_commands_print_json(db_url):
    lag = json.loads(succeeded(await dunning({"DATABASE_URL": db_url}, "projections", "lag", "--json")))
    assert lag == {"events_behind": 0, "seconds_behind": 0.0}
    switch = json.loads(succeeded(await dunning({"DATABASE_URL": db_url}, "equipment", "status", "CUST-1", "--json")))
    assert switch == {"customer_id": "CUST-1", "stopped": None}
    succeeded(await dunning({"DATABASE_URL": db_url}, "equipment", "stop", "--customer", "CUST-1", "--reason", "audit"))
    switch = json.loads(succeeded(await dunning({"DATABASE_URL": db_url}, "equipment", "status", "CUST-1", "--json")))
    assert switch["stopped"]["reason"] == "audit" and switch["stopped"]["scope"] == "CUST-1"


def test_the_ui_link_and_the_codec_origins_follow_the_ui_port(monkeypatch):
    monkeypatch.setenv("DUNNING_TEMPORAL_UI_PORT", "18233")
    settings = Settings()
    assert ui_url(settings, "invoice-INV-1").startswith("http://localhost:18233/namespaces/default/workflows/")
    assert settings.codec_allowed_origins == ["http://localhost:18233", "http://127.0.0.1:18233"]


@pytest.fixture
def root_logging():
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_json_lines_carry_the_invoice_and_workflow_ids(root_logging, capsys):
    configure_logging("info", "json")
    activity = {"workflow_id": "invoice-INV-7", "activity_type": "send_notice", "attempt": 1}
    logging.getLogger("activities.notices").info("sent %s", "reminder", extra={"temporal_activity": activity})
    logging.getLogger("api.routes").warning("refused", extra={"customer_id": "CUST-3"})
    logging.getLogger("api.routes").debug("not shown")
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert [(line["level"], line["message"]) for line in lines] == [("INFO", "sent reminder"), ("WARNING", "refused")]
    assert (lines[0]["invoice_id"], lines[0]["workflow_id"], lines[0]["logger"]) == ("INV-7", "invoice-INV-7", "activities.notices")
    assert lines[1]["customer_id"] == "CUST-3" and "invoice_id" not in lines[1]


def test_readable_lines_for_dunning_dev(root_logging, capsys):
    configure_logging("WARNING", "text")
    workflow = {"workflow_id": "invoice-INV-8", "workflow_type": "InvoiceWorkflow"}
    logging.getLogger("temporalio.workflow").warning("dropped a signal", extra={"temporal_workflow": workflow})
    logging.getLogger("x").info("below the level")
    err = capsys.readouterr().err
    assert err.endswith("WARNING temporalio.workflow: dropped a signal [invoice INV-8, workflow invoice-INV-8]\n"), err
    assert "below the level" not in err


async def test_the_log_level_comes_from_the_option_or_the_environment(monkeypatch):
    monkeypatch.setenv("DUNNING_LOG_LEVEL", "debug")
    assert Settings().log_level == "DEBUG"
    monkeypatch.delenv("DUNNING_LOG_LEVEL")
    # the option sets the environment variable the settings read, for this process
    result = await dunning({}, "--log-level", "error", "codec", "new-key", "k1")
    assert result.exit_code == 0 and os.environ.pop("DUNNING_LOG_LEVEL") == "ERROR"
    assert sys.stderr  # the command itself printed nothing on stderr
    assert result.stderr == ""


async def test_lines_logged_in_an_activity_or_an_api_request_carry_their_ids(root_logging, capsys):
    configure_logging("INFO", "json")
    environment = ActivityEnvironment()
    environment.info = dataclasses.replace(environment.info, workflow_id="invoice-INV-9")
    environment.run(lambda: logging.getLogger("activities.equipment.redfish").info("powered off"))

    async def route(request: Request) -> PlainTextResponse:
        logging.getLogger("api.problems").warning("database unavailable")
        return PlainTextResponse("ok")

    app = LogIds(Starlette(routes=[Route("/invoices/{invoice_id}/payments", route), Route("/customers/{c}", route)]))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as http:
        assert (await http.get("/invoices/INV%2010/payments")).status_code == 200
        assert (await http.get("/customers/CUST-4")).status_code == 200
    logging.getLogger("api").warning("outside any request")
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert [{k: v for k, v in line.items() if k.endswith("_id")} for line in lines] == [
        {"invoice_id": "INV-9", "workflow_id": "invoice-INV-9"},
        {"invoice_id": "INV 10"},
        {"customer_id": "CUST-4"},
        {},
    ]


async def test_a_customer_payment_with_bad_input_is_refused_on_one_line_before_anything_is_asked(stopped_stack):
    pay = ["customer", "pay", "RO-1", "--payment-id", "BT-1"]
    failed(await dunning(stopped_stack, *pay, "--amount", "1,5", "--currency", "RON"), "--amount must be a plain decimal number")
    failed(await dunning(stopped_stack, *pay, "--amount", "1.505", "--currency", "RON"), "more decimals than RON allows")
    failed(await dunning(stopped_stack, *pay, "--amount", "1.50", "--currency", "XYZ"), "invalid payment:")
    line = failed(
        await dunning(stopped_stack, *pay, "--amount", "1.50", "--currency", "RON", "--received-at", "yesterday"),
        "invalid payment: received_at:",
    )
    assert "is the stack running" not in line  # refused before any connection
