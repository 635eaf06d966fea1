"""One exception root, subclasses named for the condition (as dnspython does)."""

from __future__ import annotations


class SecondnsError(Exception):
    """Root of every error secondns raises on purpose."""


class NameError_(SecondnsError):
    """A domain name in text or wire form is malformed."""


class WireError(SecondnsError):
    """A DNS message or record could not be decoded."""


class ZoneError(SecondnsError):
    """Zone data is inconsistent (no SOA, records outside the origin, ...)."""


class ZoneFileError(ZoneError):
    """A zone file could not be parsed; carries file and line."""

    def __init__(self, message: str, path: str = "", line: int = 0) -> None:
        self.path = path
        self.line = line
        place = f"{path}:{line}" if path and line else path or (f"line {line}" if line else "")
        where = f"{place}: " if place else ""
        super().__init__(f"{where}{message}")


class ConfigError(SecondnsError):
    """The configuration is invalid; the message lists every problem found."""


class TransferError(SecondnsError):
    """A zone transfer failed; the served zone is left untouched."""


class TransientError(TransferError):
    """A failure that may clear within seconds (a primary's quota, a timeout, a refused
    connection): retried after a short back-off instead of waiting all of RETRY."""


class StorageError(SecondnsError):
    """A zone copy on disk is missing, corrupt or could not be written."""


class ResponseMismatch(TransferError):
    """A reply whose ID does not match our query: possibly spoofed (RFC 5452), so ignored."""
