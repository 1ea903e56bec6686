"""The pure flow engine: YAML flow files, their validation, and the call state machine."""

from .loader import InvalidFlow, load_flow, load_flows
from .model import Flow, Node, Option

__all__ = ["Flow", "InvalidFlow", "Node", "Option", "load_flow", "load_flows"]
