"""Every failure the worker sends Temporal is small and keeps its reason (``client.failures``).

Temporal keeps a retried activity's failure in the workflow's mutable state only up to 4 KiB
(``limit.mutableStateActivityFailureSize.error``) and replaces a larger one by "Failure exceeds size limit.": a
notice that failed while PostgreSQL was down (asyncpg's stack trace alone is about 4 KiB) showed ops no reason.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

import asyncpg
import pytest
from temporalio import activity, workflow
from temporalio.api.failure.v1 import Failure
from temporalio.client import Client
from temporalio.common import RetryPolicy
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import DataConverter
from temporalio.exceptions import ApplicationError, ApplicationErrorCategory
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from activities.notices.smtp import SmtpConfig
from client.codec import new_key
from client.failures import BUDGET_BYTES, MAX_CAUSES, SERVER_FAILURE_LIMIT
from client.settings import Settings
from client.temporal import data_converter
from tests.conftest import free_port
from tests.faults.checks import failure_messages, oversized_failures
from tests.notice_servers import notice_activities, notice_request, run_activity

# Temporal warns from half its limit; a codec adds about 100 bytes a level to the budget
SMALL = SERVER_FAILURE_LIMIT // 2
ROOT_REASON = "connection refused by 192.0.2.7:5432"


def converters() -> dict[str, DataConverter]:
    """The service's data converter, in clear and encrypting (``DUNNING_CODEC_KEYS`` set)."""
    encrypting = Settings(codec_keys=f"k1:{new_key()}")
    return {"clear": data_converter(Settings(codec_keys=None)), "encrypted": data_converter(encrypting)}


async def sent(converter: DataConverter, error: BaseException) -> tuple[Failure, BaseException]:
    """The failure as the worker sends it (converted and encoded), and the error a workflow gets back from it."""
    failure = Failure()
    await converter.encode_failure(error, failure)
    back = Failure()
    back.CopyFrom(failure)
    return failure, await converter.decode_failure(back)


def chain(error: BaseException | None) -> list[BaseException]:
    errors = []
    while error is not None:
        errors.append(error)
        error = error.__cause__
    return errors


def unreachable_database(where: str) -> str:
    """A DSN of a database nothing answers for: a Unix socket folder that does not exist, or a closed port."""
    if where == "socket":
        return f"postgresql://dunning@/dunning?host=/tmp/no-postgres-{uuid.uuid4().hex[:8]}"
    return f"postgresql://dunning@127.0.0.1:{free_port()}/dunning"


@pytest.mark.parametrize(("where", "reason"), [("socket", "No such file or directory"), ("port", "ConnectionRefusedError")])
async def test_a_notice_failing_with_the_database_unreachable_sends_a_small_failure_that_says_why(where, reason):
    pool = await asyncpg.create_pool(unreachable_database(where), min_size=0)
    notices = notice_activities(pool, SmtpConfig(host="127.0.0.1", port=free_port(), security="none"))
    notice = notice_request()
    with pytest.raises(ApplicationError) as raised:
        await run_activity(notices.send_notice, notice)
    await pool.close()
    assert raised.value.type == "TransientDeliveryFailure" and not raised.value.non_retryable
    for name, converter in converters().items():
        failure, back = await sent(converter, raised.value)
        assert failure.ByteSize() < SMALL, (name, failure.ByteSize())
        assert isinstance(back, ApplicationError) and back.type == "TransientDeliveryFailure" and not back.non_retryable
        assert back.message.startswith("recording the delivery failed: ")
        assert back.message.endswith(f"({notice.idempotency_key} on email)")
        assert reason in back.message, back.message
        assert [type(e).__name__ for e in chain(back)] == ["ApplicationError", "ApplicationError"]
        assert reason in str(chain(back)[-1]) and chain(back)[-1].failure.stack_trace  # type: ignore[attr-defined]


def huge_chain() -> ApplicationError:
    """A retryable error whose message is 1 MB, with 50 causes of 100 KB each, the first of them the root."""
    error: BaseException = ConnectionRefusedError(ROOT_REASON)
    for level in range(50):
        try:
            try:
                raise error
            except BaseException as inner:
                raise RuntimeError(f"level {level}: " + "y" * 100_000) from inner
        except RuntimeError as outer:
            error = outer
    try:
        raise ApplicationError(
            "the top reason " + "x" * 1_000_000 + " the end",
            {"blob": "z" * 200_000},
            type="PermanentDeliveryFailure",
            non_retryable=True,
            next_retry_delay=timedelta(seconds=7),
            category=ApplicationErrorCategory.BENIGN,
        ) from error
    except ApplicationError as top:
        return top


