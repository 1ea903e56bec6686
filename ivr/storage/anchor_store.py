"""The checkpoints' anchors in the database (audit_anchors): time-stamp tokens and witness
cosignatures, wanted or done. Reads work on a Session or a Connection alike; the scheduling
and the network live in ivr/services/anchoring.py."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import delete, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import SQLAlchemyError

from .models import AuditAnchor, AuditTreeHead, Setting

TIMESTAMP = "timestamp"
COSIGNATURE = "cosignature"
WANTED, DONE, SKIPPED = "wanted", "done", "skipped"
REFUSED_SETTING = "audit.checkpoint_refused"


def want(conn, head: AuditTreeHead, kind: str, targets: list[str], now: datetime) -> None:
    """Ask for these anchors of a checkpoint (once each, whoever asks first: the sequencer
    and an anchoring pass may ask at the same time)."""
    have = set(conn.scalars(select(AuditAnchor.target).where(
        AuditAnchor.head_id == head.id, AuditAnchor.kind == kind)))
    rows = [{"head_id": head.id, "tree_size": head.tree_size, "kind": kind, "target": t,
             "state": WANTED, "created_at": now, "attempts": 0} for t in targets
            if t not in have]
    if rows:
        conn.execute(insert(AuditAnchor).on_conflict_do_nothing(), rows)


def has_kind(conn, head_id: int, kind: str) -> bool:
    """Whether the checkpoint has anchors of this kind, wanted or done."""
    return conn.scalar(select(AuditAnchor.id).where(AuditAnchor.head_id == head_id,
                                                    AuditAnchor.kind == kind).limit(1)) is not None


def last_stamped_at(conn) -> datetime | None:
    """The time of the newest checkpoint that time-stamps were asked for."""
    return conn.scalar(select(func.max(AuditTreeHead.at)).join(
        AuditAnchor, AuditAnchor.head_id == AuditTreeHead.id).where(
        AuditAnchor.kind == TIMESTAMP))


@dataclass(frozen=True)
class Wanted:
    """A wanted anchor and what its request needs of its checkpoint."""

    id: int
    tree_size: int
    attempts: int
    next_try_at: datetime | None
    head_id: int
    note: str
    at: datetime


PAGE = 50


def wanted(conn, kind: str, target: str, limit: int | None = None) -> list[Wanted]:
    """The wanted anchors of one target, oldest checkpoint first (a page of them)."""
    q = (select(AuditAnchor.id, AuditAnchor.tree_size, AuditAnchor.attempts,
                AuditAnchor.next_try_at, AuditTreeHead.id, AuditTreeHead.note, AuditTreeHead.at)
         .join(AuditTreeHead, AuditTreeHead.id == AuditAnchor.head_id)
         .where(AuditAnchor.kind == kind, AuditAnchor.target == target,
                AuditAnchor.state == WANTED)
         .order_by(AuditAnchor.tree_size, AuditAnchor.id).limit(limit or PAGE))
    return [Wanted(*r) for r in conn.execute(q)]


def settle(conn, anchor_id: int, **values) -> None:
    """Record what became of one anchor (state, data, anchored_at, attempts, errors)."""
    conn.execute(update(AuditAnchor).where(AuditAnchor.id == anchor_id).values(**values))


def done_size(conn, kind: str, target: str) -> int:
    """The largest tree size this target has anchored (0 if none)."""
    return conn.scalar(select(func.coalesce(func.max(AuditAnchor.tree_size), 0)).where(
        AuditAnchor.kind == kind, AuditAnchor.target == target, AuditAnchor.state == DONE))


def cosignature_lines(conn, head_id: int) -> list[str]:
    """The cosignature lines collected for a checkpoint."""
    return list(conn.scalars(select(AuditAnchor.data).where(
        AuditAnchor.head_id == head_id, AuditAnchor.kind == COSIGNATURE,
        AuditAnchor.state == DONE).order_by(AuditAnchor.id)))


def done(conn, kind: str, min_size: int = 0) -> list[tuple[AuditAnchor, AuditTreeHead]]:
    """Every done anchor of a kind (on checkpoints of at least `min_size` leaves) with its
    checkpoint, oldest checkpoint first."""
    q = (select(AuditAnchor, AuditTreeHead).join(AuditTreeHead,
                                                 AuditTreeHead.id == AuditAnchor.head_id)
         .where(AuditAnchor.kind == kind, AuditAnchor.state == DONE,
                AuditAnchor.tree_size >= min_size)
         .order_by(AuditAnchor.tree_size, AuditAnchor.id))
    return [(r[0], r[1]) for r in conn.execute(q)]


def refused(conn) -> str | None:
    """Why the sequencer refuses to sign, if it does."""
    return conn.scalar(select(Setting.value).where(Setting.name == REFUSED_SETTING))


def set_refused(conn, reason: str | None) -> None:
    """Record (or clear, with None) the sequencer's refusal to sign."""
    current = refused(conn)
    if reason is None:
        if current is not None:
            conn.execute(delete(Setting).where(Setting.name == REFUSED_SETTING))
    elif current is None:
        conn.execute(insert(Setting).values(name=REFUSED_SETTING, value=reason))
    elif current != reason:
        conn.execute(update(Setting).where(Setting.name == REFUSED_SETTING).values(value=reason))


@dataclass
class Pending:
    """Anchors of one kind still wanted."""

    count: int = 0
    oldest: datetime | None = None
    failing: int = 0
    last_error: str | None = None


@dataclass
class Status:
    """What /readyz and /metrics report about anchoring."""

    pending: dict[str, Pending] = field(default_factory=dict)
    refused: str | None = None
    readable: bool = True


def status(engine) -> Status:
    """The anchors still wanted, per kind, and the sequencer's refusal (never raises)."""
    out = Status(pending={TIMESTAMP: Pending(), COSIGNATURE: Pending()})
    try:
        with engine.connect() as conn:
            rows = conn.execute(select(
                AuditAnchor.kind, func.count(), func.min(AuditAnchor.created_at),
                func.count().filter(AuditAnchor.attempts > 0))
                .where(AuditAnchor.state == WANTED).group_by(AuditAnchor.kind)).all()
            for kind, n, oldest, failing in rows:
                out.pending[kind] = Pending(n, oldest, failing)
            for kind, p in out.pending.items():
                if p.failing:
                    p.last_error = conn.scalar(
                        select(AuditAnchor.last_error).where(
                            AuditAnchor.kind == kind, AuditAnchor.state == WANTED,
                            AuditAnchor.attempts > 0)
                        .order_by(AuditAnchor.tree_size).limit(1))
            out.refused = refused(conn)
    except SQLAlchemyError:
        out.readable = False
    return out
