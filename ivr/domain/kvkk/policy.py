"""The retention policy: a YAML file of periods per data category, checked on load."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import jsonschema
import yaml

MIN_LOG_DAYS = 1095  # the deletion regulation: destruction records are kept 3 years or more


class PolicyError(Exception):
    """The retention file cannot be used."""


def _days(**extra: object) -> dict[str, object]:
    return {"type": "integer", "minimum": 1, "maximum": 36500, **extra}


def _category(required: str, **more: object) -> dict[str, object]:
    return {"type": "object", "additionalProperties": False,
            "required": [required, "erasable_on_request"],
            "properties": {required: _days(), "erasable_on_request": {"type": "boolean"},
                           **more}}


SCHEMA: dict[str, object] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["categories", "destruction_log"],
    "properties": {
        "categories": {
            "type": "object", "additionalProperties": False,
            "required": ["transaction_security", "recording_metadata", "consent_records",
                         "webhook_logs", "iys_batch_files", "subject_requests"],
            "properties": {
                "transaction_security": _category("retention_days"),
                "recording_metadata": _category("retention_days",
                                                delete_at_twilio={"type": "boolean"}),
                "consent_records": _category("proof_days"),
                "webhook_logs": _category("retention_days"),
                "iys_batch_files": _category("retention_days"),
                "subject_requests": _category("retention_days_after_close"),
            },
        },
        "destruction_log": {
            "type": "object", "additionalProperties": False, "required": ["keep_days"],
            "properties": {"keep_days": _days(minimum=MIN_LOG_DAYS)},
        },
    },
}


@dataclass(frozen=True)
class Policy:
    """Retention periods, ready to use."""

    calls: timedelta
    recordings: timedelta
    delete_at_twilio: bool
    consent_proof: timedelta
    webhook_logs: timedelta
    iys_files: timedelta
    subject_requests: timedelta
    destruction_log: timedelta
    erasable: dict[str, bool]  # per category: erased when the data subject asks
    document: dict[str, Any]  # the checked document (SCHEMA)

    def describe(self) -> dict[str, int]:
        """The periods in days, per category, for reports."""
        c = self.document["categories"]
        return {
            "transaction_security": c["transaction_security"]["retention_days"],
            "recording_metadata": c["recording_metadata"]["retention_days"],
            "consent_records": c["consent_records"]["proof_days"],
            "webhook_logs": c["webhook_logs"]["retention_days"],
            "iys_batch_files": c["iys_batch_files"]["retention_days"],
            "subject_requests": c["subject_requests"]["retention_days_after_close"],
            "destruction_log": self.document["destruction_log"]["keep_days"],
        }


def from_document(doc: Any, source: str = "retention policy") -> Policy:
    """Check a parsed policy (any YAML value) and build it."""
    errors = sorted(jsonschema.Draft202012Validator(SCHEMA).iter_errors(doc),
                    key=lambda e: list(e.absolute_path))
    if errors:
        err = errors[0]
        where = "/".join(str(p) for p in err.absolute_path) or "(top level)"
        msg = err.message
        if list(err.absolute_path) == ["destruction_log", "keep_days"] and \
                err.validator == "minimum":
            msg = (f"{err.instance} is too short: destruction records are kept at least "
                   f"{MIN_LOG_DAYS} days (3 years)")
        raise PolicyError(f"{source}: {where}: {msg}")
    c = doc["categories"]
    d = timedelta
    return Policy(
        calls=d(days=c["transaction_security"]["retention_days"]),
        recordings=d(days=c["recording_metadata"]["retention_days"]),
        delete_at_twilio=c["recording_metadata"].get("delete_at_twilio", True),
        consent_proof=d(days=c["consent_records"]["proof_days"]),
        webhook_logs=d(days=c["webhook_logs"]["retention_days"]),
        iys_files=d(days=c["iys_batch_files"]["retention_days"]),
        subject_requests=d(days=c["subject_requests"]["retention_days_after_close"]),
        destruction_log=d(days=doc["destruction_log"]["keep_days"]),
        erasable={k: v["erasable_on_request"] for k, v in c.items()},
        document=doc,
    )


def load_policy(path: str | Path) -> Policy:
    """Read and check the retention file."""
    try:
        doc = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as e:
        raise PolicyError(f"cannot read the retention policy {path}: {e.strerror}") from None
    except (yaml.YAMLError, ValueError) as e:
        raise PolicyError(f"{path}: YAML error: {str(e).splitlines()[0]}") from None
    return from_document(doc, str(path))
