"""The Temporal UI in a real browser: ops find the suspended invoices with a list query and open one
to read its summary, contact and current state, which reach the page only through the codec server.

The embedded dev server serves the UI and a worker runs the real workflow through an encrypting
client (``tests.ui_stack``); Debian's headless Chromium drives the UI. Invoices run in real time
with a policy a few seconds long: reminder 1 s and suspension 3 s after a due moment 3 s away.
A screenshot of every page opened is saved in the test's ``tmp_path``.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import quote

import pytest
from playwright.async_api import Browser, Page, expect
from playwright.async_api import Error as PlaywrightError
from temporalio.client import Client

from client import invoices
from tests.harness import eventually, make_invoice
from tests.ui_stack import NAMESPACE, UiStack, headless_chromium, loopback_only_context, running_ui_stack
from workflows.models import Invoice, Payment, format_money

SUSPENDED_QUERY = 'InvoiceState="suspended"'
DUE_IN = timedelta(seconds=3)
SUSPENDS_SOON = [{"action": "reminder", "offset": "PT1S"}, {"action": "suspend", "offset": "PT3S"}]
SUSPENDS_IN_AN_HOUR = [{"action": "reminder", "offset": "PT1S"}, {"action": "suspend", "offset": "PT1H"}]
ESCALATION_TIMEOUT = 30.0
UI_TIMEOUT_MS = 20_000


def short_invoice(due: datetime, stages: list[dict[str, str]], name: str, amount_minor: int) -> Invoice:
    """An invoice due at ``due`` (UTC) for ``name``, escalating through ``stages`` at any hour."""
    return make_invoice(
        due.date(),
        contact={"name": name, "email": f"{name.split()[0].lower()}@ui-test.example"},
        amount_minor=amount_minor,
        due_date=due.date(),
        policy={"stages": stages, "due_time": due.time().isoformat(), "sending_window": None},
    )


async def lists_exactly(client: Client, query: str, workflow_ids: set[str]) -> bool:
    """Whether the list query ``query`` finds exactly ``workflow_ids``."""
    return {execution.id async for execution in client.list_workflows(query)} == workflow_ids


def list_url(stack: UiStack, query: str) -> str:
    return f"{stack.ui_url}/namespaces/{NAMESPACE}/workflows?query={quote(query)}"


@pytest.fixture(scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[UiStack]:
    async with running_ui_stack(tmp_path_factory.mktemp("temporal-ui")) as running:
        yield running


@pytest.fixture(scope="module")
async def suspended_invoices(stack: UiStack) -> list[Invoice]:
    """Starts four invoices and returns the two that end up suspended; of the others, one is suspended
    and then paid in full, one is reminded with its suspension an hour away."""
    due = (datetime.now(timezone.utc) + DUE_IN).replace(microsecond=0)
    suspended = [
        short_invoice(due, SUSPENDS_SOON, "Radu Suspendatu", 123_456),
        short_invoice(due, SUSPENDS_SOON, "Oana Suspendata", 98_765),
    ]
    paid = short_invoice(due, SUSPENDS_SOON, "Petra Platitoare", 50_000)
    reminded = short_invoice(due, SUSPENDS_IN_AN_HOUR, "Mihai Amintitu", 70_000)
    for invoice in (*suspended, paid, reminded):
        # a one-second notice after the ultimatum (the cut interlock's floor is a day: test stacks in real time only)
        await invoices.start_invoice(stack.client, stack.task_queue, invoice, minimum_notice=timedelta(seconds=1))
    client, all_suspended = stack.client, {i.workflow_id for i in (*suspended, paid)}
    await eventually(lambda: lists_exactly(client, SUSPENDED_QUERY, all_suspended), ESCALATION_TIMEOUT)
    payment = Payment(payment_id="PAY-UI-1", amount_minor=paid.amount_minor, currency=paid.currency)
    assert await invoices.record_payment(client, paid.invoice_id, payment) == 0
    await eventually(lambda: lists_exactly(client, 'InvoiceState="paid"', {paid.workflow_id}))
    await eventually(lambda: lists_exactly(client, 'InvoiceState="reminded"', {reminded.workflow_id}))
    return suspended


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with headless_chromium() as chromium:
        yield chromium


@contextlib.asynccontextmanager
async def browsing(browser: Browser, screenshot: Path, unreachable: str | None = None) -> AsyncIterator[Page]:
    """A page in a fresh context (loopback only, and not ``unreachable``); its last view is saved to ``screenshot``."""
    async with loopback_only_context(browser, unreachable) as context:
        page = await context.new_page()
        try:
            yield page
        finally:
            with contextlib.suppress(PlaywrightError):  # a debugging aid: never hide the test's own failure
                await page.screenshot(path=screenshot, full_page=True)


async def workflow_ids_in_table(page: Page) -> set[str]:
    """The Workflow ID column of the workflows table, found by its header (columns are configurable)."""
    headers = await page.locator('[data-testid^="workflows-summary-table-header-cell-"]').evaluate_all(
        "cells => cells.map(cell => cell.dataset.testid)"
    )
    column = headers.index("workflows-summary-table-header-cell-Workflow ID")
    rows = await page.get_by_test_id("workflows-summary-configurable-table-row").all()
    return {(await row.get_by_test_id("workflows-summary-table-body-cell").nth(column).inner_text()).strip() for row in rows}


async def test_the_suspended_query_lists_exactly_the_suspended_invoices(
    stack: UiStack, suspended_invoices: list[Invoice], browser: Browser, tmp_path: Path
) -> None:
    async with browsing(browser, tmp_path / "suspended-list.png") as page:
        await page.goto(list_url(stack, SUSPENDED_QUERY))
        await expect(page.get_by_test_id("workflows-summary-configurable-table-row")).to_have_count(
            len(suspended_invoices), timeout=UI_TIMEOUT_MS
        )

        assert await workflow_ids_in_table(page) == {invoice.workflow_id for invoice in suspended_invoices}
        await expect(page.get_by_test_id("workflow-count")).to_have_text(str(len(suspended_invoices)))


async def test_an_invoice_opened_from_the_list_shows_what_the_codec_server_decrypted(
    stack: UiStack, suspended_invoices: list[Invoice], browser: Browser, tmp_path: Path
) -> None:
    invoice = suspended_invoices[0]
    async with browsing(browser, tmp_path / "invoice.png") as page:
        await page.goto(list_url(stack, SUSPENDED_QUERY))
        await page.get_by_role("link", name=invoice.workflow_id, exact=True).click()
        await page.get_by_test_id("user-metadata-tab").click()

        shown = {
            "summary": invoices.invoice_summary(invoice),
            "details": f"Contact: {invoice.contact.name} {invoice.contact.email}",
            "current-details": f"Suspended: {format_money(invoice.amount_minor, invoice.currency)} due",
        }
        for part, text in shown.items():  # each is markdown, rendered in an iframe of its own
            rendered = page.frame_locator(f"#user-metadata-{part}").locator("main")
            await expect(rendered).to_contain_text(text, timeout=UI_TIMEOUT_MS)


async def test_without_the_codec_server_the_invoice_page_shows_none_of_it(
    stack: UiStack, suspended_invoices: list[Invoice], browser: Browser, tmp_path: Path
) -> None:
    invoice = suspended_invoices[0]
    async with browsing(browser, tmp_path / "invoice-without-codec.png", unreachable=stack.codec_url) as page:
        await page.goto(f"{stack.ui_url}/namespaces/{NAMESPACE}/workflows/{invoice.workflow_id}")
        await page.get_by_test_id("user-metadata-tab").click()

        content = page.get_by_role("main")
        for placeholder in ("Codec Server could not connect", "No summary available", "No details available"):
            await expect(content.get_by_text(placeholder, exact=True)).to_be_visible(timeout=UI_TIMEOUT_MS)
        current = page.frame_locator("#user-metadata-current-details").locator("main")
        await expect(current).to_have_text("No Current Details", timeout=UI_TIMEOUT_MS)
        assert invoice.contact.name not in await page.inner_text("body")
