"""docs/deploy.md, run: every shell command in it is run here on loopback, in the order
of the page, or is listed in :data:`NOT_RUN` with the reason it cannot be.

Names and paths are mapped (:func:`localize`): ``relay.example.com`` is ``localhost``
on Caddy's port, ``NAME.tunnels.example.com`` is ``NAME.edge.test`` (curl gets
``--resolve``), ``/etc``, ``/var/lib`` and ``~`` are temporary folders, ``sudo -u
edge-relay`` is dropped. The service manager's part is played by :data:`STAND_INS`:
``systemctl enable --now edge-relay`` starts the unit's command, ``systemctl restart
caddy`` starts Caddy with the environment file the page wrote, and so on. Caddy uses its
internal CA, trusted through SSL_CERT_FILE and CURL_CA_BUNDLE.
"""

from __future__ import annotations

import dataclasses
import os
import re
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Final

import pytest

from relay.tokens import TokenStore
from tests.deploy.caddy import CADDYFILE, Caddy
from tests.deploy.userunit import exec_start, user_manager_available
from tests.e2e.origin import Origin
from tests.e2e.procs import BIN, ROOT, Proc, Procs, clean_env, free_port

DOC: Final = ROOT / "docs" / "deploy.md"
TOKEN_LINE: Final = r"^mer_\S{43}$"

#: Commands that cannot run on one machine, and why (what covers them instead).
NOT_RUN: Final = {
    "ufw allow OpenSSH": "changes this machine's firewall",
    "ufw allow 80,443/tcp": "changes this machine's firewall",
    "ufw enable": "changes this machine's firewall",
    "apt-get install -y caddy python3-venv": "tests/deploy/tools.py installs caddy the same way",
    "python3 -m venv /opt/edge-relay": "test_wheel.py makes a fresh venv from the wheel",
    "/opt/edge-relay/bin/pip install ./molecule-edge/dist/molecule_edge-0.1.0-py3-none-any.whl": (
        "test_wheel.py installs the built wheel into a fresh venv"
    ),
    "install -m 0644 molecule-edge/deploy/systemd/edge-relay.sysusers /usr/lib/sysusers.d/edge-relay.conf": (  # noqa: E501
        "creates a system user; test_systemd.py checks the entry"
    ),
    "systemd-sysusers": "creates a system user",
    "install -m 0644 molecule-edge/deploy/systemd/edge-relay.service /etc/systemd/system/": (
        "no system manager in tests; test_systemd.py verifies the unit"
    ),
    "install -d -m 0750 -g edge-relay /etc/edge-relay": "needs the edge-relay system user",
    "systemctl daemon-reload": "no system manager in tests",
    "install -m 0644 molecule-edge/deploy/Caddyfile /etc/caddy/Caddyfile": (
        "the stand-in Caddy runs deploy/Caddyfile itself"
    ),
    "install -D -m 0644 molecule-edge/deploy/systemd/caddy.service.d/edge-relay.conf /etc/systemd/system/caddy.service.d/edge-relay.conf": (  # noqa: E501
        "no system manager in tests; test_systemd.py verifies the drop-in"
    ),
    "cd molecule-edge/deploy": "the Docker steps need a Docker daemon",
    "EDGE_RELAY_PUBLIC_HOST=relay.example.com EDGE_RELAY_DOMAIN=tunnels.example.com docker compose up -d --build": (  # noqa: E501
        "needs a Docker daemon; test_docker.py builds and runs the image where one runs"
    ),
    "docker compose exec relay edge-relay token issue laptop": "needs a Docker daemon",
    "pipx install ./molecule_edge-0.1.0-py3-none-any.whl": (
        "test_wheel.py installs the built wheel with pipx"
    ),
    "/opt/edge-relay/bin/pip install --upgrade ./molecule_edge-0.2.0-py3-none-any.whl": (
        "there is no next version to install; test_wheel.py installs the wheel"
    ),
}


@dataclasses.dataclass
class Machine:
    """The loopback stand-in for the VM and the laptop."""

    root: Path
    procs: Procs
    origin: Origin
    port: int = dataclasses.field(default_factory=free_port)  # Caddy's HTTPS port
    relay_port: int = dataclasses.field(default_factory=free_port)
    relay: Proc | None = None
    caddy: Caddy | None = None
    agent: Proc | None = None

    @property
    def home(self) -> Path:
        return self.root / "home"

    def env(self) -> dict[str, str]:
        env = clean_env(
            HOME=str(self.home),
            XDG_CONFIG_HOME=str(self.home / ".config"),
            PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}",
        )
        if self.caddy is not None:
            env |= {"SSL_CERT_FILE": str(self.caddy.root_ca)}
            env |= {"CURL_CA_BUNDLE": str(self.caddy.root_ca)}
        return env


