"""Failures of a bounded size: what the worker tells Temporal when an activity (or a workflow) fails.

The SDK sends an exception as a ``Failure``: its message, its whole stack trace, and its ``__cause__`` (or
``__context__``) chain as nested causes. Temporal keeps the failure of an activity it will retry in the
workflow's mutable state, where it allows 4 KiB (``limit.mutableStateActivityFailureSize.error``): a larger one
is replaced by "Failure exceeds size limit." (the original, cut down, only as its cause), which is what the
Temporal UI and the next attempt's ``last_failure`` show. A stack trace through asyncpg's pool and connect code
alone is about 4 KiB: a notice that failed while PostgreSQL was down crossed the limit.

``BoundedFailureConverter`` converts as the SDK does, then bounds the result:

- each message is cut in its middle (its start, and its end, where a reason often is, are kept), each stack
  trace keeps its innermost frames;
- a chain keeps the first ``MAX_CAUSES`` causes and its root cause (why it all began), with a note of how many
  were left out between them; causes left out are not even converted;
- the whole stays within ``BUDGET_BYTES`` (encoded, when messages go into encoded attributes): stack traces are
  dropped first (the deepest cause's first), then details, then the causes between the first and the root, then
  the message is shortened.

The type, the ``non_retryable`` flag, the retry delay and the category are never changed, so retry policies
decide as before. The worker's log keeps the whole exception (the SDK logs every failed activity with it).
"""

from __future__ import annotations

import contextvars
import dataclasses
import re
from collections.abc import Callable, Iterator

from temporalio.api.failure.v1 import Failure
from temporalio.converter import (
    DataConverter,
    DefaultFailureConverter,
    DefaultFailureConverterWithEncodedAttributes,
    PayloadConverter,
)
from temporalio.exceptions import FailureError

# Temporal's limit on an activity failure kept for a retry (limit.mutableStateActivityFailureSize.error); it
# warns from 2 KiB: a bounded failure stays below that, a codec's overhead (about 100 bytes a level) included
SERVER_FAILURE_LIMIT = 4 * 1024
BUDGET_BYTES = 1536
MAX_CAUSES = 3  # the first causes kept; the root cause is kept as well
MESSAGE_CHARS = 600  # of the failure itself; a cause's message gets half
STACK_CHARS = 800  # of the failure itself; a cause's stack trace gets a quarter
ENCODED = "Encoded failure"  # the SDK's message of a failure whose message is in its encoded attributes
_MIN_MESSAGE_CHARS = 120
_LEFT_OUT = re.compile(r"\((\d+) causes? left out\)")

_ROOT_DEPTH = MAX_CAUSES + 2  # where the root cause is, after a stub for those left out

# how deep in a cause chain the conversion under way is (0: none under way)
_depth: contextvars.ContextVar[int] = contextvars.ContextVar("failure_depth", default=0)


class BoundedFailureConverter(DefaultFailureConverter):
    """The SDK's default failure converter, its failures bounded (module docstring)."""

    def __init__(self, *, encode_common_attributes: bool = False) -> None:
        super().__init__(encode_common_attributes=False)  # encoded here, once the failure is bounded
        self._encode = encode_common_attributes

    def to_failure(self, exception: BaseException, payload_converter: PayloadConverter, failure: Failure) -> None:
        depth = _depth.get()
        if depth > _ROOT_DEPTH:  # the root cause's own cause: only in a cycle
            return
        token = _depth.set(depth + 1)
        try:
            chain = _chain(exception) if depth == _ROOT_DEPTH - 1 else [exception]
            if len(chain) > 1:  # the causes from here to the root are left out
                failure.message = left_out(len(chain) - 1)
                _depth.set(_ROOT_DEPTH + 1)
                super().to_failure(chain[-1], payload_converter, failure.cause)
            else:
                super().to_failure(exception, payload_converter, failure)
        finally:
            _depth.reset(token)
        if depth == 0:
            if self._encode:
                bound(failure, lambda f: _encoded(f, payload_converter).ByteSize())
                failure.CopyFrom(_encoded(failure, payload_converter))
            else:
                bound(failure)


class BoundedFailureConverterWithEncodedAttributes(BoundedFailureConverter):
    """``BoundedFailureConverter`` that moves messages and stack traces into encoded attributes (so a codec
    encrypts them), as the SDK's ``DefaultFailureConverterWithEncodedAttributes`` does."""

    def __init__(self) -> None:
        super().__init__(encode_common_attributes=True)


def bounded_failures(converter: DataConverter) -> DataConverter:
    """``converter`` with its failures bounded (their messages in encoded attributes if it puts them there)."""
    encodes = issubclass(converter.failure_converter_class, DefaultFailureConverterWithEncodedAttributes)
    bounded = BoundedFailureConverterWithEncodedAttributes if encodes else BoundedFailureConverter
    return dataclasses.replace(converter, failure_converter_class=bounded)


def left_out(count: int) -> str:
    """The message of the cause that stands for ``count`` causes left out."""
    return f"({count} cause{'' if count == 1 else 's'} left out)"


