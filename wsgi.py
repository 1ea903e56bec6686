"""WSGI entry point: `gunicorn wsgi:app`. A bad flow or setting stops start-up in one line."""

import sys

from ivr import create_app
from ivr.domain.config import ConfigError
from ivr.domain.flow import InvalidFlow
from ivr.storage.embedded_pg import EmbeddedServerError

try:
    app = create_app()
except (InvalidFlow, ConfigError, EmbeddedServerError) as e:
    print(f"ivr: cannot start: {e}", file=sys.stderr)
    sys.exit(1)
