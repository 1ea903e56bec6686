"""SQLAlchemy models: calls and their transaction-security data, flow runs, consents, audit."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    ForeignKey,
    Index,
    LargeBinary,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from ivr.domain.times import utcnow

from .base import Base


class Call(Base):
    """One Twilio call leg and its transaction-security data (işlem güvenliği bilgisi)."""

    __tablename__ = "calls"
    # The search lists calls newest first by this time, keyset-paginated on (time, sid).
    __table_args__ = (Index("ix_calls_time", func.coalesce(text("started_at"), text("created_at")),
                            "call_sid"),)

    call_sid: Mapped[str] = mapped_column(String(64), primary_key=True)
    account_sid: Mapped[str | None] = mapped_column(String(64))
    phone_hmac: Mapped[str | None] = mapped_column(String(64), index=True)
    phone_enc: Mapped[str | None] = mapped_column(Text)
    to_number: Mapped[str | None] = mapped_column(String(32))
    direction: Mapped[str | None] = mapped_column(String(32))
    status: Mapped[str | None] = mapped_column(String(32))
    status_seq: Mapped[int | None]
    status_at: Mapped[datetime | None]
    started_at: Mapped[datetime | None]
    answered_at: Mapped[datetime | None]
    ended_at: Mapped[datetime | None]
    duration: Mapped[int | None]
    seen_incoming: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class CallEvent(Base):
    """A status or recording callback as received, with Twilio's and our own times."""

    __tablename__ = "call_events"
    __table_args__ = (UniqueConstraint("call_sid", "dedupe_key"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    call_sid: Mapped[str] = mapped_column(String(64), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    status: Mapped[str | None] = mapped_column(String(32))
    dedupe_key: Mapped[str] = mapped_column(String(200))
    sequence_number: Mapped[int | None]
    twilio_timestamp: Mapped[datetime | None]
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    data: Mapped[dict] = mapped_column(default=dict)


class WebhookRequest(Base):
    """Every webhook request we accepted: path, idempotency token, time and outcome."""

    __tablename__ = "webhook_requests"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    path: Mapped[str] = mapped_column(String(200))
    call_sid: Mapped[str | None] = mapped_column(String(64), index=True)
    idempotency_token: Mapped[str | None] = mapped_column(String(200), unique=True)
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    outcome: Mapped[str] = mapped_column(String(64))
    status_code: Mapped[int] = mapped_column(default=200)
    response: Mapped[str | None] = mapped_column(Text)


class FlowVersion(Base):
    """A flow definition as it was, stored by content version so old calls stay replayable."""

    __tablename__ = "flow_versions"

    version: Mapped[str] = mapped_column(String(64), primary_key=True)
    flow_id: Mapped[str] = mapped_column(String(100))
    source: Mapped[str] = mapped_column(String(500))
    document: Mapped[dict]
    first_seen: Mapped[datetime] = mapped_column(default=utcnow)


class FlowRun(Base):
    """One pass of a caller through a flow: the engine state between webhooks."""

    __tablename__ = "flow_runs"
    # The dashboard's drop-off reads runs by start time; the registry, by flow version.
    __table_args__ = (UniqueConstraint("call_sid", "origin"),
                      Index("ix_flow_runs_created_at", "created_at"),
                      Index("ix_flow_runs_flow_version", "flow_version", "created_at"),
                      # The drop-off's list of hang-ups, newest first (a page at a time).
                      Index("ix_flow_runs_hangups", "created_at", "id",
                            postgresql_where=text("hangup_at IS NOT NULL")))

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    call_sid: Mapped[str] = mapped_column(String(64), index=True)
    origin: Mapped[str] = mapped_column(String(100))
    flow_id: Mapped[str] = mapped_column(String(100))
    flow_version: Mapped[str] = mapped_column(ForeignKey("flow_versions.version"))
    transfer_id: Mapped[str | None] = mapped_column(String(32))
    agent_id: Mapped[str | None] = mapped_column(String(100))
    state: Mapped[dict]
    step: Mapped[int] = mapped_column(default=0)
    ended: Mapped[bool] = mapped_column(default=False)
    hangup_at: Mapped[datetime | None]
    heard: Mapped[dict] = mapped_column(default=dict)
    notice: Mapped[dict] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class Turn(Base):
    """One step of a run: the input that came in and the TwiML we answered with."""

    __tablename__ = "flow_turns"

    run_id: Mapped[str] = mapped_column(ForeignKey("flow_runs.id"), primary_key=True)
    step: Mapped[int] = mapped_column(primary_key=True)
    input: Mapped[dict | None]
    actions: Mapped[list]
    twiml: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Recording(Base):
    """Recording metadata from the recording status callback (the audio is not fetched)."""

    __tablename__ = "recordings"

    recording_sid: Mapped[str] = mapped_column(String(64), primary_key=True)
    call_sid: Mapped[str] = mapped_column(String(64), index=True)
    status: Mapped[str | None] = mapped_column(String(32))
    duration: Mapped[int | None]
    channels: Mapped[int | None]
    source: Mapped[str | None] = mapped_column(String(64))
    track: Mapped[str | None] = mapped_column(String(32))
    start_time: Mapped[datetime | None]
    url: Mapped[str | None] = mapped_column(String(500))
    error_code: Mapped[str | None] = mapped_column(String(32))
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class Consent(Base):
    """One consent event: granted, declined, no_input or withdrawn. Never updated."""

    __tablename__ = "consents"
    __table_args__ = (Index("ix_consents_captured_at", "captured_at"),
                      # The search's decisions, and its consents without a call (few).
                      Index("ix_consents_decision", "decision", "call_sid"),
                      Index("ix_consents_loose", "captured_at", "id",
                            postgresql_where=text("call_sid IS NULL")),
                      # The registry's notice versions per flow version and language.
                      Index("ix_consents_flow_version", "flow_version", "language",
                            "notice_version"))

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    run_id: Mapped[str | None] = mapped_column(ForeignKey("flow_runs.id"), unique=True)
    call_sid: Mapped[str | None] = mapped_column(String(64), index=True)
    phone_hmac: Mapped[str | None] = mapped_column(String(64), index=True)
    phone_enc: Mapped[str | None] = mapped_column(Text)
    purpose: Mapped[str] = mapped_column(String(64))
    channels: Mapped[list]
    decision: Mapped[str] = mapped_column(String(16))
    digits: Mapped[str] = mapped_column(String(200), default="")
    language: Mapped[str | None] = mapped_column(String(8))
    notice_version: Mapped[str | None] = mapped_column(String(64))
    flow_version: Mapped[str | None] = mapped_column(String(64))
    captured_at: Mapped[datetime] = mapped_column(default=utcnow)
    agent_id: Mapped[str | None] = mapped_column(String(100))
    transfer_id: Mapped[str | None] = mapped_column(String(32))
    source: Mapped[str] = mapped_column(String(16), default="ivr")
    reason: Mapped[str | None] = mapped_column(Text)
    audio: Mapped[dict] = mapped_column(default=dict)
    idempotency_key: Mapped[str | None] = mapped_column(String(200), unique=True)


class AuditQueue(Base):
    """A leaf waiting for the sequencer: inserted with its fact, in the fact's transaction."""

    __tablename__ = "audit_queue"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(64))
    ref: Mapped[str | None] = mapped_column(String(64), index=True)
    body: Mapped[str] = mapped_column(Text)
    queued_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class AuditEntry(Base):
    """One leaf of the Merkle log, at index seq - 1; entries from before the Merkle log also
    keep their hash-chain link (prev_hash, hash)."""

    __tablename__ = "audit_log"

    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    prev_hash: Mapped[str | None] = mapped_column(String(64))
    body: Mapped[str] = mapped_column(Text)
    hash: Mapped[str | None] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(64), index=True)
    ref: Mapped[str | None] = mapped_column(String(64), index=True)
    queued_at: Mapped[datetime | None]
    integrated_at: Mapped[datetime | None]


class AuditNode(Base):
    """A complete subtree's hash, by position: leaves idx * 2**level onwards (level 0: the
    leaf hash of index idx). Kept apart from the leaves, so moved rows do not move it."""

    __tablename__ = "audit_tree"

    level: Mapped[int] = mapped_column(SmallInteger, primary_key=True, autoincrement=False)
    idx: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    hash: Mapped[bytes] = mapped_column(LargeBinary(32))


class AuditTreeHead(Base):
    """A signed checkpoint of the Merkle tree: the whole C2SP signed note, as served."""

    __tablename__ = "audit_tree_heads"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    tree_size: Mapped[int] = mapped_column(BigInteger, index=True)
    root_hash: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime]
    note: Mapped[str] = mapped_column(Text)


