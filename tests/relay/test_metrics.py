"""The relay's metrics: what /_edge/metrics exports, its token, the per-tunnel cap, the
cost per request, and the Grafana dashboard's queries against a live exposition."""

from __future__ import annotations

import json
import re
import time
import timeit
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from relay.metrics import Metrics
from tests.relay.conftest import RelayFactory, RunningRelay, eventually
from tests.relay.fake_agent import FakeAgent, FakeRequest
from wire import ErrorCode

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "relay.json"

#: PromQL words that are not metric names (functions, keywords, Grafana variables).
_PROMQL_WORDS = frozenset(
    {
        "sum",
        "by",
        "without",
        "rate",
        "irate",
        "increase",
        "histogram_quantile",
        "topk",
        "le",
        "max",
        "min",
        "avg",
        "count",
    }
)


async def _handler(request: FakeRequest) -> None:
    if request.target == "/fail":
        request.reset(ErrorCode.INTERNAL_ERROR)
        return
    await request.read_body()
    await request.respond(200)
    await request.send(b"12345", end=True)


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an exposition: (name, sorted labels) -> value."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[s.name, tuple(sorted(s.labels.items()))] = s.value
    return out


async def _traffic(relay: RunningRelay, token: str | None = None) -> str:
    """Some requests through a FakeAgent (a 200, a 502 target_failed, a 404
    unknown_tunnel), then the exposition."""
    headers = {"authorization": f"Bearer {token}"} if token else {}
    async with (
        relay.client() as client,
        FakeAgent(relay.url, _handler, token=relay.issue("demo"), name="demo") as agent,
    ):
        await agent.wait_welcome()
        assert (await client.post("/a/demo/", content=b"abc")).status_code == 200
        assert (await client.get("/a/demo/fail")).status_code == 502
        assert (await client.get("/a/nobody/")).status_code == 404
        answer = await client.get("/_edge/metrics", headers=headers)
        assert answer.status_code == 200
        return answer.text


async def test_requests_errors_and_histograms_are_counted(relay: RunningRelay) -> None:
    got = samples(await _traffic(relay))
    assert got["edge_requests_total", (("class", "2xx"),)] == 1
    assert got["edge_requests_total", (("class", "4xx"),)] == 1
    assert got["edge_requests_total", (("class", "5xx"),)] == 1
    assert got["edge_relay_errors_total", (("code", "unknown_tunnel"),)] == 1
    assert got["edge_relay_errors_total", (("code", "target_failed"),)] == 1
    # Forwarded requests (the 200 and the 502) have a duration; the 404 was never sent.
    assert got["edge_request_duration_seconds_count", ()] == 2
    assert got["edge_request_duration_seconds_bucket", (("le", "+Inf"),)] == 2
    assert got["edge_request_duration_seconds_sum", ()] > 0
    # Only the 200 had a response from the agent.
    assert got["edge_request_first_byte_seconds_count", ()] == 1
    assert got["edge_tunnel_requests_total", (("class", "2xx"), ("tunnel", "demo"))] == 1
    assert got["edge_tunnel_requests_total", (("class", "5xx"), ("tunnel", "demo"))] == 1
    assert got["edge_stream_resets_total", (("by", "agent"), ("code", "INTERNAL_ERROR"))] == 1
    assert got["edge_agent_sessions_total", ()] == 1
    assert got["edge_agent_reconnects_total", ()] == 0
    assert got["edge_agents_connected", ()] == 1
    assert got["edge_tunnel_bytes_total", (("direction", "out"),)] > 5


async def test_reconnects_and_tunnel_series_removed(relay: RunningRelay) -> None:
    token = relay.issue("demo")
    for _ in range(2):
        async with FakeAgent(relay.url, _handler, token=token, name="demo") as agent:
            await agent.wait_welcome()
            async with relay.client() as client:
                assert (await client.get("/a/demo/")).status_code == 200
        await eventually(lambda: not relay.state.registry.in_use("demo"))
    got = samples(relay.state.metrics.render().decode())
    assert got["edge_agent_sessions_total", ()] == 2
    assert got["edge_agent_reconnects_total", ()] == 1
    # The tunnel's series went with its last session.
    assert not [k for k in got if k[0] == "edge_tunnel_requests_total"]
    assert got["edge_requests_total", (("class", "2xx"),)] == 2


async def test_metrics_token(relay_factory: RelayFactory) -> None:
    relay = await relay_factory(metrics_token="s3cret")
    async with relay.client() as client:
        refused = await client.get("/_edge/metrics")
        assert refused.status_code == 401
        assert refused.headers["x-edge-error"] == "metrics_unauthorized"
        assert refused.json()["error"]["code"] == "metrics_unauthorized"
        wrong = await client.get("/_edge/metrics", headers={"authorization": "Bearer nope"})
        assert wrong.status_code == 401
        basic = await client.get("/_edge/metrics", headers={"authorization": "Basic s3cret"})
        assert basic.status_code == 401
        ok = await client.get("/_edge/metrics", headers={"authorization": "Bearer s3cret"})
        assert ok.status_code == 200 and "edge_requests_total" in ok.text
        # Other /_edge/ paths stay open.
        assert (await client.get("/_edge/healthz")).status_code == 200


