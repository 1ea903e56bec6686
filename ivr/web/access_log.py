"""gunicorn's access log (IVR_ACCESS_LOG) with every field escaped: a request path or a
header that holds a line break, a NUL byte or a terminal escape is written as `\\xNN`, so
one request is always one line and no line can be forged (gunicorn.conf.py names this
class as its `logger_class`)."""

from __future__ import annotations

from gunicorn.glogging import Logger

from ivr.domain.redact import escape_controls


class AccessLogger(Logger):
    """gunicorn's Logger, whose access-log atoms are escaped by `escape_controls`."""

    def atoms(self, resp, req, environ, request_time):
        """gunicorn's atoms (every %(x)s of access_log_format), each text escaped."""
        return {k: escape_controls(v) if isinstance(v, str) else v
                for k, v in super().atoms(resp, req, environ, request_time).items()}