class AuditAnchor(Base):
    """Evidence about a signed checkpoint from outside the controller: an RFC 3161 time-stamp
    token from an authority, or a C2SP cosignature from a witness. A row is 'wanted' from
    the moment the sequencer decides the checkpoint needs it, and 'done' once the token or
    cosignature was fetched and verified (ivr/services/anchoring.py); 'skipped' when it can
    no longer be had (the witness cosigned a later checkpoint first)."""

    __tablename__ = "audit_anchors"
    __table_args__ = (UniqueConstraint("head_id", "kind", "target"),
                      Index("ix_audit_anchors_state_kind", "state", "kind", "tree_size"))

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    head_id: Mapped[int] = mapped_column(ForeignKey("audit_tree_heads.id"))
    tree_size: Mapped[int] = mapped_column(BigInteger)
    kind: Mapped[str] = mapped_column(String(16))  # 'timestamp' | 'cosignature'
    target: Mapped[str] = mapped_column(Text)  # the authority's URL, the witness's vkey
    state: Mapped[str] = mapped_column(String(8), default="wanted")
    data: Mapped[str | None] = mapped_column(Text)  # base64 DER TimeStampResp; cosig. line
    anchored_at: Mapped[datetime | None]  # the token's genTime, the cosignature's time
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    attempts: Mapped[int] = mapped_column(default=0)
    next_try_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)


class AuditCheckpoint(Base):
    """A signed statement of the hash chain's head (the log before the Merkle tree)."""

    __tablename__ = "audit_checkpoints"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    seq: Mapped[int] = mapped_column(BigInteger)
    hash: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime]
    key_id: Mapped[str] = mapped_column(String(64))
    signature: Mapped[str] = mapped_column(Text)
    body: Mapped[str] = mapped_column(Text)


class Setting(Base):
    """Small facts about this installation (for example the data key's check value)."""

    __tablename__ = "settings"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class WebSession(Base):
    """A login to the web pages, kept on the server; the cookie holds only its random token.

    Ending the row ends the session everywhere, a copied cookie included: logout ends one,
    disabling an account or rotating its secret ends all of that account's.
    """

    __tablename__ = "web_sessions"

    # SHA-256 of the cookie's token: a database reader cannot forge a cookie from it.
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    # users.id, without a foreign key: accounts are disabled, never deleted.
    user_id: Mapped[int] = mapped_column(index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(default=utcnow)
    ended_at: Mapped[datetime | None] = mapped_column(index=True)
    end_reason: Mapped[str | None] = mapped_column(String(32))
