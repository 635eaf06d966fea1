"""Zone transfer over TLS (XoT, RFC 9103) and DNS over TLS (RFC 7858): contexts and checks.

Twisted's only TLS stack is pyOpenSSL, with service_identity for checking a
certificate's names (docs/architecture.md "Dependencies").  Both are imported
on first use, inside the functions below, so a configuration without TLS does
not pay their import time and memory.

Server side: each ``server.tls.listen`` address is a TCP listener of the usual
``TCPFactory`` inside TLS, so queries, allow-transfer ACLs and TSIG work there
exactly as on plain TCP.  Client side: a primary given as ``TlsPrimary`` gets
its SOA checks and transfers over TLS, a connection each; a handshake that
fails is a ``TlsFailed`` naming why (certificate, name, handshake, alpn),
counted per primary for /metrics.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from secondns.config import PrimaryTls, TlsServer
from secondns.errors import TransientError
from secondns.wire import REFUSED, FormatError, error_response, parse_query

log = logging.getLogger("secondns.transfer")

ALPN = b"dot"  # RFC 9103 7.1: the "dot" ALPN token MUST be selected for XoT
REASONS = ("certificate", "name", "handshake", "alpn")


class TlsFailed(TransientError):
    """TLS with a primary failed before any DNS message: the next primary is tried, and an
    IXFR is not retried as AXFR (the same handshake would fail again)."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason  # one of REASONS, the metric's label


# --- certificates and keys (checked while the configuration is read) -------


def _pem_certificates(path: Path) -> list[Any]:
    from cryptography import x509

    return x509.load_pem_x509_certificates(path.read_bytes())


def check_ca_file(path: Path) -> str | None:
    """Why *path* cannot serve as a CA file (PEM certificates), or None."""
    try:
        _pem_certificates(path)
    except OSError as exc:
        return f"cannot read {str(path)!r}: {exc.strerror}"
    except ValueError:
        return f"{str(path)!r} holds no PEM certificate"
    return None


def check_server_files(certificate: Path, key: Path) -> tuple[str, str] | None:
    """(key in the config, message) when the certificate, the key or the pair is unusable."""
    try:
        _server_material(certificate, key)
    except _BadFile as exc:
        return exc.which, str(exc)
    return None


class _BadFile(ValueError):
    def __init__(self, which: str, message: str) -> None:
        super().__init__(message)
        self.which = which


def _server_material(certificate: Path, key: Path) -> tuple[Any, Any, list[Any]]:
    """The key, the certificate and its chain (cryptography objects), matched to each other."""
    from cryptography.hazmat.primitives import serialization
    from OpenSSL import SSL

    try:
        chain = _pem_certificates(certificate)
    except OSError as exc:
        raise _BadFile("certificate", f"cannot read {str(certificate)!r}: {exc.strerror}")
    except ValueError:
        raise _BadFile("certificate", f"{str(certificate)!r} holds no PEM certificate")
    try:
        private = serialization.load_pem_private_key(key.read_bytes(), password=None)
    except OSError as exc:
        raise _BadFile("key", f"cannot read {str(key)!r}: {exc.strerror}")
    except TypeError:
        raise _BadFile("key", f"{str(key)!r} is encrypted; give the key without a passphrase")
    except Exception:
        raise _BadFile("key", f"{str(key)!r} holds no PEM private key")
    context = SSL.Context(SSL.TLS_METHOD)
    try:
        context.use_certificate(chain[0])
        context.use_privatekey(private)  # type: ignore[arg-type]
        context.check_privatekey()
    except SSL.Error:
        raise _BadFile("key", f"{str(key)!r} is not the private key of the certificate in "
                              f"{str(certificate)!r}")
    return private, chain[0], chain[1:]


