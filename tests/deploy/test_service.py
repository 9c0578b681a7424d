"""``edge-agent service``: the unit, plist and task it writes, and Linux for real.

Linux: where a systemd user manager answers (``systemctl --user``), the service is
installed, seen connected at a real relay, and removed. Where none does (CI containers),
the unit file is checked with ``systemd-analyze --user verify`` and its ExecStart line is
run as systemd would run it. macOS and Windows are tested by the files and commands
their backends produce.
"""

from __future__ import annotations

import os
import plistlib
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from edge_agent.errors import ConfigError
from edge_agent.service import backends, launchd, schtasks, systemd
from edge_agent.service.spec import ServiceSpec
from edge_agent.service.steps import Remove, Run, Write, apply
from tests.deploy.tools import require
from tests.deploy.userunit import exec_start, user_manager_available
from tests.e2e.procs import BIN, Proc, Procs, RelayProc, clean_env, issue_token

TOKEN = "mer_" + "t" * 43


@pytest.fixture
def home(tmp_path: Path) -> Path:
    (tmp_path / "home").mkdir()
    return tmp_path / "home"


def write_config(path: Path, relay: str = "https://relay.example.com", token: str = TOKEN) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f'relay = "{relay}"\ntoken = "{token}"\ntarget = "8000"\n')
    path.chmod(0o600)
    return path


def service_cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = clean_env(HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"))
    return subprocess.run(
        [str(BIN / "edge-agent"), "service", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


# -- what install refuses -------------------------------------------------------------


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda p: p.chmod(0o644), "is mode 0644 and holds the token: run chmod 600"),
        (lambda p: p.unlink(), "cannot read config file"),
        (lambda p: p.write_text('relay = "https://r"\ntarget = "8000"\n'), "has no token"),
        (lambda p: p.write_text(f'token = "{TOKEN}"\ntarget = "1"\n'), "no relay URL"),
        (lambda p: p.write_text('relay = "https://r"\ntoken = "x"\n'), "give either a TARGET"),
        (lambda p: p.write_text("tokn = 1\n"), "unknown key at the top level: tokn"),
    ],
)
def test_install_refuses_a_bad_config(
    home: Path, setup: Callable[[Path], object], message: str
) -> None:
    config = write_config(home / "agent.toml")
    setup(config)
    done = service_cli(home, "install", "--config", str(config), "--no-start")
    assert done.returncode == 1
    assert message in done.stderr
    assert not (home / ".config" / "systemd").exists()


def test_install_refuses_a_bad_name(home: Path) -> None:
    config = write_config(home / "agent.toml")
    done = service_cli(home, "install", "--config", str(config), "--name", "Bad Name")
    assert done.returncode == 1
    assert "service name 'Bad Name'" in done.stderr


def test_token_flag_does_not_exist(home: Path) -> None:
    done = service_cli(home, "install", "--token", TOKEN)
    assert done.returncode == 2
    assert "No such option '--token'" in done.stderr


# -- Linux ------------------------------------------------------------------------------


def unit_path(home: Path, name: str = "edge-agent") -> Path:
    return home / ".config" / "systemd" / "user" / f"{name}.service"


def test_default_config_location(home: Path) -> None:
    write_config(home / ".config" / "edge-agent" / "config.toml")
    done = service_cli(home, "install", "--no-start")
    assert done.returncode == 0, done.stderr
    assert f"--config {home}/.config/edge-agent/config.toml" in unit_path(home).read_text()


def test_unit_file_verifies_and_holds_no_secret(home: Path, tmp_path: Path) -> None:
    config = write_config(home / "my agent" / "100% agent.toml")
    done = service_cli(home, "install", "--config", str(config), "--no-start")
    assert done.returncode == 0, done.stderr
    text = unit_path(home).read_text()
    assert TOKEN not in text
    assert '"' in text and "100%% agent.toml" in text  # quoted, specifier escaped
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    analyze = require("systemd-analyze", "systemd")
    verify = subprocess.run(
        [analyze, "--user", "verify", "--man=no", str(unit_path(home))],
        capture_output=True,
        text=True,
        env={**os.environ, "XDG_RUNTIME_DIR": str(runtime)},
        timeout=60,
        check=False,
    )
    assert (verify.returncode, verify.stderr) == (0, "")


@pytest.fixture
def relay(tmp_path: Path) -> Iterator[tuple[RelayProc, str]]:
    with Procs() as procs:
        relay = procs.add(RelayProc(tmp_path / "state"))
        yield relay, issue_token(tmp_path / "state", "laptop")


def test_unit_command_connects_the_agent(
    home: Path, relay: tuple[RelayProc, str], tmp_path: Path
) -> None:
    """The unit's ExecStart, run as written, reaches the relay with the file's token."""
    server, token = relay
    config = write_config(home / "agent dir" / "agent.toml", server.url, token)
    assert service_cli(home, "install", "--config", str(config), "--no-start").returncode == 0
    argv = exec_start(unit_path(home))
    assert argv == [str(BIN / "edge-agent"), "http", "--config", str(config)]
    with Procs() as procs:
        agent = procs.add(Proc("service-agent", argv, env=clean_env()))
        agent.wait_line(r"^Forwarding .*/a/laptop/ -> http://127\.0\.0\.1:8000")
    server.wait_line(r"agent_connected agent=laptop")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="systemd is Linux only")
