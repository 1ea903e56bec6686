"""Running a destruction: plan, delete recordings at Twilio, then apply in short batches."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from ivr.adapters.twilio_recordings import TwilioAccount, delete_recordings
from ivr.domain.kvkk.policy import Policy

from . import retention


def destroy(session: Session, policy: Policy, account: TwilioAccount, *, now: datetime,
            dry_run: bool, reason: str, kind: str, subject: str | None = None,
            ref: str | None = None, audit: dict | None = None, batch: int | None = None) \
        -> tuple[retention.Plan, retention.Outcome | None]:
    """Plan what is due and (unless a dry run) destroy it; returns the plan and outcome.

    Twilio is asked outside any transaction (a slow API must not hold the database's write
    lock); the plan is then made again (if Twilio was asked) and applied in batches of at
    most `batch` rows (retention.BATCH), each its own transaction, the run's audit entry in
    the last.
    """
    if not dry_run:
        with session.begin():
            retention.finish_interrupted(session, now)
    with session.begin():
        first = retention.plan(session, policy, now, subject)
    if dry_run:
        return first, None
    # With delete_at_twilio, metadata goes only once its recording is gone at Twilio.
    gone: set[str] | None = set() if policy.delete_at_twilio else None
    failures: dict[str, str] = {}
    p = first
    if gone is not None and first.recordings:
        at_twilio = [r for r in first.recordings if r.startswith("RE")]
        # Metadata without a real recording SID has nothing at Twilio to delete.
        gone |= {r for r in first.recordings if not r.startswith("RE")}
        if at_twilio:
            deleted, failures = delete_recordings(account, at_twilio)
            gone |= deleted
            # Rows may have changed while Twilio answered: plan again.
            with session.begin():
                p = retention.plan(session, policy, now, subject)
    # What was due stays due (a later event only ends a grant sooner), so the plan holds
    # while it is applied in short transactions of `batch` rows each.
    outcome = retention.apply(session, p, now, reason=reason, kind=kind, ref=ref,
                              gone_at_twilio=gone, failures=failures, audit=audit,
                              batch=batch or retention.BATCH, pace=retention.PACE)
    return p, outcome