def server_options(config: TlsServer) -> Any:
    """RFC 9103 7.1 and 7.2: TLS 1.3 or later, ALPN "dot" offered to clients that ask."""
    from twisted.internet.ssl import CertificateOptions, TLSVersion

    pkey, cert, chain = _server_material(config.certificate, config.key)
    return CertificateOptions(privateKey=pkey, certificate=cert, extraCertChain=chain,
                              raiseMinimumTo=TLSVersion.TLSv1_3, acceptableProtocols=[ALPN])


def listen(reactor: Any, config: TlsServer, make_factory: Callable[[], Any]) -> list[Any]:
    """One TLS listener per address, each around a fresh TCP factory (queries and XoT).

    Transfers on a connection that did not select ALPN "dot" are refused (RFC 9103 7.1);
    queries are answered either way, as RFC 7858 does not require ALPN.
    """
    options = server_options(config)
    ports = []
    for ep in config.listen:
        factory = make_factory()
        if factory.xfr is not None:
            factory.xfr = _AlpnGate(factory.xfr)
        ports.append(reactor.listenSSL(ep.port, factory, options, interface=ep.host, backlog=128))
        log.info("listening on %s (DNS over TLS, XoT)", ep)
    return ports


class _AlpnGate:
    """Stands in for xfrout.TransferOut on a TLS listener: refuses a transfer without "dot"."""

    def __init__(self, xfr: Any) -> None:
        self.xfr = xfr

    @property
    def idle_timeout(self) -> float:
        return float(self.xfr.idle_timeout)

    def tcp(self, message: bytes, addr: tuple[str, int], conn: Any = None,
            rest: bytes = b"") -> Iterator[bytes]:
        transport = getattr(conn, "transport", None)
        negotiated = getattr(transport, "negotiatedProtocol", None)
        if negotiated == ALPN:
            result: Iterator[bytes] = self.xfr.tcp(message, addr, conn, rest)
            return result
        log.warning("transfer request from %s over TLS refused: ALPN %r, not \"dot\" "
                    "(RFC 9103 7.1)", addr[0], negotiated)
        try:
            q = parse_query(message)
        except FormatError:
            q = None
        response = error_response(message, REFUSED, q)
        return iter((response,) if response is not None else ())


# --- client side ------------------------------------------------------------

_creators: dict[tuple[PrimaryTls, float], Any] = {}


def _client_creator(tls: PrimaryTls) -> Any:
    """The connection creator for a primary; the CA file is re-read when it changes."""
    from twisted.internet.ssl import (
        Certificate,
        CertificateOptions,
        TLSVersion,
        optionsForClientTLS,
        trustRootFromCertificates,
    )

    stamp = tls.ca.stat().st_mtime if tls.ca is not None else 0.0
    creator = _creators.get((tls, stamp))
    if creator is not None:
        return creator
    tls13 = {"raiseMinimumTo": TLSVersion.TLSv1_3}  # RFC 9103 7.2
    if tls.ca is None or tls.name is None:
        # RFC 9103 9.3.1 opportunistic: encrypted against passive listeners, not authenticated.
        creator = CertificateOptions(verify=False, acceptableProtocols=[ALPN], **tls13)
    else:
        from OpenSSL import crypto

        roots = [Certificate(crypto.X509.from_cryptography(c))  # type: ignore[no-untyped-call]
                 for c in _pem_certificates(tls.ca)]
        trust = trustRootFromCertificates(roots)  # type: ignore[no-untyped-call]
        # RFC 9103 9.3.2 strict: the chain must end in the CA and the name match (RFC 8310 8).
        creator = optionsForClientTLS(tls.name, trustRoot=trust,
                                      acceptableProtocols=[ALPN], extraCertificateOptions=tls13)
    for key in [k for k in _creators if k[0] == tls]:
        del _creators[key]
    _creators[(tls, stamp)] = creator
    return creator


def client_factory(factory: Any, tls: PrimaryTls) -> Any:
    """*factory* (a transfer-in exchange) inside a TLS client connection."""
    from twisted.protocols.tls import TLSMemoryBIOFactory

    try:
        creator = _client_creator(tls)
    except (OSError, ValueError) as exc:
        raise TlsFailed(f"cannot load the CA file {str(tls.ca)!r}: {exc}", "certificate") from exc
    return TLSMemoryBIOFactory(creator, True, factory)


