"""Pools (``edge-agent http --pool``): several real agents serve one name through a real
relay, each in front of its own real HTTP server, which records every request it gets
(by a unique id in the path), so "answered exactly once" is counted where it happens.
"""

from __future__ import annotations

import contextlib
import re
import signal
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from tests.e2e.procs import AgentProc, Procs, RelayProc, free_port, run_cli

#: Seconds a held request waits at most (the test releases them when it ends).
HOLD_LIMIT = 60.0

#: Callers sending requests at once in the load test.
WORKERS = 8


class Target(ThreadingHTTPServer):
    """A keep-alive HTTP/1.1 server on 127.0.0.1 that answers ``<label> <id>`` to
    ``/r/<id>`` (after ``delay`` seconds) and records the ids it got; past ``answer``
    requests it holds each new one (unanswered) until :meth:`release`."""

    daemon_threads = True

    def __init__(self, label: str, answer: int | None = None, delay: float = 0.0) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.label = label
        self.answer = answer
        self.delay = delay
        self.lock = threading.Lock()
        self.answered: list[str] = []
        self.held: list[str] = []
        self.released = threading.Event()
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def take(self, rid: str) -> bool:
        """Record ``rid``; True when it is to be held."""
        with self.lock:
            if self.answer is not None and len(self.answered) >= self.answer:
                self.held.append(rid)
                return True
            self.answered.append(rid)
            return False

    def release(self) -> None:
        self.released.set()
        self.shutdown()
        self.server_close()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Target

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", "0")))
        rid = self.path.rsplit("/", 1)[-1]
        if self.server.take(rid):
            self.server.released.wait(HOLD_LIMIT)
            self.close_connection = True
            return  # never answered: its agent is gone
        time.sleep(self.server.delay)
        body = f"{self.server.label} {rid}".encode()
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def targets() -> Iterator[list[Target]]:
    made: list[Target] = []
    yield made
    for target in made:
        target.release()


def _issue(state: Path, name: str, *flags: str) -> str:
    done = run_cli("edge-relay", "token", "issue", name, "--state-dir", str(state), *flags)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def _agent(procs: Procs, relay: RelayProc, target: Target, token: str, *flags: str) -> AgentProc:
    inspect = [] if "--inspect" in flags else ["--no-inspect"]
    args = [str(target.port), "--relay", relay.url, "--token", token, *inspect, *flags]
    return procs.add(AgentProc(*args, name=f"agent-{target.label}"))


def _share(inspector: str, served: int) -> str:
    """The agent's inspector /metrics once it counted ``served`` answered requests."""
    deadline = time.monotonic() + 10
    while True:
        text = httpx.get(f"{inspector}/metrics", timeout=5).text
        if f'edge_agent_requests_total{{class="2xx"}} {float(served)}' in text:
            return text
        assert time.monotonic() < deadline, text
        time.sleep(0.1)


def _post(client: httpx.Client, url: str, rid: str) -> httpx.Response:
    return client.post(f"{url}r/{rid}", content=b"x" * 100)


def test_two_pool_agents_both_get_traffic(procs: Procs, targets: list[Target], tmp_path: Path):
    relay = procs.add(RelayProc(tmp_path, name="relay-pool"))
    token = _issue(tmp_path, "shared", "--pool")
    listed = run_cli("edge-relay", "token", "list", "--state-dir", str(tmp_path))
    assert re.search(r"^shared\t.*\tpool$", listed.stdout, re.M), listed.stdout
    a, b = Target("a"), Target("b")
    targets += [a, b]
    first = _agent(procs, relay, a, token, "--pool")
    url = first.wait_url()
    inspector = f"127.0.0.1:{free_port()}"
    second = _agent(procs, relay, b, token, "--pool", "--inspect", inspector)
    assert second.wait_url() == url
    second.wait_line(r"Joined the pool of shared \(2 agents\)", 5)
    relay.wait_count(r"pool_joined agent=shared", 2)

    with httpx.Client(timeout=10.0) as client:
        answers = [_post(client, url, f"q{i}") for i in range(20)]
        metrics = client.get(f"{relay.url}/_edge/metrics").text
    assert all(r.status_code == 200 for r in answers), [r.text for r in answers]
    assert len(a.answered) + len(b.answered) == 20
    assert len(a.answered) >= 5 and len(b.answered) >= 5, (a.answered, b.answered)
    assert 'edge_pool_sessions{tunnel="shared"} 2.0' in metrics, metrics
    assert metrics.count('edge_pool_session_streams{session="127.0.0.1#') == 2, metrics
    assert first.alive() and second.alive()  # neither replaced the other
    # Its inspector shows its share: what it served, in a pool of two.
    assert "edge_agent_pool_size 2.0" in _share(f"http://{inspector}", len(b.answered))


def test_killed_member_fails_only_what_reached_it(
    procs: Procs, targets: list[Target], tmp_path: Path
) -> None:
    """A member is SIGKILLed while callers keep sending: only the requests its server
    had (and held) fail; every other one is answered, and exactly once."""
    relay = procs.add(RelayProc(tmp_path, name="relay-pool-kill"))
    token = _issue(tmp_path, "shared", "--pool")
    # The steady server takes a moment per answer, so that its member often has the
    # other callers' requests open and ties send the doomed member some until it holds
    # half of them (see _until_held_settles).
    doomed, steady = Target("doomed", answer=5), Target("steady", delay=0.01)
    targets += [doomed, steady]
    victim = _agent(procs, relay, doomed, token, "--pool")
    url = victim.wait_url()
    _agent(procs, relay, steady, token, "--pool").wait_url()
    relay.wait_count(r"pool_joined agent=shared", 2)

    with _callers(url) as results:
        _until_held_settles(doomed)
        victim.signal(signal.SIGKILL)
        relay.wait_line(r"pool_left agent=shared", 10)
        held = list(doomed.held)
        done = len(results)
        deadline = time.monotonic() + 10
        while len(results) < done + 50 and time.monotonic() < deadline:
            time.sleep(0.05)  # the load goes on over the one member left

    failed = {rid for rid, status in results.items() if status != 200}
    assert failed == set(held), (failed, held)
    seen = doomed.answered + doomed.held + steady.answered
    assert len(seen) == len(set(seen)), "a request reached a server twice"
    assert set(doomed.answered) | set(steady.answered) == set(results) - failed
    assert len(doomed.answered) == 5 and len(steady.answered) > 50


