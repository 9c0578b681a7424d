"""Development certificates: a throw-away CA and a server certificate signed by it.

``edge-relay cert --out DIR --host NAME...`` writes:

* ``ca.pem``: the CA certificate, to give to agents (``--ca-file``). Its private key is
  never written, so nothing else can ever be signed by it;
* ``cert.pem``: the server certificate (SANs: every ``--host``, as an IP address SAN when
  it parses as one, else a DNS name) followed by the CA certificate;
* ``key.pem``: the server's private key, mode 0600.

A CA plus a leaf (rather than one self-signed leaf) is what strict verifiers accept, e.g.
Python 3.13's default ``VERIFY_X509_STRICT``.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from relay.errors import RelayConfigError

#: Validity of development certificates, in days.
CERT_DAYS: Final = 365


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _builder(
    subject: x509.Name, issuer: x509.Name, key: ec.EllipticCurvePublicKey
) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=CERT_DAYS))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key), critical=False)
    )


def _ca(ca_key: ec.EllipticCurvePrivateKey) -> x509.Certificate:
    name = _name("molecule-edge development CA")
    usage = x509.KeyUsage(False, False, False, False, False, True, True, False, False)
    return (
        _builder(name, name, ca_key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(usage, critical=True)
        .sign(ca_key, hashes.SHA256())
    )


def _leaf(
    hosts: list[str],
    key: ec.EllipticCurvePrivateKey,
    ca: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
) -> x509.Certificate:
    usage = x509.KeyUsage(True, False, False, False, False, False, False, False, False)
    ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    return (
        _builder(_name(hosts[0]), ca.subject, key.public_key())
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(usage, critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName([_san(h) for h in hosts]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )


def write_dev_certificate(out: Path, hosts: list[str]) -> str:
    """Write ``ca.pem``, ``cert.pem`` and ``key.pem`` into ``out``.

    Returns the server certificate's SHA-256 fingerprint (hex, for pinning).
    """
    if not hosts:
        raise RelayConfigError("give at least one --host")
    ca_key = ec.generate_private_key(ec.SECP256R1())
    key = ec.generate_private_key(ec.SECP256R1())
    ca = _ca(ca_key)
    leaf = _leaf(hosts, key, ca, ca_key)
    pem = serialization.Encoding.PEM
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / "ca.pem").write_bytes(ca.public_bytes(pem))
        (out / "cert.pem").write_bytes(leaf.public_bytes(pem) + ca.public_bytes(pem))
        key_bytes = key.private_bytes(
            pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        fd = os.open(out / "key.pem", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(key_bytes)
        os.chmod(out / "key.pem", 0o600)
    except OSError as exc:
        raise RelayConfigError(f"cannot write certificates to {out}: {exc}") from exc
    return leaf.fingerprint(hashes.SHA256()).hex()