def bound(failure: Failure, size: Callable[[Failure], int] = Failure.ByteSize) -> None:
    """Bound ``failure`` in place (module docstring); ``size``: what counts against ``BUDGET_BYTES``."""
    levels: list[Failure | int] = []  # each level without its cause, or how many causes were left out there
    for original in _levels(failure):
        if (stub := _LEFT_OUT.fullmatch(original.message)) and original.WhichOneof("failure_info") is None:
            levels.append(int(stub.group(1)))
        else:
            alone = Failure()
            alone.CopyFrom(original)
            alone.ClearField("cause")
            levels.append(alone)
    real = [i for i, level in enumerate(levels) if isinstance(level, Failure)]
    if len(real) > MAX_CAUSES + 2:
        middle = set(real[MAX_CAUSES + 1 : -1])
        levels = [_count(levels[i]) if i in middle else levels[i] for i in range(len(levels))]
    for depth, level in enumerate(levels):
        if isinstance(level, Failure):
            level.message = cut_middle(level.message, MESSAGE_CHARS if depth == 0 else MESSAGE_CHARS // 2)
            level.stack_trace = cut_start(level.stack_trace, STACK_CHARS if depth == 0 else STACK_CHARS // 4)

    def fits() -> bool:
        failure.CopyFrom(_linked(levels))
        return size(failure) <= BUDGET_BYTES

    reals = [level for level in levels if isinstance(level, Failure)]
    if fits():
        return
    for level in reversed(reals):
        level.stack_trace = ""
        if fits():
            return
    for level in reversed(reals):
        _drop_details(level)
        if fits():
            return
    while len(reals) > 2:  # the causes between the first and the root, the deepest first
        dropped = reals.pop(-2)
        levels = [_count(level) if level is dropped else level for level in levels]
        if fits():
            return
    top = levels[0]
    assert isinstance(top, Failure)
    message, chars = top.message, len(top.message)
    while chars > _MIN_MESSAGE_CHARS:
        chars = max(chars // 2, _MIN_MESSAGE_CHARS)
        top.message = cut_middle(message, chars)
        if fits():
            return
    if len(levels) > 1:  # a type or details that cannot be cut: the failure alone
        levels = levels[:1]
        fits()


def cut_middle(text: str, limit: int) -> str:
    """``text`` if it has at most ``limit`` characters, else its start and end around a note of what was cut."""
    if len(text) <= limit:
        return text
    note = f" [... {len(text) - limit} characters left out ...] "
    head = max(limit - len(note), 0) * 2 // 3
    tail = max(limit - len(note) - head, 0)
    return text[:head] + note + (text[len(text) - tail :] if tail else "")


def cut_start(text: str, limit: int) -> str:
    """``text`` if it has at most ``limit`` characters, else its end (a stack trace's innermost frames) from a
    line on, after a note of what was cut."""
    if len(text) <= limit:
        return text
    kept = text[len(text) - limit :]
    kept = kept[kept.find("\n") + 1 :] if "\n" in kept else kept
    return f"[... {len(text) - len(kept)} characters of outer frames left out ...]\n{kept}"


def _chain(exception: BaseException) -> list[BaseException]:
    """``exception`` and the causes the SDK converts after it (``__cause__``; for a ``FailureError`` without a
    failure of its own, else its ``__context__`` unless suppressed), each once."""
    chain, seen = [exception], {id(exception)}
    while True:
        current = chain[-1]
        if isinstance(current, FailureError):
            if current.failure:  # copied as it is: its causes are in it
                return chain
            after = current.__cause__ or (None if current.__suppress_context__ else current.__context__)
        else:
            after = current.__cause__
        if after is None or id(after) in seen:
            return chain
        chain.append(after)
        seen.add(id(after))


def _count(level: Failure | int) -> int:
    return level if isinstance(level, int) else 1


def _linked(levels: list[Failure | int]) -> Failure:
    """The failure whose causes are ``levels`` after the first; adjacent counts become one stub."""
    merged: list[Failure | int] = []
    for level in levels:
        if isinstance(level, int) and merged and isinstance(merged[-1], int):
            merged[-1] += level
        else:
            merged.append(level)
    chain = Failure()
    for depth, level in enumerate(reversed(merged)):
        if isinstance(level, int):
            outer = Failure(message=left_out(level))
        else:
            outer = Failure()
            outer.CopyFrom(level)
        if depth:
            outer.cause.CopyFrom(chain)
        chain = outer
    return chain


def _levels(failure: Failure) -> Iterator[Failure]:
    level: Failure | None = failure
    while level is not None:
        yield level
        level = level.cause if level.HasField("cause") else None


def _drop_details(failure: Failure) -> None:
    for info, details in (
        ("application_failure_info", "details"),
        ("canceled_failure_info", "details"),
        ("timeout_failure_info", "last_heartbeat_details"),
    ):
        if failure.WhichOneof("failure_info") == info:
            getattr(failure, info).ClearField(details)


def _encoded(failure: Failure, payload_converter: PayloadConverter) -> Failure:
    """A copy of ``failure`` with the message and stack trace of every level in its encoded attributes, as the
    SDK's ``DefaultFailureConverter(encode_common_attributes=True)`` writes them."""
    encoded = Failure()
    encoded.CopyFrom(failure)
    for level in _levels(encoded):
        if level.HasField("encoded_attributes") and level.message == ENCODED and not level.stack_trace:
            continue  # encoded before and never decoded (a cause of an activity's failure, in a workflow)
        attributes = {"message": level.message, "stack_trace": level.stack_trace}
        level.encoded_attributes.CopyFrom(payload_converter.to_payloads([attributes])[0])
        level.message = ENCODED
        level.stack_trace = ""
    return encoded
