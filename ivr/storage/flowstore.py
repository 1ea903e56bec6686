"""The flows this app serves, loaded at start-up, and their stored versions."""

from __future__ import annotations

from flask import Flask, current_app
from sqlalchemy.orm import Session

from ..domain.flow import Flow, load_flow, load_flows
from ..domain.flow.loader import build_flow
from .models import FlowVersion


class FlowRegistry:
    """The incoming-call flow plus every flow in the flows folder, by id and version."""

    def __init__(self, default: Flow, others: dict[str, Flow]):
        self.default = default
        self.by_id = {**others, default.id: default}
        self._by_version = {f.version: f for f in self.by_id.values()}
        # Versions found committed in the database (flow_versions rows are never deleted),
        # so an incoming call does not look its flow version up again.
        self._stored: set[str] = set()

    def get(self, flow_id: str | None) -> Flow | None:
        """A flow by id; the incoming-call flow when no id is given."""
        return self.default if not flow_id else self.by_id.get(flow_id)

    def in_memory(self, version: str) -> Flow | None:
        """A flow version this process has loaded (no database needed)."""
        return self._by_version.get(version)

    def version(self, session: Session, version: str) -> Flow:
        """The flow exactly as it was at `version`, from memory or the database."""
        flow = self._by_version.get(version)
        if flow is None:
            row = session.get(FlowVersion, version)
            if row is None:
                raise LookupError(f"flow version {version} is not stored")
            flow = build_flow(row.document, f"{row.source}@{version[:12]}")
            self._by_version[version] = flow
        return flow

    def ensure_stored(self, session: Session, flow: Flow) -> None:
        """Store this flow version if the database does not have it yet."""
        if flow.version in self._stored:
            return
        added = session.info.setdefault("ivr_flow_versions_added", set())
        if session.get(FlowVersion, flow.version) is None:
            session.add(FlowVersion(version=flow.version, flow_id=flow.id,
                                    source=flow.source, document=flow.document))
            session.flush()
            added.add(flow.version)
        elif flow.version not in added:
            # Found, and not just added by this (maybe rolled-back) session: committed.
            self._stored.add(flow.version)


def flows() -> FlowRegistry:
    """The current app's flows."""
    return current_app.extensions["ivr_flows"]


def init_app(app: Flask) -> None:
    """Load and validate every flow; an invalid one raises InvalidFlow and stops start-up."""
    default = load_flow(app.config["FLOW"])
    others = load_flows(app.config["FLOWS_DIR"]) if app.config.get("FLOWS_DIR") else {}
    others = {k: v for k, v in others.items() if k != default.id}
    app.extensions["ivr_flows"] = FlowRegistry(default, others)
