"""What a customer's invoices hold of its service and equipment: the requests, the answers and the bookkeeping.

A piece is the support-and-orders block of one service (``service:hosting``; ``service`` for all of
them) or one piece of equipment (``equipment:bmc-1``). The customer cuts a piece when the first
invoice holds it and restores it when no invoice holds it any more; an action that failed is tried
again only when an invoice holds or releases the piece. Pure bookkeeping: ``workflows.customer``
does the cutting.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta

from pydantic import BaseModel, ConfigDict, Field

from workflows.cash import CashBook
from workflows.customer_control import CustomerControl
from workflows.digests import DIGEST_GATHERING, NoticeDesk
from workflows.models import (
    ActionTaken,
    Currency,
    EquipmentResult,
    Identifier,
    InvoiceState,
    Strict,
    customer_workflow_id,
)

MAX_ANSWERS_KEPT = 500  # answers to repeated requests, beyond the update ids Temporal remembers within one run
MAX_STORY_KEPT = 200


class HoldRequest(Strict):
    """An invoice at suspension asks its customer to hold the support-and-orders block, or its equipment."""

    idempotency_key: str = Field(min_length=1, max_length=200)
    customer_id: Identifier
    invoice_id: Identifier
    service: Identifier | None = Field(default=None, description="the service whose block to hold; None: all")
    block_service: bool = Field(default=False, description="hold the support-and-orders block")
    remote_disconnect_authorized: bool = False
    equipment_ids: list[Identifier] = Field(default_factory=list, max_length=100, description="equipment to hold")
    due_date: date
    balance_minor: int = Field(ge=0, description="what the invoice asks when it holds")
    currency: Currency


class ReleaseRequest(Strict):
    """A closed invoice gives back everything it held."""

    idempotency_key: str = Field(min_length=1, max_length=200)
    customer_id: Identifier
    invoice_id: Identifier
    state: InvoiceState = Field(description="how the invoice closed")


class PieceOutcome(Strict):
    """One piece as the customer left it after a request."""

    piece: str
    equipment_id: str | None = None
    cut: bool = Field(description="cut now")
    changed_now: bool = Field(description="this request's hold cut it, or its release restored it")
    result: EquipmentResult | None = Field(default=None, description="the reading of the piece's last action")
    error: str = Field(default="", description="why its last cut or restore failed")
    held_by: list[str] = Field(default_factory=list, description="the invoices that hold it now")


class HoldOutcome(Strict):
    """The customer's answer to a hold or a release: every piece the request named."""

    pieces: list[PieceOutcome] = Field(default_factory=list)

    def piece(self, name: str) -> PieceOutcome | None:
        """The outcome for piece ``name``, if the request named it."""
        return next((p for p in self.pieces if p.piece == name), None)


def service_piece(service: str | None) -> str:
    """The piece name of a service's support-and-orders block."""
    return f"service:{service}" if service else "service"


def equipment_piece(equipment_id: str) -> str:
    """The piece name of one piece of equipment."""
    return f"equipment:{equipment_id}"


class Piece(BaseModel):
    """One piece the customer's invoices may hold, and what was done to it."""

    model_config = ConfigDict(extra="forbid")

    name: str
    service: str | None = None
    equipment_id: str | None = None
    holders: list[str] = Field(default_factory=list, description="invoice ids, in the order they held it")
    cut: bool = False
    generation: int = Field(default=0, description="cuts started so far: part of each action's idempotency key")
    cut_for: str | None = Field(default=None, description="the invoice whose hold started the current generation")
    remote_disconnect_authorized: bool = Field(default=False, description="service block: as the cutting hold said")
    equipment_ids: list[str] = Field(default_factory=list, description="service block: as the cutting hold said")
    result: EquipmentResult | None = None
    released_by: str | None = Field(default=None, description="the invoice whose release left nobody holding it")
    changed_by: str | None = Field(default=None, description="the invoice whose hold or release made the last change")
    error: str = ""
    stuck: bool = Field(default=False, description="the last action failed: tried again at the next hold or release")
    acting: bool = Field(default=False, description="a cut or restore of it is under way")

    @property
    def pending(self) -> bool:
        """Whether the customer has to cut or restore it now."""
        return bool(self.holders) != self.cut and not self.stuck


class CustomerInvoice(BaseModel):
    """An invoice that holds something, as it said when it held (invoices tell their customer only then)."""

    model_config = ConfigDict(extra="forbid")

    invoice_id: str
    due_date: date
    balance_minor: int
    currency: str


