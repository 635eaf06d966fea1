"""Domain names in wire form.

secondns keeps every name as uncompressed wire bytes (RFC 1035 3.1): a run of
length-prefixed labels ending in the root label b"\\x00".  Zone keys are the
ASCII-lowercased form (RFC 4343: DNS comparisons are case-insensitive for
ASCII only), so a lookup is one ``bytes.lower()`` and one dict probe; nothing
on the query path builds name objects.
"""

from __future__ import annotations

from collections.abc import Iterator

from secondns.errors import NameError_, WireError

ROOT = b"\x00"
MAX_NAME = 255  # RFC 1035 2.3.4
MAX_LABEL = 63
WILDCARD_LABEL = b"\x01*"

# Characters that must be escaped in presentation form (RFC 1035 5.1).
_SPECIAL = frozenset(b'.\\"();@$ ')
# Printable characters that need no escape: a label made only of these prints as is.
_LABEL_PLAIN = bytes(c for c in range(0x21, 0x7F) if c not in _SPECIAL)


def label_offsets(name: bytes) -> list[int]:
    """Offsets of every label start, the root label included last."""
    offsets = []
    pos = 0
    end = len(name)
    while pos < end:
        offsets.append(pos)
        length = name[pos]
        if length == 0:
            return offsets
        pos += length + 1
    raise NameError_("name lacks the root label")


def label_count(name: bytes) -> int:
    """Number of labels, not counting the root."""
    return len(label_offsets(name)) - 1


def parent(name: bytes) -> bytes:
    """The name with its first label removed; the root is its own parent."""
    if name == ROOT:
        return ROOT
    return name[name[0] + 1:]


def is_subdomain(name: bytes, origin: bytes) -> bool:
    """True when *name* equals or lies below *origin* (both lowercased).

    A plain ``endswith`` is not enough: a binary label may contain bytes that
    look like a suffix, so the suffix must start on a label boundary.
    """
    if not name.endswith(origin):
        return False
    start = len(name) - len(origin)
    if start == 0:
        return True
    pos = 0
    while pos < start:
        pos += name[pos] + 1
    return pos == start


def ancestors(name: bytes, origin: bytes) -> Iterator[bytes]:
    """Names strictly between *origin* and *name*, then *name*, top-down.

    For ``a.b.example.`` under ``example.`` this yields ``b.example.`` and
    ``a.b.example.``: the order RFC 1034 4.3.2 step 3b walks to find cuts.
    """
    offsets = label_offsets(name)
    stop = len(name) - len(origin)
    for off in reversed(offsets):
        if off < stop:
            yield name[off:]


def relativize_depth(name: bytes, origin: bytes) -> int:
    """How many labels *name* has below *origin*."""
    return label_count(name) - label_count(origin)


def from_text(text: str, origin: bytes | None = None) -> bytes:
    """Presentation form to wire form, case preserved.

    A name without a trailing dot is relative to *origin*; ``@`` is the
    origin itself.  Escapes ``\\X`` and ``\\DDD`` follow RFC 1035 5.1.
    """
    if text == "@":
        if origin is None:
            raise NameError_("'@' used with no origin")
        return origin
    if text == ".":
        return ROOT
    if "\\" not in text:
        absolute = text.endswith(".")
        parts = text[:-1].split(".") if absolute else text.split(".")
        labels = [p.encode("utf-8") for p in parts]
    else:
        labels = _split_escaped(text)
        absolute = len(labels) > 1 and labels[-1] == b""
        if absolute:
            labels.pop()
    out = bytearray()
    for label in labels:
        if not label:
            raise NameError_(f"empty label in {text!r}")
        if len(label) > MAX_LABEL:
            raise NameError_(f"label longer than 63 octets in {text!r}")
        out.append(len(label))
        out += label
    if absolute:
        out.append(0)
    else:
        if origin is None:
            raise NameError_(f"relative name {text!r} with no origin")
        out += origin
    if len(out) > MAX_NAME:
        raise NameError_(f"name longer than 255 octets: {text!r}")
    return bytes(out)


def _split_escaped(text: str) -> list[bytes]:
    labels: list[bytes] = []
    cur = bytearray()
    raw = text.encode("utf-8")
    i = 0
    n = len(raw)
    while i < n:
        c = raw[i]
        if c == 0x5C:  # backslash
            if i + 4 <= n and raw[i + 1:i + 4].isdigit():
                value = int(raw[i + 1:i + 4])
                if value > 255:
                    raise NameError_(f"bad escape in {text!r}")
                cur.append(value)
                i += 4
                continue
            if i + 1 >= n:
                raise NameError_(f"dangling escape in {text!r}")
            cur.append(raw[i + 1])
            i += 2
            continue
        if c == 0x2E:  # dot
            labels.append(bytes(cur))
            cur = bytearray()
        else:
            cur.append(c)
        i += 1
    labels.append(bytes(cur))
    return labels


def to_text(name: bytes) -> str:
    """Wire form to absolute presentation form with RFC 1035 escapes."""
    if name == ROOT:
        return "."
    parts = []
    pos = 0
    while True:
        length = name[pos]
        if length == 0:
            break
        label = name[pos + 1:pos + 1 + length]
        parts.append(label_text(label))
        pos += length + 1
    return ".".join(parts) + "."


def label_text(label: bytes) -> str:
    """One label in presentation form, with the escapes of RFC 1035 5.1."""
    if not label.translate(None, _LABEL_PLAIN):
        return label.decode("ascii")
    out = []
    for c in label:
        if c in _SPECIAL:
            out.append("\\" + chr(c))
        elif 0x21 <= c <= 0x7E:
            out.append(chr(c))
        else:
            out.append(f"\\{c:03d}")
    return "".join(out)


def read_name(msg: bytes, offset: int) -> tuple[bytes, int]:
    """Decode a possibly compressed name at *offset* (RFC 1035 4.1.4).

    Returns the uncompressed wire name (case preserved) and the offset just
    past the name in the message.  Pointers must point backwards, which also
    rules out loops.
    """
    out = bytearray()
    end = -1
    pos = offset
    limit = len(msg)
    while True:
        if pos >= limit:
            raise WireError("name runs past the end of the message")
        length = msg[pos]
        if length < 64:
            if length == 0:
                out.append(0)
                if end < 0:
                    end = pos + 1
                break
            nxt = pos + 1 + length
            if nxt > limit:
                raise WireError("label runs past the end of the message")
            out += msg[pos:nxt]
            if len(out) > MAX_NAME - 1:
                raise WireError("name longer than 255 octets")
            pos = nxt
        elif length >= 0xC0:
            if pos + 1 >= limit:
                raise WireError("truncated compression pointer")
            target = ((length & 0x3F) << 8) | msg[pos + 1]
            if end < 0:
                end = pos + 2
            if target >= pos:
                raise WireError("compression pointer does not point backwards")
            pos = target
        else:
            raise WireError("unsupported label type")
    return bytes(out), end


def canonical_key(name: bytes) -> tuple[bytes, ...]:
    """Sort key for RFC 4034 6.1 canonical order (labels compared right to left)."""
    offsets = label_offsets(name)
    return tuple(name[o + 1:o + 1 + name[o]].lower() for o in reversed(offsets[:-1]))
