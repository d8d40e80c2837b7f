"""The small protocol every equipment adapter follows, and the errors adapters raise.

Each action is idempotent: it reads the state first, acts only if the equipment is not already
in the wanted state, then reads the state back and fails unless it is the wanted one.

A suspend hands the state it read before cutting (each port's ifAdminStatus, the system's
PowerState, ...) to ``remember`` before it changes anything; the caller keeps it durably, and
a restore is given it back as ``before`` and puts back only what the cut changed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from workflows.models import EquipmentRequest


@dataclass(frozen=True)
class Reading:
    """The outcome of an action: whether it changed anything, and the state read back afterwards."""

    changed: bool
    state: str


StateBeforeCut = dict[str, str]
"""What a cut may change, as read just before it: ``{"12": "up", "13": "down"}``, ``{"PowerState": "On"}``."""

Remember = Callable[[StateBeforeCut], Awaitable[None]]


async def not_remembered(state: StateBeforeCut) -> None:
    """A ``remember`` that keeps nothing (a suspend outside the activities)."""


class EquipmentAdapter(Protocol):
    """Cut, restore and read one piece of equipment."""

    async def suspend(self, request: EquipmentRequest, remember: Remember = not_remembered) -> Reading:
        """Cut the equipment (power off, ports down, ...) unless it is already cut; ``remember`` the state
        read before, ahead of any change."""
        ...

    async def restore(self, request: EquipmentRequest, before: StateBeforeCut | None = None) -> Reading:
        """Put back what the cut changed, as ``before`` says (without it: bring everything back)."""
        ...

    async def status(self) -> str:
        """The state read from the equipment now."""
        ...


class EquipmentError(Exception):
    """The equipment could not be acted on; ``retryable`` says whether trying again could help."""

    retryable = True


class EquipmentUnreachable(EquipmentError):
    """No answer, or a transient failure (timeouts, connection errors, 5xx)."""


class EquipmentStateUnconfirmed(EquipmentError):
    """The command was taken, but the state read back did not reach the wanted one in time."""


class EquipmentAuthFailed(EquipmentError):
    """The equipment refused the credentials; not retried, so a BMC does not lock the account."""

    retryable = False


class EquipmentMisconfigured(EquipmentError):
    """The registry entry does not fit the equipment (missing secret, no such port or system, bad TLS trust)."""

    retryable = False
