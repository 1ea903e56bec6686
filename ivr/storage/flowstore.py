"""The flows this app serves, loaded at start-up, and their stored versions."""

from __future__ import annotations

from flask import Flask
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from ivr.domain.flow import Flow, load_flow, load_flows
from ivr.domain.flow.loader import build_flow

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

    def load(self, engine: Engine, version: str) -> Flow:
        """`version` with a session of its own (a run older than this process's flows)."""
        if version in self._by_version:
            return self._by_version[version]
        with Session(engine) as session:
            return self.version(session, version)

    def row_to_store(self, flow: Flow) -> dict | None:
        """The flow_versions row a run of `flow` must make sure of, or None when it is
        known to be stored (ivr/storage/sql/webhook_functions.sql stores it once)."""
        if flow.version in self._stored:
            return None
        return {"version": flow.version, "flow_id": flow.id, "source": flow.source,
                "document": flow.document}

    def stored(self, flow: Flow) -> None:
        """A committed run uses `flow`: its version is stored from now on."""
        self._stored.add(flow.version)


class StoredFlows:
    """Flow versions read from the database alone: a report made without the app's flows."""

    def __init__(self) -> None:
        self._by_version: dict[str, Flow] = {}

    def version(self, session: Session, version: str) -> Flow:
        """The flow exactly as it was at `version`, from the database."""
        flow = self._by_version.get(version)
        if flow is None:
            row = session.get(FlowVersion, version)
            if row is None:
                raise LookupError(f"flow version {version} is not stored")
            flow = self._by_version[version] = build_flow(
                row.document, f"{row.source}@{version[:12]}")
        return flow


def flows_of(app: Flask) -> FlowRegistry:
    """The app's flows (views and commands: ivr.web.current.flows)."""
    return app.extensions["ivr_flows"]


def init_app(app: Flask) -> None:
    """Load and validate every flow; an invalid one raises InvalidFlow and stops start-up."""
    default = load_flow(app.config["FLOW"])
    others = load_flows(app.config["FLOWS_DIR"]) if app.config.get("FLOWS_DIR") else {}
    others = {k: v for k, v in others.items() if k != default.id}
    app.extensions["ivr_flows"] = FlowRegistry(default, others)