async def test_a_huge_exception_chain_is_bounded_and_keeps_its_reasons_and_retry_behaviour():
    error = huge_chain()
    for name, converter in converters().items():
        failure, back = await sent(converter, error)
        assert failure.ByteSize() < SMALL, (name, failure.ByteSize())
        assert isinstance(back, ApplicationError)
        assert (back.type, back.non_retryable, back.next_retry_delay, back.category) == (
            "PermanentDeliveryFailure", True, timedelta(seconds=7), ApplicationErrorCategory.BENIGN
        )
        assert back.message.startswith("the top reason xxx") and back.message.endswith("xxx the end")
        causes = chain(back)[1:]
        assert len(causes) <= MAX_CAUSES + 2
        assert causes[0].message.startswith("level 49: yyy")  # type: ignore[attr-defined]
        assert "causes left out)" in str(causes[-2])
        assert isinstance(causes[-1], ApplicationError) and causes[-1].type == "ConnectionRefusedError"
        assert causes[-1].message == ROOT_REASON


async def test_a_small_failure_is_sent_whole():
    try:
        try:
            raise OSError("disk full")
        except OSError as err:
            raise ApplicationError("cannot write the notice", type="TransientDeliveryFailure") from err
    except ApplicationError as error:
        for converter in converters().values():
            failure, back = await sent(converter, error)
            plain, plain_back = await sent(DataConverter(), error)
            assert failure.ByteSize() < BUDGET_BYTES + 200
            assert str(back) == str(plain_back) == "TransientDeliveryFailure: cannot write the notice"
            assert str(back.__cause__) == str(plain_back.__cause__) == "OSError: disk full"
            assert back.failure.stack_trace == plain_back.failure.stack_trace  # type: ignore[attr-defined]


# --- on the dev server: what Temporal keeps of a retried activity's failure --------------------------------


@activity.defn(name="fails_once")
async def fails_once() -> str:
    """Fails its first attempt with a chain of 10 causes (1 KB each) that a connection refused began: 15 KB
    as the SDK sends it, far below the 256 KiB of a history event, four times what Temporal keeps for a retry."""
    if activity.info().attempt > 1:
        return "done"
    error: BaseException = ConnectionRefusedError(ROOT_REASON)
    for level in range(10):
        try:
            raise RuntimeError(f"level {level}: " + "y" * 1000) from error
        except RuntimeError as outer:
            error = outer
    raise RuntimeError("the first attempt failed") from error


@workflow.defn(name="FailsOnce", sandboxed=False)
class FailsOnce:
    @workflow.run
    async def run(self) -> str:
        return await workflow.execute_activity(
            fails_once,
            start_to_close_timeout=timedelta(seconds=10),
            retry_policy=RetryPolicy(initial_interval=timedelta(milliseconds=100), maximum_attempts=2),
        )


@pytest.mark.parametrize("bounded", [True, False], ids=["bounded", "as-the-sdk-sends-it"])
async def test_temporal_keeps_the_reason_of_a_retried_activity(dev_env: WorkflowEnvironment, bounded: bool):
    converter = data_converter(Settings(codec_keys=None)) if bounded else pydantic_data_converter
    client = Client(**{**dev_env.client.config(), "data_converter": converter})
    queue = f"failure-size-{uuid.uuid4().hex[:8]}"
    async with Worker(
        client, task_queue=queue, workflows=[FailsOnce], activities=[fails_once],
        workflow_runner=UnsandboxedWorkflowRunner(),
    ):
        handle = await client.start_workflow(FailsOnce.run, id=queue, task_queue=queue)
        assert await handle.result() == "done"
    history = await handle.fetch_history()
    [last_failure] = [
        e.activity_task_started_event_attributes.last_failure
        for e in history.events
        if e.HasField("activity_task_started_event_attributes") and e.activity_task_started_event_attributes.attempt == 2
    ]
    problems = oversized_failures([history], {queue: "FailsOnce"})
    if bounded:
        assert last_failure.message == "the first attempt failed" and not problems
        assert [m for m in failure_messages(last_failure) if ROOT_REASON in m]
    else:  # the check of the fault tests catches what Temporal did to it
        assert last_failure.message == "Failure exceeds size limit."
        assert problems and "FailsOnce: a failure of fails_once exceeded Temporal's size limit" in problems[0]

