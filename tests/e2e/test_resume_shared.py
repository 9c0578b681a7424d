"""Session resumption for the sessions that carry more than one name, with real
processes: ``edge-agent start`` with two tunnels on one connection, and a pool of two
agents. The agent reaches the relay through :class:`tests.e2e.linkcut.LinkCutter`
(the "network"), which resets its connection mid-transfer; callers talk to the relay
directly."""

from __future__ import annotations

import asyncio
import hashlib
import time
from pathlib import Path

from tests.e2e.client import session, until
from tests.e2e.linkcut import LinkCutter
from tests.e2e.origin import Origin, pattern_digest
from tests.e2e.procs import BIN, AgentProc, Proc, Procs, RelayProc, clean_env, issue_token, run_cli
from tests.e2e.test_resume import RESUMED

MiB = 1024 * 1024
DOWNLOAD = 16 * MiB


async def test_a_reset_mid_download_on_the_second_name_of_a_shared_connection_loses_nothing(
    origin: Origin, procs: Procs, tmp_path: Path
) -> None:
    async with LinkCutter(0) as cutter:
        relay = procs.add(RelayProc(tmp_path / "state", "--resume-grace", "30"))
        cutter.upstream_port = relay.port
        web, api = issue_token(relay.state_dir, "web"), issue_token(relay.state_dir, "backend")
        config = tmp_path / "agent.toml"
        config.write_text(
            f'relay = "{cutter.url}"\n'
            f'[tunnels.web]\ntarget = {origin.port}\ntoken = "{web}"\n'
            f'[tunnels.api]\ntarget = {origin.port}\ntoken = "{api}"\nname = "backend"\n'
            f'[tunnels.other]\ntarget = {origin.port}\ntoken = "{web}"\nname = "other"\n'
        )  # "other" is refused (web's token): the resumption lists it again all the same
        argv = [str(BIN / "edge-agent"), "start", "--all", "--config", str(config)]
        agent = procs.add(Proc("agent-shared", argv, env=clean_env()))
        await asyncio.to_thread(agent.wait_line, r"^\[api\] Forwarding \S+/a/backend/ -> ")
        await asyncio.to_thread(agent.wait_line, r"^\[other\] the relay refused this tunnel")
        assert relay.count("agent_connected") == 1  # one connection, two names
        digest, got, cut = hashlib.sha256(), 0, False
        async with session() as http:
            async with http.get(f"{relay.url}/a/backend/bytes?n={DOWNLOAD}") as resp:
                assert resp.status == 200
                async for chunk in resp.content.iter_chunked(256 * 1024):
                    digest.update(chunk)
                    got += len(chunk)
                    if got >= DOWNLOAD // 3 and not cut:
                        cut = True
                        cutter.reset()
            async with http.get(f"{relay.url}/a/web/echo") as first:
                assert first.status == 200  # the first name is back too
        assert got == DOWNLOAD and digest.hexdigest() == pattern_digest(DOWNLOAD)
        line = await asyncio.to_thread(relay.wait_line, RESUMED, 10)
        print(f"\nshared connection, reset on the second name: {line.group(0)}")
        assert cutter.accepted == 2  # one reconnect
        assert relay.count("agent_disconnected") == 0 and relay.count("tunnel_dropped") == 0
        await asyncio.to_thread(agent.wait_line, r"^\[api\] \d\d:\d\d:\d\d Resumed session after")


async def test_a_pool_member_reset_mid_request_completes_it_exactly_once(
    origin: Origin, procs: Procs, tmp_path: Path
) -> None:
    async with LinkCutter(0) as cutter:
        relay = procs.add(RelayProc(tmp_path / "state", "--resume-grace", "30"))
        cutter.upstream_port = relay.port
        issued = run_cli(
            "edge-relay", "token", "issue", "pool", "--pool", "--state-dir", str(relay.state_dir)
        )
        token = issued.stdout.strip()
        common = (str(origin.port), "--token", token, "--pool", "--no-inspect")
        cut = procs.add(AgentProc(*common, "--relay", cutter.url, name="agent-pool-cut"))
        await asyncio.to_thread(cut.wait_url)
        url = f"{relay.url}/a/pool/"
        async with session() as http:
            held = asyncio.ensure_future(http.get(url + "slow?key=pool-held"))
            await until(lambda: "pool-held" in origin.started, 10, "the request at the origin")
            steady = procs.add(AgentProc(*common, "--relay", relay.url, name="agent-pool"))
            await asyncio.to_thread(steady.wait_url)
            cutter.reset()
            await asyncio.to_thread(relay.wait_line, "agent_link_lost agent=pool", 5)
            began = time.monotonic()
            async with http.get(url + "echo") as other:  # the other member serves meanwhile
                assert other.status == 200
            line = await asyncio.to_thread(relay.wait_line, RESUMED, 10)
            origin.release("pool-held")
            resp = await held
            assert resp.status == 200 and await resp.read() == b"done"
        served = time.monotonic() - began
        print(f"\npool member reset: a new request served in {served:.2f} s; {line.group(0)}")
        assert origin.hits["pool-held"] == 1  # exactly once at its target
        assert relay.count("pool_left") == 0 and relay.count("agent_disconnected") == 0