async def test_per_tunnel_cap(relay_factory: RelayFactory) -> None:
    relay = await relay_factory(metrics_per_tunnel=1)
    async with (
        relay.client() as client,
        FakeAgent(relay.url, _handler, token=relay.issue("one"), name="one") as one,
    ):
        await one.wait_welcome()
        assert (await client.get("/a/one/")).status_code == 200  # 1 tunnel: a series
        async with FakeAgent(relay.url, _handler, token=relay.issue("two"), name="two") as two:
            await two.wait_welcome()
            assert (await client.get("/a/two/")).status_code == 200  # 2 > 1: none
            assert (await client.get("/a/one/")).status_code == 200  # kept its series
            got = samples(relay.state.metrics.render().decode())
    tunnels = {dict(k[1]).get("tunnel") for k in got if k[0] == "edge_tunnel_requests_total"}
    assert tunnels == {"one"}
    assert got["edge_tunnel_requests_total", (("class", "2xx"), ("tunnel", "one"))] == 2
    assert got["edge_requests_total", (("class", "2xx"),)] == 3


async def test_per_tunnel_off(relay_factory: RelayFactory) -> None:
    relay = await relay_factory(metrics_per_tunnel=0)
    got = samples(await _traffic(relay))
    assert not [k for k in got if k[0] == "edge_tunnel_requests_total"]


def test_private_registries() -> None:
    """Two relays in one process count apart (no global registry)."""
    a, b = Metrics(), Metrics()
    a.request_done(200)
    assert samples(a.render().decode())["edge_requests_total", (("class", "2xx"),)] == 1
    assert samples(b.render().decode())["edge_requests_total", (("class", "2xx"),)] == 0


def test_cost_per_request() -> None:
    """What a forwarded request does to the metrics stays cheap (measured ~2 us)."""
    metrics = Metrics()
    metrics.tunnels = lambda: 1
    started = time.monotonic()

    def request() -> None:
        metrics.first_byte(started)
        metrics.request_done(200, None, "demo", started)

    n = 100_000
    per_request = min(timeit.repeat(request, number=n, repeat=3)) / n
    # 3 us is the target; the margin is for slow, shared test machines.
    assert per_request < 10e-6, per_request


def _queries(node: object) -> list[str]:
    """Panel queries (``expr``) and template variable queries (``label_values(m, l)``:
    the metric only)."""
    if isinstance(node, dict):
        found = [node["expr"]] if isinstance(node.get("expr"), str) else []
        query = node.get("query")
        if isinstance(query, str) and query.startswith("label_values("):
            found.append(query[len("label_values(") :].split(",")[0])
        return found + [q for v in node.values() for q in _queries(v)]
    if isinstance(node, list):
        return [q for v in node for q in _queries(v)]
    return []


def _metric_names(expr: str) -> set[str]:
    """Identifiers of a PromQL expression that are metric names (not functions, labels,
    strings, durations or Grafana variables)."""
    text = re.sub(r'"[^"]*"', "", expr)  # label values
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # ranges
    text = re.sub(r"\b(by|without)\s*\([^)]*\)", "", text)  # grouping labels
    names = set(re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*", text))
    return {n for n in names if n not in _PROMQL_WORDS}


async def test_dashboard_queries_name_exported_metrics(relay: RunningRelay) -> None:
    text = await _traffic(relay)
    names = {name for name, _ in samples(text)}
    # Families without samples yet (no refusal happened) are exported too: their # TYPE.
    for kind_line in re.findall(r"^# TYPE (\S+) (\S+)$", text, re.MULTILINE):
        name, kind = kind_line
        names.add(name)
        if kind == "histogram":
            names |= {name + "_bucket", name + "_count", name + "_sum"}
    dashboard = json.loads(DASHBOARD.read_text())
    queries = _queries(dashboard)
    assert len(queries) >= 10
    used = set()
    for expr in queries:
        found = _metric_names(expr)
        assert found, expr
        missing = found - names
        assert not missing, (expr, missing)
        used |= found
    # The dashboard covers what the issue asks for.
    for wanted in (
        "edge_requests_total",
        "edge_relay_errors_total",
        "edge_request_duration_seconds_bucket",
        "edge_request_first_byte_seconds_bucket",
        "edge_tunnel_bytes_total",
        "edge_agents_connected",
        "edge_streams_open",
        "edge_stream_resets_total",
        "edge_agent_refusals_total",
    ):
        assert wanted in used, wanted
