"""Logging: one line per event, to stderr, journald-friendly.

Under systemd (JOURNAL_STREAM is set) the journal stamps each line itself, so
the timestamp is left out to avoid printing it twice.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys

# Zone events are logged as "zone NAME.: ..." (or "reload: zone NAME. added"); JSON lines carry NAME.
_ZONE_IN_MESSAGE = re.compile(r"\bzone (\S*\.)(?=[:\s]|$)")


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log shippers."""

    def format(self, record: logging.LogRecord) -> str:
        msg = record.getMessage()
        entry = {"ts": round(record.created, 3), "level": record.levelname.lower(),
                 "logger": record.name, "msg": msg}
        if zone := _ZONE_IN_MESSAGE.search(msg):
            entry["zone"] = zone.group(1)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def setup_logging(level: str = "info", fmt: str = "text") -> None:
    """Configure the root logger once for the process."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    elif os.environ.get("JOURNAL_STREAM"):
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
