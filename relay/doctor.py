"""``edge-relay doctor``: check a relay's setup from the VM it runs on.

Each check gives ok or FAIL, and on FAIL what to do. In order:

1. the public URL's host resolves, to an address of this machine (one it can bind:
   a cloud VM whose public address is NAT'ed onto it fails here, see the hint);
2. ``<public-url>/_edge/healthz`` answers 200 through that URL (the whole path: DNS,
   firewall, proxy, relay);
3. the certificate served for the public host, and for ``NAME.DOMAIN`` of a name a token
   owns (the on-demand path), verifies and is valid for at least ``min_days`` more;
4. the state folder is private (0700, owned by this user; the token file 0600);
5. the token store loads.

Network checks use :data:`TIMEOUT` each and never send a token. Certificates are
verified against the system's trust store, or ``ca_file``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import os
import socket
import ssl
import stat
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Final

from relay.errors import RelayConfigError
from relay.tokens import TOKENS_FILE, TokenStore

#: Seconds each network check may take.
TIMEOUT: Final = 5.0

#: A certificate must stay valid at least this many days (ACME renews at 30 days left).
MIN_DAYS: Final = 14.0


@dataclasses.dataclass(frozen=True, slots=True)
class Check:
    """One result: what was checked, whether it holds, and what to do if not."""

    ok: bool
    what: str
    fix: str = ""


@dataclasses.dataclass(frozen=True, slots=True)
class Setup:
    """What doctor checks: the relay's settings plus how to verify certificates."""

    public_url: str
    domain: str | None
    state_dir: Path
    ca_file: Path | None = None
    test_name: str | None = None
    min_days: float = MIN_DAYS

    @property
    def host(self) -> str:
        return urllib.parse.urlsplit(self.public_url).hostname or ""

    @property
    def port(self) -> int:
        parts = urllib.parse.urlsplit(self.public_url)
        return parts.port or (443 if parts.scheme == "https" else 80)


def run_checks(setup: Setup) -> Iterator[Check]:
    """Every check, in order (a failed one does not stop the rest)."""
    yield check_resolves(setup)
    yield check_healthz(setup)
    yield from check_certificates(setup)
    yield check_state_dir(setup.state_dir)
    yield check_token_store(setup.state_dir)


# -- 1. DNS ---------------------------------------------------------------------------


def check_resolves(setup: Setup) -> Check:
    what = f"{setup.host} resolves to an address of this machine"
    try:
        addresses = sorted({str(info[4][0]) for info in socket.getaddrinfo(setup.host, None)})
    except (OSError, UnicodeError) as exc:
        return Check(False, what, f"it does not resolve ({exc}): add an A/AAAA record for it")
    local = [address for address in addresses if _is_local(address)]
    if local:
        return Check(True, f"{setup.host} resolves to {', '.join(local)}, on this machine")
    return Check(
        False,
        f"{setup.host} resolves to {', '.join(addresses)}, not an address of this machine",
        "point its A/AAAA record at this VM (a cloud VM whose public address is NAT'ed "
        "onto it fails this check by design: then trust the next one)",
    )