def localize(text: str, m: Machine) -> str:
    text = text.replace("sudo -u edge-relay ", "").replace("/opt/edge-relay/bin/", f"{BIN}/")
    for path, local in (
        ("/etc/edge-relay/relay.toml", m.root / "relay.toml"),
        ("/etc/default/caddy", m.root / "default-caddy"),
        ("/etc/caddy/Caddyfile", CADDYFILE),
        ("/var/lib", m.root / "lib"),
    ):
        text = text.replace(path, str(local))
    text = re.sub(
        r"curl https://([a-z0-9-]+)\.tunnels\.example\.com/",
        rf"curl --resolve \1.edge.test:{m.port}:127.0.0.1 https://\1.edge.test:{m.port}/",
        text,
    )
    text = text.replace("https://relay.example.com", f"https://localhost:{m.port}")
    text = text.replace("relay.example.com", "localhost")
    text = text.replace("tunnels.example.com", "edge.test")
    text = text.replace("port = 8080", f"port = {m.relay_port}")
    return text.replace('target = "8000"', f'target = "{m.origin.port}"')


# -- the page -----------------------------------------------------------------------------


def blocks(language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```$", DOC.read_text(), re.M | re.S)


def commands() -> list[str]:
    return [line for block in blocks("sh") for line in block.splitlines() if line.strip()]


def toml_block(containing: str) -> str:
    (found,) = [block for block in blocks("toml") if containing in block]
    return found


# -- what the service managers would do ----------------------------------------------------


def start_relay(m: Machine) -> None:
    """``systemctl enable --now edge-relay``: the unit's ExecStart, with the page's file."""
    argv = [str(BIN / "edge-relay"), "serve", "--config", str(m.root / "relay.toml")]
    m.relay = m.procs.add(Proc("relay", argv, env=m.env()))
    m.relay.wait_line(r"relay_listening")


def start_caddy(m: Machine) -> None:
    """``systemctl restart caddy``: Caddy with the environment file the page wrote."""
    env = dict(line.split("=", 1) for line in (m.root / "default-caddy").read_text().splitlines())
    upstream = f"127.0.0.1:{m.relay_port}"
    home = m.root / "caddy"
    home.mkdir()
    domain = env["EDGE_RELAY_DOMAIN"]
    m.caddy = m.procs.add(Caddy(home, upstream, env["EDGE_RELAY_PUBLIC_HOST"], domain, m.port))


def restart_relay(m: Machine) -> None:
    """``systemctl restart edge-relay``: SIGTERM (the relay drains and exits 0), start."""
    assert m.relay is not None
    m.relay.signal(signal.SIGTERM)
    assert m.relay.wait() == 0, m.relay.output()
    m.relay.wait_line(r"relay_drained")
    start_relay(m)


STAND_INS: Final[dict[str, Callable[[Machine], None]]] = {
    "systemctl enable --now edge-relay": start_relay,
    "systemctl restart caddy": start_caddy,
    "systemctl restart edge-relay": restart_relay,
}


# -- what each command that runs must show ---------------------------------------------------

Done = subprocess.CompletedProcess[str]


def token_printed(done: Done, m: Machine) -> None:
    """A token alone on stdout; the laptop's config.toml gets it (the page's example
    token is a placeholder for the one printed here)."""
    assert done.returncode == 0, done.stderr
    token = done.stdout.strip()
    assert re.fullmatch(TOKEN_LINE, token)
    config = m.home / ".config" / "edge-agent" / "config.toml"
    config.write_text(re.sub(r"mer_\S{43}", token, config.read_text()))


def healthz(done: Done, m: Machine) -> None:
    assert (done.returncode, done.stdout) == (0, '{"status": "ok"}'), done.stderr


def doctor(done: Done, m: Machine) -> None:
    """All ok but the certificates' lifetime: Caddy's internal CA issues for hours."""
    assert done.returncode == 1, done.stdout
    verdicts = [line.split("  ")[0] for line in done.stdout.splitlines() if line[:1] != " "]
    assert verdicts == ["ok", "ok", "FAIL", "FAIL", "ok", "ok"], done.stdout
    expiring = re.findall(r"^FAIL  certificate for (\S+) expires in 0\.\d days$", done.stdout, re.M)
    assert expiring == ["localhost", "laptop.edge.test"], done.stdout


def service_install(done: Done, m: Machine) -> None:
    """Without a user manager, install says so; then its unit's command is started here
    as systemd would (and the agent must reach the relay through Caddy)."""
    unit = m.home / ".config" / "systemd" / "user" / "edge-agent.service"
    if user_manager_available():
        assert done.returncode == 0, done.stderr
        return
    assert done.returncode == 1 and "systemctl --user daemon-reload failed" in done.stderr
    m.agent = m.procs.add(Proc("agent", exec_start(unit), env=m.env()))
    m.agent.wait_line(r"^Forwarding https://laptop\.edge\.test:\d+/ ")  # public URL's port


def service_status(done: Done, m: Machine) -> None:
    assert "edge-agent: systemd user unit" in done.stdout, done.stderr


def tunnel_answers(done: Done, m: Machine) -> None:
    assert done.returncode == 0, done.stderr
    assert '"raw_path": "/"' in done.stdout, done.stdout


def service_uninstall(done: Done, m: Machine) -> None:
    assert done.returncode == 0, done.stderr
    assert not (m.home / ".config" / "systemd" / "user" / "edge-agent.service").exists()
    if m.agent is not None:
        m.agent.stop()


def ok(done: Done, m: Machine) -> None:
    assert done.returncode == 0, done.stderr


def restored(done: Done, m: Machine) -> None:
    assert done.returncode == 0, done.stderr
    state = m.root / "lib" / "edge-relay"
    assert (state.stat().st_mode & 0o777, (state / "tokens.json").stat().st_mode & 0o777) == (
        0o700,
        0o600,
    )
    assert [r.name for r in TokenStore(state).records()] == ["laptop"]


def listed(done: Done, m: Machine) -> None:
    assert done.returncode == 0 and done.stdout.startswith("laptop\t"), done.stderr


def revoked(done: Done, m: Machine) -> None:
    assert done.returncode == 0 and "revoked the token for laptop" in done.stderr


RELAY_CLI: Final = (
    "sudo -u edge-relay /opt/edge-relay/bin/edge-relay --config /etc/edge-relay/relay.toml"
)
CHECKS: Final[dict[str, Callable[[Done, Machine], None]]] = {
    f"{RELAY_CLI} token issue laptop": token_printed,
    "printf 'EDGE_RELAY_PUBLIC_HOST=relay.example.com\\nEDGE_RELAY_DOMAIN=tunnels.example.com\\n' > /etc/default/caddy": ok,  # noqa: E501
    "EDGE_RELAY_PUBLIC_HOST=relay.example.com EDGE_RELAY_DOMAIN=tunnels.example.com caddy validate --config /etc/caddy/Caddyfile": ok,  # noqa: E501
    "curl https://relay.example.com/_edge/healthz": healthz,
    f"{RELAY_CLI} doctor": doctor,
    "chmod 600 ~/.config/edge-agent/config.toml": ok,
    "edge-agent service install": service_install,
    "edge-agent service status": service_status,
    "curl https://laptop.tunnels.example.com/": tunnel_answers,
    "edge-agent service uninstall": service_uninstall,
    "tar -C /var/lib -czf edge-relay-state.tgz edge-relay": ok,
    "tar -C /var/lib -xzf edge-relay-state.tgz": restored,
    f"{RELAY_CLI} token issue laptop --replace": token_printed,
    f"{RELAY_CLI} token list": listed,
    f"{RELAY_CLI} token revoke laptop": revoked,
}


def test_every_command_is_run_or_excused() -> None:
    on_page = set(commands())
    handled = set(CHECKS) | set(STAND_INS) | set(NOT_RUN)
    assert on_page - handled == set(), "commands on the page that no test runs"
    assert handled - on_page == set(), "commands this test knows that left the page"


@pytest.fixture
def machine(tmp_path: Path) -> Iterator[Machine]:
    with Origin() as origin, Procs() as procs:
        m = Machine(tmp_path, procs, origin)
        (m.root / "relay.toml").write_text(localize(toml_block("public-url"), m))
        agent_config = m.home / ".config" / "edge-agent" / "config.toml"
        agent_config.parent.mkdir(parents=True)
        agent_config.write_text(localize(toml_block('token = "mer_'), m))  # as an editor would
        yield m


def test_the_page_runs(machine: Machine) -> None:
    ran: list[str] = []
    for command in commands():
        if command in STAND_INS:
            STAND_INS[command](machine)
        elif command not in NOT_RUN:
            CHECKS[command](run_localized(command, machine), machine)
        ran.append(command)
    assert set(ran) >= set(CHECKS) | set(STAND_INS)
    assert machine.agent is not None or user_manager_available()


def run_localized(command: str, machine: Machine) -> Done:
    return subprocess.run(
        ["bash", "-c", localize(command, machine)],
        capture_output=True,
        text=True,
        cwd=machine.root,
        env=machine.env(),
        timeout=120,
        check=False,
    )