def test_linux_without_a_user_manager(home: Path) -> None:
    if user_manager_available():
        pytest.skip("a systemd user manager runs here: test_linux_for_real covers it")
    config = write_config(home / "agent.toml")
    done = service_cli(home, "install", "--config", str(config))
    assert done.returncode == 1
    assert "systemctl --user daemon-reload failed" in done.stderr
    assert f"the service definition is {unit_path(home)}" in done.stderr
    status = service_cli(home, "status")
    assert f"edge-agent: systemd user unit {unit_path(home)}" in status.stdout
    assert status.returncode != 0
    removed = service_cli(home, "uninstall")
    assert removed.returncode == 0, removed.stderr
    assert not unit_path(home).exists()
    assert service_cli(home, "status").returncode == 4


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="systemd is Linux only")
def test_linux_for_real(relay: tuple[RelayProc, str], tmp_path: Path) -> None:
    """install, status and uninstall against this user's systemd (a unique name)."""
    if not user_manager_available():
        pytest.skip("systemctl --user: no user manager here; the unit file is verified instead")
    server, token = relay
    home = Path.home()
    name = f"edge-agent-test-{os.getpid()}"
    config = write_config(tmp_path / "agent.toml", server.url, token)
    try:
        done = service_cli(home, "install", "--config", str(config), "--name", name)
        assert done.returncode == 0, done.stderr
        server.wait_line(r"agent_connected agent=laptop", timeout=30)
        status = service_cli(home, "status", "--name", name)
        assert status.returncode == 0 and "active (running)" in status.stdout
    finally:
        removed = service_cli(home, "uninstall", "--name", name)
    assert removed.returncode == 0, removed.stderr
    server.wait_line(r"agent_disconnected agent=laptop", timeout=60)
    assert service_cli(home, "status", "--name", name).returncode == 4


# -- macOS and Windows, by what they write ---------------------------------------------


def spec(home: Path, windows: bool = False) -> ServiceSpec:
    exe = home / ("Python 3/Scripts/edge-agent.exe" if windows else "venv/bin/edge-agent")
    return ServiceSpec("edge-agent", exe, home / "my files" / "agent.toml", home)


class Recorder:
    def __init__(self, fail: Sequence[str] = ()) -> None:
        self.calls: list[tuple[str, ...]] = []
        self.fail = fail

    def __call__(self, argv: Sequence[str]) -> tuple[int, str]:
        self.calls.append(tuple(argv))
        return (1, "not loaded") if argv[1] in self.fail else (0, "")


def test_launchd_agent(home: Path) -> None:
    service = spec(home)
    runner = Recorder(fail=("bootout",))  # nothing loaded yet: tolerated
    apply(launchd.install_steps(service, uid=501), runner)
    plist = launchd.definition(service)
    assert plist == home / "Library" / "LaunchAgents" / "com.molecule-edge.edge-agent.plist"
    data = plistlib.loads(plist.read_bytes())
    assert data["ProgramArguments"] == [
        str(service.executable),
        "http",
        "--config",
        str(home / "my files" / "agent.toml"),
    ]
    assert data["RunAtLoad"] is True
    assert data["KeepAlive"] == {"SuccessfulExit": False}
    assert TOKEN not in plist.read_text()
    apply(launchd.uninstall_steps(service, uid=501), runner)
    assert not plist.exists()
    bootout = ("launchctl", "bootout", "gui/501/com.molecule-edge.edge-agent")
    assert runner.calls == [bootout, ("launchctl", "bootstrap", "gui/501", str(plist)), bootout]


def test_scheduled_task(home: Path) -> None:
    service = spec(home, windows=True)
    steps = schtasks.install_steps(service, user="HOST\\me")
    write = steps[0]
    assert isinstance(write, Write)
    assert write.data[:2] == b"\xff\xfe"  # UTF-16 with a BOM, as schtasks reads it
    ns = {"t": "http://schemas.microsoft.com/windows/2004/02/mit/task"}
    root = ET.fromstring(write.data.decode("utf-16").split("\n", 1)[1])
    assert root.findtext("t:Actions/t:Exec/t:Command", namespaces=ns) == str(service.executable)
    arguments = root.findtext("t:Actions/t:Exec/t:Arguments", namespaces=ns)
    assert arguments == f'http --config "{home}/my files/agent.toml"'
    assert root.findtext("t:Triggers/t:LogonTrigger/t:UserId", namespaces=ns) == "HOST\\me"
    assert root.findtext("t:Settings/t:ExecutionTimeLimit", namespaces=ns) == "PT0S"
    runs = [step.argv for step in steps if isinstance(step, Run)]
    definition = str(schtasks.definition(service))
    assert runs[0] == (
        "schtasks",
        "/Create",
        "/TN",
        "molecule-edge\\edge-agent",
        "/XML",
        definition,
        "/F",
    )
    assert isinstance(schtasks.uninstall_steps(service)[-1], Remove)


def test_systemd_quoting() -> None:
    assert systemd.quote("/usr/bin/edge-agent") == "/usr/bin/edge-agent"
    assert systemd.quote("/a b/c") == '"/a b/c"'
    assert systemd.quote('/x"y\\z') == '"/x\\"y\\\\z"'
    assert systemd.quote("/50%/$HOME") == "/50%%/$$HOME"


def test_backends_by_platform() -> None:
    assert backends.for_platform("linux") is systemd
    assert backends.for_platform("darwin") is launchd
    assert backends.for_platform("win32") is schtasks
    with pytest.raises(ConfigError, match="no service manager support for freebsd14"):
        backends.for_platform("freebsd14")
