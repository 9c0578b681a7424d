"""The live status screen: the pure model (lines for events and widths, rates and
percentiles with an injected clock), the TTY writer's escapes, and when it is used."""

from __future__ import annotations

import io

import pytest

from edge_agent import screen
from edge_agent.port import ExchangeRecord
from edge_agent.screen import ScreenModel, Status, TtyScreen
from wire import ErrorCode, Welcome


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def record(
    target: str = "/",
    status: int | None = 200,
    ms: float = 12.0,
    reset: ErrorCode | None = None,
    method: str = "GET",
) -> ExchangeRecord:
    return ExchangeRecord(1, method, target, status, ms, 10, 20, None, reset)


ONLINE = Status(
    "online",
    urls=("https://demo.relay.example/",),
    inspector="http://127.0.0.1:4040",
    latency=0.0234,
    open_streams=2,
)


def test_lines_show_state_urls_inspector_latency_and_counts() -> None:
    model = ScreenModel("http://127.0.0.1:8000", clock=Clock())
    model.request(record("/a", 200, 12))
    model.request(record("/b", 404, 30, method="POST"))
    lines = model.lines(ONLINE, 120)
    text = "\n".join(lines)
    assert "Session Status    online" in lines
    assert "Forwarding        https://demo.relay.example/ -> http://127.0.0.1:8000" in lines
    assert "Inspector         http://127.0.0.1:4040" in lines
    assert "Latency           23 ms" in lines
    assert "Connections       open 2   2 req/min   p50 12 ms   p90 30 ms" in lines
    rows = lines[lines.index("-------------") + 1 :]
    assert rows[0].split() == ["POST", "/b", "404", "30", "ms"]  # newest first
    assert rows[1].split() == ["GET", "/a", "200", "12", "ms"]
    assert "\x1b" not in text


def test_states_before_and_between_sessions() -> None:
    model = ScreenModel("x")
    assert "Session Status    connecting" in model.lines(Status("connecting"), 80)
    lines = model.lines(Status("reconnecting", retry_in=4.2), 80)
    assert "Session Status    reconnecting in 5 s" in lines
    assert "Latency           -" in lines
    assert "Connections       open 0   0 req/min   p50 -   p90 -" in lines
    assert "Session Status    draining" in model.lines(Status("draining"), 80)


def test_reset_codes_and_hostile_targets() -> None:
    model = ScreenModel("x")
    model.request(record("/slow", None, 5000, ErrorCode.CANCEL))
    model.request(record("/x\x1b[2J\u00e9", 502, 3.25, ErrorCode.TARGET_ERROR))
    rows = model.lines(ONLINE, 200)[-2:]
    assert rows[0].split() == ["GET", "/x?[2J?", "502", "TARGET_ERROR", "3.2", "ms"]
    assert rows[1].split() == ["GET", "/slow", "CANCEL", "5000", "ms"]


def test_only_the_last_ten_requests_are_listed() -> None:
    model = ScreenModel("x")
    for n in range(25):
        model.request(record(f"/r{n}"))
    lines = model.lines(ONLINE, 80)
    rows = lines[lines.index("-------------") + 1 :]
    assert [row.split()[1] for row in rows] == [f"/r{n}" for n in range(24, 14, -1)]
    assert any("open 2   25 req/min" in line for line in lines)


@pytest.mark.parametrize("width", [1, 10, 33, 79])
def test_narrow_terminals_truncate_never_wrap(width: int) -> None:
    model = ScreenModel("http://127.0.0.1:8000")
    model.request(record("/" + "p" * 300))
    lines = model.lines(ONLINE, width)
    assert all(len(line) <= width for line in lines)
    assert lines[2].startswith("Session Status"[:width])


def test_requests_per_minute_and_percentiles_over_the_last_minute() -> None:
    clock = Clock()
    model = ScreenModel("x", clock=clock)
    for ms in range(1, 11):  # 1..10 ms, one per second
        model.request(record(ms=float(ms)))
        clock.now += 1
    assert model.per_minute() == 10
    assert model.percentiles() == (5.0, 9.0)  # nearest rank
    clock.now += 53.5  # the first four are now over a minute old
    assert model.per_minute() == 6
    assert model.percentiles() == (7.0, 10.0)
    clock.now += 60
    assert model.per_minute() == 0
    assert model.percentiles() is None