class CustomerLedger(BaseModel):
    """Mutable state of one customer; continue-as-new carries it."""

    model_config = ConfigDict(extra="forbid")

    customer_id: str
    pieces: dict[str, Piece] = Field(default_factory=dict)
    invoices: dict[str, CustomerInvoice] = Field(default_factory=dict)
    answers: dict[str, HoldOutcome] = Field(default_factory=dict, description="idempotency key -> answer")
    on_hold: bool = Field(default=False, description="ops paused every escalation of the customer")
    control: CustomerControl = Field(default_factory=CustomerControl, description="what ops decided about the customer")
    cash: CashBook = Field(default_factory=CashBook, description="payments to the customer, their split and its credit")
    notices: NoticeDesk = Field(default_factory=NoticeDesk, description="stage notices gathered and digests sent")
    story: list[ActionTaken] = Field(default_factory=list)

    @property
    def pending(self) -> list[Piece]:
        return [p for p in self.pieces.values() if self.to_act(p)]

    def to_act(self, piece: Piece) -> bool:
        """Whether the customer has to cut or restore the piece now (not equipment ops keep out of cuts)."""
        return piece.pending and not self.cut_held_back(piece)

    def cut_held_back(self, piece: Piece) -> bool:
        """Held equipment left uncut: ops excluded the customer from automatic cuts."""
        return self.control.cuts_excluded and piece.equipment_id is not None and bool(piece.holders) and not piece.cut

    def settled(self, names: list[str]) -> bool:
        """Whether nothing is to be done, or under way, on these pieces."""
        return not any(self.to_act(self.pieces[n]) or self.pieces[n].acting for n in names)

    def take_hold(self, request: HoldRequest) -> list[str]:
        """Register the invoice's hold on the pieces it names; returns their names."""
        names: list[str] = []
        if request.block_service:
            piece = self._piece(service_piece(request.service), service=request.service)
            if not piece.holders:
                piece.remote_disconnect_authorized = request.remote_disconnect_authorized
                piece.equipment_ids = list(request.equipment_ids) if request.remote_disconnect_authorized else []
            names.append(piece.name)
        for equipment_id in request.equipment_ids if not request.block_service else []:
            names.append(self._piece(equipment_piece(equipment_id), equipment_id=equipment_id).name)
        for name in names:
            piece = self.pieces[name]
            if request.invoice_id not in piece.holders:
                piece.holders.append(request.invoice_id)
                piece.stuck = False
        self.invoices[request.invoice_id] = CustomerInvoice(
            invoice_id=request.invoice_id,
            due_date=request.due_date,
            balance_minor=request.balance_minor,
            currency=request.currency,
        )
        return names

    def drop_hold(self, request: ReleaseRequest) -> list[str]:
        """Take the invoice off every piece it holds; returns their names."""
        names = [p.name for p in self.pieces.values() if request.invoice_id in p.holders]
        for name in names:
            piece = self.pieces[name]
            piece.holders.remove(request.invoice_id)
            piece.stuck = False
            if not piece.holders:
                piece.released_by = request.invoice_id
        self.invoices.pop(request.invoice_id, None)  # closed and holding nothing: no longer the customer's concern
        return names

    def outcome(self, names: list[str], invoice_id: str) -> HoldOutcome:
        """The pieces ``names`` as they are now, as the invoice ``invoice_id`` sees them (without equipment
        left uncut for the exclusion from cuts: the invoice records no cut, and no failure, for it)."""
        pieces = [self.pieces[name] for name in names if not self.cut_held_back(self.pieces[name])]
        return HoldOutcome(
            pieces=[
                PieceOutcome(
                    piece=p.name,
                    equipment_id=p.equipment_id,
                    cut=p.cut,
                    changed_now=p.changed_by == invoice_id,
                    result=p.result,
                    error=p.error,
                    held_by=list(p.holders),
                )
                for p in pieces
            ]
        )

    def answer(self, key: str, outcome: HoldOutcome) -> HoldOutcome:
        """Keep the answer to a request under its key, so a retry after continue-as-new gets it again."""
        self.answers[key] = outcome
        for old in list(self.answers)[: -MAX_ANSWERS_KEPT or None]:
            del self.answers[old]
        return outcome

    def remember(self, at: datetime, what: str) -> None:
        """Add a line to the customer's story (the newest few hundred)."""
        self.story.append(ActionTaken(at=at, what=what))
        del self.story[:-MAX_STORY_KEPT]

    def _piece(self, name: str, *, service: str | None = None, equipment_id: str | None = None) -> Piece:
        if name not in self.pieces:
            self.pieces[name] = Piece(name=name, service=service, equipment_id=equipment_id)
        return self.pieces[name]


class CustomerWorkflowInput(BaseModel):
    """Start (or continue-as-new) argument of the customer workflow."""

    customer_id: Identifier
    carried: CustomerLedger | None = None
    history_limit: int = Field(default=10_000, ge=50, description="continue-as-new beyond this many events")
    digest_gathering: timedelta = Field(
        default=DIGEST_GATHERING, ge=timedelta(0), le=timedelta(hours=1),
        description="how long the first stage notice waits for others of the customer before they go out",
    )

    @property
    def workflow_id(self) -> str:
        return customer_workflow_id(self.customer_id)