def test_a_member_that_stops_loses_no_request(
    procs: Procs, targets: list[Target], tmp_path: Path
) -> None:
    """SIGTERM: the member drains (GOAWAY; its in-flight requests finish) while callers
    keep sending; a request that crossed its GOAWAY is refused unseen and the relay
    sends it to the other member. No caller sees an error."""
    relay = procs.add(RelayProc(tmp_path, name="relay-pool-stop"))
    token = _issue(tmp_path, "shared", "--pool")
    leaving, staying = Target("leaving", delay=0.005), Target("staying", delay=0.005)
    targets += [leaving, staying]
    member = _agent(procs, relay, leaving, token, "--pool")
    url = member.wait_url()
    _agent(procs, relay, staying, token, "--pool").wait_url()
    relay.wait_count(r"pool_joined agent=shared", 2)
    results = _load(url, lambda: len(leaving.answered) >= 20, member)
    assert member.wait(15) == 0
    assert results and all(status == 200 for status in results.values()), results
    seen = leaving.answered + staying.answered
    assert sorted(seen) == sorted(results), "every request answered exactly once"
    assert len(leaving.answered) >= 20 and len(staying.answered) > len(leaving.answered)


def _load(url: str, ready: Callable[[], bool], member: AgentProc) -> dict[str, int]:
    """WORKERS callers send requests until a while after ``member`` got SIGTERM (sent
    once ``ready()``); returns each request's status (-1: no answer)."""
    with _callers(url) as results:
        deadline = time.monotonic() + 20
        while not ready() and time.monotonic() < deadline:
            time.sleep(0.02)
        member.signal(signal.SIGTERM)
        member.wait(15)
        done = len(results)
        while len(results) < done + 50 and time.monotonic() < deadline + 10:
            time.sleep(0.05)
    return results


@contextlib.contextmanager
def _callers(url: str) -> Iterator[dict[str, int]]:
    """WORKERS threads POST to ``url`` one request after another (each with its own id)
    until the block ends; yields each request's status as it comes (-1: no answer)."""
    results: dict[str, int] = {}
    stop = threading.Event()

    def caller(worker: int) -> None:
        with httpx.Client(timeout=HOLD_LIMIT) as client:
            for i in range(10_000):
                if stop.is_set():
                    return
                rid = f"w{worker}-{i}"
                try:
                    results[rid] = _post(client, url, rid).status_code
                except httpx.HTTPError:
                    results[rid] = -1

    threads = [threading.Thread(target=caller, args=(w,), daemon=True) for w in range(WORKERS)]
    for thread in threads:
        thread.start()
    try:
        yield results
    finally:
        stop.set()
        for thread in threads:
            thread.join(HOLD_LIMIT)


def _until_held_settles(target: Target, timeout: float = 20.0) -> None:
    """Wait until the target holds enough requests that the relay sends it no more, and
    its count stayed the same a moment. Fewest open streams first: a caller asks when
    its own last request is over, so the other member then has at most
    ``WORKERS - held - 1`` open, fewer than ``held`` once ``held >= WORKERS / 2``."""
    deadline = time.monotonic() + timeout
    last, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        count = len(target.held)
        if count != last:
            last, since = count, time.monotonic()
        elif count >= WORKERS // 2 and time.monotonic() - since > 0.3:
            return
        time.sleep(0.05)
    raise TimeoutError(f"{target.label} holds {len(target.held)} requests, not settled")


def test_token_without_pool_permission_is_refused(
    procs: Procs, targets: list[Target], tmp_path: Path
) -> None:
    relay = procs.add(RelayProc(tmp_path, name="relay-pool-refused"))
    token = _issue(tmp_path, "solo")
    target = Target("solo")
    targets.append(target)
    agent = _agent(procs, relay, target, token, "--pool")
    assert agent.wait(15) == 3  # EXIT_AUTH: no retry
    line = agent.wait_line(r"^edge-agent: error: .*", 5).group(0)
    assert "may not pool" in line and "edge-relay token issue solo --pool --replace" in line


def test_agent_without_pool_replaces_the_whole_pool(
    procs: Procs, targets: list[Target], tmp_path: Path
) -> None:
    relay = procs.add(RelayProc(tmp_path, name="relay-pool-replaced"))
    token = _issue(tmp_path, "shared", "--pool")
    a, b, c = Target("a"), Target("b"), Target("c")
    targets += [a, b, c]
    members = [_agent(procs, relay, t, token, "--pool") for t in (a, b)]
    url = members[0].wait_url()
    members[1].wait_url()
    single = _agent(procs, relay, c, token)
    assert single.wait_url() == url
    for member in members:
        assert member.wait(15) == 4  # EXIT_NAME_TAKEN
    with httpx.Client(timeout=10.0) as client:
        answers = [_post(client, url, f"s{i}") for i in range(5)]
    assert [r.text for r in answers] == [f"c s{i}" for i in range(5)]
