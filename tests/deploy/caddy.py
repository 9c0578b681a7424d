"""Debian's caddy running the shipped deploy/Caddyfile on loopback, for tests.

The Caddyfile is used as shipped, with its settings from the environment and four
test-only global options added to its global block: free ports instead of 80/443, no
admin endpoint (parallel runs would share :2019), certificates from Caddy's internal CA
(``local_certs``, the ``tls internal`` issuer for every name) and no attempt to install
that CA into the machine's trust store. Caddy's data (the CA, certificates) goes to a
temporary folder.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Final

from tests.deploy.tools import require
from tests.e2e.procs import Proc, clean_env, free_port, wait_port

CADDYFILE: Final = Path(__file__).resolve().parents[2] / "deploy" / "Caddyfile"
GLOBAL_BLOCK: Final = "\n{\n"


def caddyfile_for_tests(http_port: int, https_port: int) -> str:
    """The shipped Caddyfile with the test-only global options."""
    text = CADDYFILE.read_text()
    assert text.count(GLOBAL_BLOCK) == 1, "the Caddyfile's global block moved"
    extra = (
        f"\thttp_port {http_port}\n\thttps_port {https_port}\n"
        "\tadmin off\n\tlocal_certs\n\tskip_install_trust\n"
    )
    return text.replace(GLOBAL_BLOCK, GLOBAL_BLOCK + extra)


class Caddy(Proc):
    """``caddy run`` in front of a relay at ``upstream``; ``port`` is its HTTPS port."""

    def __init__(
        self, home: Path, upstream: str, relay_host: str, domain: str, port: int = 0
    ) -> None:
        command = require("caddy", "caddy")
        self.home = home
        self.port = port or free_port()
        config = home / "Caddyfile"
        config.write_text(caddyfile_for_tests(free_port(), self.port))
        env = clean_env(
            EDGE_RELAY_PUBLIC_HOST=relay_host,
            EDGE_RELAY_DOMAIN=domain,
            EDGE_RELAY_UPSTREAM=upstream,
            XDG_DATA_HOME=str(home / "data"),
            XDG_CONFIG_HOME=str(home / "config"),
            HOME=str(home),
        )
        super().__init__("caddy", [command, "run", "--config", str(config)], env=env)
        try:
            wait_port(self.port)
        except BaseException:
            self.stop()
            raise

    @property
    def root_ca(self) -> Path:
        """Caddy's internal root certificate (written at start)."""
        return self.home / "data" / "caddy" / "pki" / "authorities" / "local" / "root.crt"

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.root_ca))
