"""An IVR voice-flow engine for KVKK notices and marketing consent, driven by Twilio.

The layers, each importing only those below it (enforced by `lint-imports`):
cli, web → services → storage, adapters → audit → domain.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flask import Flask


def create_app(test_config: dict | None = None) -> Flask:
    """Build the app (ivr/web/app.py): the public factory, `ivr.create_app`."""
    # Importing any ivr module runs this file first: the web stack loads only for an app.
    from .web.app import create_app as build  # late import: keeps `import ivr.domain` light

    return build(test_config)
