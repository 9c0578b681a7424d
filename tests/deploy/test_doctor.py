"""``edge-relay doctor``: every check passes on a good setup (the Caddy stack), and each
one fails, with its hint, when its part of the setup is broken."""

from __future__ import annotations

import subprocess
from pathlib import Path

from relay.doctor import check_state_dir, check_token_store
from relay.tokens import TokenStore
from tests.deploy.conftest import DOMAIN, RELAY_HOST, Stack
from tests.e2e.procs import BIN, clean_env, free_port


def doctor(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "edge-relay"), *args],
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=60,
        check=False,
    )


def base_args(stack: Stack) -> list[str]:
    return [
        "doctor",
        "--public-url",
        f"https://{RELAY_HOST}:{stack.caddy.port}",
        "--domain",
        DOMAIN,
        "--state-dir",
        str(stack.relay.state_dir),
    ]


def test_good_setup_passes(stack: Stack) -> None:
    # Caddy's internal CA issues certificates for hours, not months: hence --min-days.
    done = doctor(*base_args(stack), "--ca-file", str(stack.caddy.root_ca), "--min-days", "0.1")
    assert done.returncode == 0, done.stdout
    lines = done.stdout.splitlines()
    assert [line.split()[0] for line in lines] == ["ok"] * 6, done.stdout
    assert lines[0].startswith("ok    localhost resolves to 127.0.0.1")
    assert f"ok    certificate for demo.{DOMAIN} is valid for" in done.stdout
    assert "tokens)" in lines[-1]


def test_config_file_supplies_the_settings(stack: Stack, tmp_path: Path) -> None:
    config = tmp_path / "relay.toml"
    config.write_text(
        f'public-url = "https://{RELAY_HOST}:{stack.caddy.port}"\n'
        f'domain = "{DOMAIN}"\nstate-dir = "{stack.relay.state_dir}"\n'
    )
    ca = str(stack.caddy.root_ca)
    done = doctor("--config", str(config), "doctor", "--ca-file", ca, "--min-days", "0.1")
    assert done.returncode == 0, done.stdout + done.stderr


def test_short_lived_certificate_fails(stack: Stack) -> None:
    done = doctor(*base_args(stack), "--ca-file", str(stack.caddy.root_ca))
    assert done.returncode == 1
    assert f"FAIL  certificate for {RELAY_HOST} expires in" in done.stdout
    assert "it should have 14 days or more: check the renewal" in done.stdout


def test_untrusted_certificate_fails(stack: Stack) -> None:
    done = doctor(*base_args(stack), "--min-days", "0")  # the system's trust store
    assert done.returncode == 1
    assert f"FAIL  certificate for {RELAY_HOST}\n      -> not valid: " in done.stdout
    assert "FAIL  https://" in done.stdout  # healthz cannot verify the certificate either


def test_name_without_token_gets_no_certificate(stack: Stack) -> None:
    ca = str(stack.caddy.root_ca)
    done = doctor(*base_args(stack), "--ca-file", ca, "--min-days", "0", "--test-name", "nobody")
    assert done.returncode == 1
    assert f"FAIL  certificate for nobody.{DOMAIN}\n      -> no TLS handshake" in done.stdout
    assert "/_edge/tls-ask accepts" in done.stdout


def test_nothing_listening(tmp_path: Path) -> None:
    TokenStore(tmp_path / "state").issue("demo")
    url = f"https://127.0.0.1:{free_port()}"
    done = doctor("doctor", "--public-url", url, "--state-dir", str(tmp_path / "state"))
    assert done.returncode == 1
    assert "ok    127.0.0.1 resolves to 127.0.0.1, on this machine" in done.stdout
    assert f"FAIL  {url}/_edge/healthz answers" in done.stdout
    assert "Connection refused: check that the relay (or Caddy) runs" in done.stdout
    assert "ok    no domain set" in done.stdout


def test_plain_http_and_unknown_host() -> None:
    done = doctor("doctor", "--public-url", "http://nowhere.invalid", "--state-dir", "/nonexistent")
    assert done.returncode == 1
    assert "FAIL  nowhere.invalid resolves" in done.stdout
    assert "add an A/AAAA record for it" in done.stdout
    assert "FAIL  the public URL uses https" in done.stdout


def test_public_url_is_required() -> None:
    done = doctor("doctor")
    assert done.returncode == 2
    assert "Missing option '--public-url'" in done.stderr


def test_missing_ca_file_is_a_usage_error(tmp_path: Path) -> None:
    missing = tmp_path / "ca.pem"
    done = doctor("doctor", "--public-url", "https://localhost", "--ca-file", str(missing))
    assert done.returncode == 2
    assert "does not exist" in done.stderr


def test_state_folder_checks(tmp_path: Path) -> None:
    state = tmp_path / "state"
    assert "issue a token" in check_state_dir(state).fix
    TokenStore(state).issue("demo")
    assert check_state_dir(state).ok
    state.chmod(0o755)
    (state / "tokens.json").chmod(0o644)
    result = check_state_dir(state)
    assert not result.ok
    assert f"mode 0755: run chmod 700 {state}" in result.fix
    assert f"run chmod 600 {state / 'tokens.json'}" in result.fix


def test_corrupt_token_store(tmp_path: Path) -> None:
    state = tmp_path / "state"
    TokenStore(state).issue("demo")
    (state / "tokens.json").write_text("{not json")
    result = check_token_store(state)
    assert not result.ok
    assert "restore it from a backup" in result.fix
    assert check_token_store(tmp_path / "empty").what == "the token store loads (0 tokens)"