def handshake_failure(reason: Any, transport: Any, peer: object, tls: PrimaryTls) -> TlsFailed:
    """Why the connection to *peer* ended before its TLS handshake completed."""
    from OpenSSL import SSL
    from service_identity import VerificationError

    exc = getattr(reason, "value", reason)
    if isinstance(exc, VerificationError):
        kinds = ", ".join(type(e).__name__ for e in getattr(exc, "errors", ())) or _first_line(exc)
        return TlsFailed(f"TLS: the certificate of {peer} is not valid for {tls.name!r} "
                         f"(service_identity: {kinds})", "name")
    if isinstance(exc, SSL.Error):
        text = _ssl_error_text(exc)
        if "certificate verify failed" in text:
            detail = _verify_detail(transport, tls.ca)
            return TlsFailed(f"TLS: the certificate of {peer} does not verify against "
                             f"{str(tls.ca)!r}: {detail or text}", "certificate")
        return TlsFailed(f"TLS handshake with {peer} failed: {text}", "handshake")
    return TlsFailed(f"TLS handshake with {peer} failed: connection closed "
                     f"({_first_line(exc) or type(exc).__name__})", "handshake")


def check_alpn(transport: Any, peer: object) -> TlsFailed | None:
    """RFC 9103 7.1: a primary that did not select "dot" is not an XoT server."""
    negotiated = getattr(transport, "negotiatedProtocol", None)
    if negotiated == ALPN:
        return None
    return TlsFailed(f"TLS with {peer}: ALPN \"dot\" not selected (got {negotiated!r}; "
                     f"RFC 9103 7.1)", "alpn")


def _ssl_error_text(exc: Exception) -> str:
    parts = []
    for item in exc.args[0] if exc.args and isinstance(exc.args[0], list) else ():
        if isinstance(item, tuple) and item:
            parts.append(str(item[-1]))
    return "; ".join(p for p in parts if p) or _first_line(exc) or type(exc).__name__


def _verify_detail(transport: Any, ca: Path | None) -> str | None:
    """OpenSSL's own reason (expired, unknown issuer, ...), found by verifying the chain the
    primary sent against the CA file again; pyOpenSSL does not expose the handshake's."""
    from OpenSSL import crypto

    try:
        chain = transport.getHandle().get_peer_cert_chain()
        if not chain or ca is None:
            return None
        store = crypto.X509Store()
        for root in _pem_certificates(ca):
            store.add_cert(crypto.X509.from_cryptography(root))
        crypto.X509StoreContext(store, chain[0], chain[1:]).verify_certificate()
    except crypto.X509StoreContextError as exc:
        return str(exc)
    except Exception:
        return None
    return None


def _first_line(exc: object) -> str:
    text = str(exc)
    return text.splitlines()[0] if text else ""


class Failures:
    """TLS failures towards primaries, by primary and reason (bounded by the configuration)."""

    def __init__(self) -> None:
        self.counts: dict[tuple[str, str], int] = {}

    def count(self, failure: Any, primary: object) -> Any:
        """An errback: counts a TlsFailed and passes every failure on."""
        exc = getattr(failure, "value", None)
        if isinstance(exc, TlsFailed):
            key = (str(primary), exc.reason)
            self.counts[key] = self.counts.get(key, 0) + 1
        return failure

    def collector(self) -> Collector:
        return _Collector(self)


class _Collector(Collector):
    def __init__(self, failures: Failures) -> None:
        self.failures = failures

    def collect(self) -> Iterator[Any]:
        fam = CounterMetricFamily("secondns_xot_failures",
                                  "TLS failures towards primaries (XoT), by primary and reason.",
                                  labels=["primary", "reason"])
        for (primary, reason), count in sorted(dict(self.failures.counts).items()):
            fam.add_metric([primary, reason], count)
        yield fam