def _is_local(address: str) -> bool:
    """Whether ``address`` belongs to this machine: only then can a socket bind it."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((address, 0))
        except OSError:
            return False
    return True


# -- 2. the relay through its public URL ----------------------------------------------


def check_healthz(setup: Setup) -> Check:
    url = setup.public_url.rstrip("/") + "/_edge/healthz"
    what = f"{url} answers"
    context = _context(setup.ca_file)
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT, context=context) as answer:
            body = json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return Check(False, what, f"it answered {exc.code}: is the proxy forwarding to the relay?")
    except (OSError, ValueError) as exc:
        return Check(False, what, f"{_reason(exc)}: {_reach_hint(setup)}")
    if body != {"status": "ok"}:
        return Check(False, what, f"unexpected answer {body!r}: is this the relay?")
    return Check(True, f"{url} answers 200 ok")


def _reach_hint(setup: Setup) -> str:
    return (
        f"check that the relay (or Caddy) runs and listens on port {setup.port}, and that "
        "the firewall and the cloud security group allow it"
    )


def _reason(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None)
    return str(reason if reason is not None else exc)


# -- 3. certificates --------------------------------------------------------------------


def check_certificates(setup: Setup) -> Iterator[Check]:
    if urllib.parse.urlsplit(setup.public_url).scheme != "https":
        yield Check(False, "the public URL uses https", "agents and callers need TLS: use https")
        return
    yield check_certificate(setup, setup.host)
    name = setup.test_name or _first_token_name(setup.state_dir)
    if not setup.domain:
        yield Check(True, "no domain set: host routing and on-demand certificates are off")
    elif name is None:
        yield Check(
            False,
            f"a certificate for a name under {setup.domain}",
            "no token yet: issue one (edge-relay token issue NAME) and run doctor again",
        )
    else:
        yield check_certificate(setup, f"{name}.{setup.domain}")


def check_certificate(setup: Setup, server_name: str) -> Check:
    """Handshake with the public host's address, asking for ``server_name`` (SNI)."""
    what = f"certificate for {server_name}"
    try:
        cert = _peer_certificate(setup.host, setup.port, server_name, _context(setup.ca_file))
    except ssl.SSLCertVerificationError as exc:
        return Check(False, what, f"not valid: {exc.verify_message}; {_cert_hint()}")
    except (OSError, ssl.SSLError) as exc:
        return Check(False, what, f"no TLS handshake ({_reason(exc)}); {_cert_hint()}")
    left = _days_left(cert)
    if left < setup.min_days:
        return Check(
            False,
            f"{what} expires in {left:.1f} days",
            f"it should have {setup.min_days:g} days or more: check the renewal (Caddy's log)",
        )
    return Check(True, f"{what} is valid for {left:.0f} more days")


def _cert_hint() -> str:
    return (
        "Caddy gets certificates only for names the relay's /_edge/tls-ask accepts "
        "(a token must own the name) and needs ports 80 and 443 open for ACME"
    )


def _peer_certificate(
    host: str, port: int, server_name: str, context: ssl.SSLContext
) -> dict[str, object]:
    with socket.create_connection((host, port), timeout=TIMEOUT) as raw:
        with context.wrap_socket(raw, server_hostname=server_name) as tls:
            cert = tls.getpeercert()
    if not cert:
        raise ssl.SSLError("no certificate")
    return dict(cert)


def _days_left(cert: dict[str, object]) -> float:
    expires = ssl.cert_time_to_seconds(str(cert["notAfter"]))
    now = datetime.datetime.now(datetime.UTC).timestamp()
    return (expires - now) / 86400


def _context(ca_file: Path | None) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca_file) if ca_file else None)


def _first_token_name(state_dir: Path) -> str | None:
    with contextlib.suppress(RelayConfigError):
        records = TokenStore(state_dir).records()
        return records[0].name if records else None
    return None


# -- 4, 5. the state folder --------------------------------------------------------------


def check_state_dir(state_dir: Path) -> Check:
    what = f"state folder {state_dir} is private"
    try:
        info = state_dir.stat()
    except OSError as exc:
        return Check(False, what, f"{exc.strerror}: issue a token (it creates the folder)")
    if not stat.S_ISDIR(info.st_mode):
        return Check(False, what, "it is not a folder")
    problems = _privacy_problems(state_dir, info)
    if problems:
        return Check(False, what, "; ".join(problems))
    return Check(True, f"state folder {state_dir} is private (0700, yours)")


def _privacy_problems(state_dir: Path, info: os.stat_result) -> list[str]:
    problems = []
    if info.st_uid != os.geteuid():
        problems.append("it belongs to another user: run doctor as the relay's user")
    if info.st_mode & 0o077:
        problems.append(f"mode {stat.S_IMODE(info.st_mode):04o}: run chmod 700 {state_dir}")
    tokens = state_dir / TOKENS_FILE
    with contextlib.suppress(FileNotFoundError):
        if tokens.stat().st_mode & 0o077:
            problems.append(f"{tokens} is readable by others: run chmod 600 {tokens}")
    return problems


def check_token_store(state_dir: Path) -> Check:
    try:
        records = TokenStore(state_dir).records()
    except RelayConfigError as exc:
        return Check(False, "the token store loads", f"{exc}: restore it from a backup")
    return Check(True, f"the token store loads ({len(records)} tokens)")


def report(checks: Iterator[Check], echo: Callable[[str], None]) -> bool:
    """Print each result as it comes. Returns whether every check passed."""
    passed = True
    for check in checks:
        echo(f"{'ok  ' if check.ok else 'FAIL'}  {check.what}")
        if not check.ok:
            passed = False
            echo(f"      -> {check.fix}")
    return passed
