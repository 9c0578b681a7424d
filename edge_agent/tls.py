"""TLS towards the relay: verified by default, a private CA, an optional certificate pin."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import logging
import re
import ssl

from edge_agent.errors import ConfigError, TlsError

logger = logging.getLogger(__name__)

_HEX64 = re.compile(r"[0-9a-f]{64}")


@dataclasses.dataclass(frozen=True, slots=True)
class TlsOptions:
    """How the agent checks the relay's certificate.

    ``ca_file``: PEM bundle of a private CA, trusted instead of the system store (the
    usual setup for a relay with its own CA). ``insecure``: no verification (development;
    a warning is logged on every connect). ``pin_sha256``: hex SHA-256 of the relay's
    DER certificate; any other certificate is refused even if it verifies.
    """

    ca_file: str | None = None
    insecure: bool = False
    pin_sha256: str | None = None

    def __post_init__(self) -> None:
        if self.pin_sha256 is not None:
            object.__setattr__(self, "pin_sha256", normalize_pin(self.pin_sha256))


def normalize_pin(pin: str) -> str:
    """Accept ``AB:CD:..`` or plain hex, any case; return 64 lowercase hex digits."""
    value = pin.replace(":", "").strip().lower()
    if not _HEX64.fullmatch(value):
        raise ConfigError("the certificate pin must be a SHA-256 in hex (64 digits)")
    return value


def client_context(options: TlsOptions) -> ssl.SSLContext:
    """The SSL context for a ``wss://`` relay URL."""
    try:
        context = ssl.create_default_context(cafile=options.ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load the CA file {options.ca_file!r}: {exc}") from exc
    if options.insecure:
        logger.warning(
            "tls_verification_disabled",
            extra={"warning": "--insecure: the relay's certificate is NOT verified"},
        )
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def check_pin(ssl_object: ssl.SSLObject | ssl.SSLSocket | None, pin: str) -> None:
    """Raise TlsError unless the peer certificate's SHA-256 equals ``pin``."""
    der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
    if not der:
        raise TlsError("the relay presented no certificate to check against the pin")
    digest = hashlib.sha256(der).hexdigest()
    if not hmac.compare_digest(digest, pin):
        raise TlsError(f"the relay's certificate (sha256 {digest}) does not match the pin")


def certificate_sha256(der: bytes) -> str:
    """The pin value of a DER certificate, as :func:`check_pin` compares it."""
    return hashlib.sha256(der).hexdigest()