def test_one_request_is_its_own_percentiles() -> None:
    model = ScreenModel("x", clock=Clock())
    model.request(record(ms=42.0))
    assert model.percentiles() == (42.0, 42.0)


def test_notes_show_under_the_status() -> None:
    model = ScreenModel("x")
    model.note("Draining: finishing requests in flight (again to quit now)")
    lines = model.lines(Status("draining"), 80)
    assert lines.index("Draining: finishing requests in flight (again to quit now)") < lines.index(
        "HTTP Requests"
    )


class Source:
    state = "online"
    public_urls = ("https://demo.relay.example/",)
    latency: float | None = 0.002
    active_streams = 0
    retry_at: float | None = None


def test_writer_redraws_in_place_only_on_change(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "60")
    monkeypatch.setenv("LINES", "30")
    out = io.StringIO()
    tty = TtyScreen("http://127.0.0.1:8000", out)
    source = Source()
    tty.draw(tty.status(source))
    first = out.getvalue()
    assert first.startswith(screen.HIDE_CURSOR)
    drawn = first.count("\n")
    tty.draw(tty.status(source))
    assert out.getvalue() == first  # nothing changed: nothing written
    tty.request(record("/new"))
    tty.draw(tty.status(source))
    second = out.getvalue()[len(first) :]
    assert second.startswith(f"\r\x1b[{drawn}A")  # back to the screen's first line
    assert "/new" in second and second.endswith(screen.CLEAR_BELOW)
    tty.close(source)
    assert out.getvalue().endswith(screen.SHOW_CURSOR)


def test_writer_starts_over_on_resize(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LINES", "30")
    monkeypatch.setenv("COLUMNS", "100")
    out = io.StringIO()
    tty = TtyScreen("x", out)
    tty.draw(tty.status(Source()))
    monkeypatch.setenv("COLUMNS", "20")
    before = len(out.getvalue())
    tty.draw(tty.status(Source()))
    redraw = out.getvalue()[before:]
    assert redraw.startswith(screen.HOME_CLEAR)
    assert all(len(line.replace(screen.CLEAR_LINE, "")) <= 19 for line in redraw.split("\n")[1:])


def test_writer_keeps_to_the_terminal_height(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LINES", "8")
    monkeypatch.setenv("COLUMNS", "80")
    out = io.StringIO()
    tty = TtyScreen("x", out)
    tty.draw(tty.status(Source()))
    assert out.getvalue().count("\n") == 7


class FakeOut(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def test_screen_only_on_a_terminal_with_text_logs() -> None:
    assert screen.wanted(FakeOut(True), "text", 0, no_screen=False)
    assert not screen.wanted(FakeOut(False), "text", 0, no_screen=False)  # piped
    assert not screen.wanted(FakeOut(True), "json", 0, no_screen=False)
    assert not screen.wanted(FakeOut(True), "text", 1, no_screen=False)  # -v: log lines
    assert not screen.wanted(FakeOut(True), "text", 0, no_screen=True)


def test_a_takeover_is_noted_on_the_first_welcome_only() -> None:
    tty = screen.TtyScreen("http://127.0.0.1:8000", out=io.StringIO())
    took = Welcome("demo", ("https://relay.example/a/demo/",), 8, 1, "192.0.2.7\x1b[2J")
    tty.ready(took)
    tty.ready(took)  # a reconnect: the session replaced was most likely our own
    assert tty.model.notes == [
        "Replaced the session that held demo (from 192.0.2.7?[2J): "
        "the relay told that agent, which stops"
    ]


def test_a_row_without_status_or_reset_says_so() -> None:
    model = ScreenModel("x", clock=lambda: 0.0)
    model.request(record("/cut", None, 3.0))
    assert model.rows[0].outcome == "NO_STATUS"
