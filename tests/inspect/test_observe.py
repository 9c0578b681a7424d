"""The Recorder fed with byte literals: HTTP/1.1 (plain, chunked, split anywhere), SSE,
WebSocket frames after a 101, A2A JSON-RPC facts, limits and malformed bytes."""

from __future__ import annotations

import json

from edge_agent.inspect.observe import BACKLOG, Recorder
from edge_agent.inspect.store import Exchange, Store


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def recorder(**store_args: int) -> tuple[Recorder, Store, Clock]:
    clock = Clock()
    store = Store(clock=clock, wall=lambda: 1_700_000_000.0, **store_args)
    return Recorder(store), store, clock


def exchange(store: Store, rid: int) -> Exchange:
    found = store.get(rid)
    assert found is not None
    return found


def feed_bytewise(call: object, xid: str, data: bytes) -> None:
    for i in range(len(data)):
        call(xid, data[i : i + 1])  # type: ignore[operator]


GET = b"GET /items?q=1 HTTP/1.1\r\nHost: example\r\nAuthorization: Bearer s3cret\r\n\r\n"
OK_JSON = (
    b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{"a": true}'
)


def test_a_plain_exchange_gives_method_path_status_heads_body_and_timing() -> None:
    rec, store, clock = recorder()
    rid = rec.opened("x")
    clock.now += 0.002
    rec.request_bytes("x", GET)
    clock.now += 0.010
    rec.response_bytes("x", OK_JSON)
    clock.now += 0.003
    rec.closed("x")
    ex = exchange(store, rid)
    assert (ex.method, ex.path, ex.status, ex.state) == ("GET", "/items?q=1", 200, "done")
    assert ("Authorization", "Bearer s3cret") in ex.request.headers
    assert bytes(ex.response.body) == b'{"a": true}' and ex.response.complete
    assert ex.ms(ex.request.first_at) == 2.0
    assert ex.ms(ex.response.first_at) == 12.0
    assert ex.ms(ex.done_at) == 15.0
    assert rec.open_exchanges == 0


def test_bytes_split_at_every_position_parse_the_same() -> None:
    rec, store, _ = recorder()
    rid = rec.opened("x")
    feed_bytewise(rec.request_bytes, "x", GET)
    feed_bytewise(rec.response_bytes, "x", OK_JSON)
    rec.closed("x")
    ex = exchange(store, rid)
    assert (ex.method, ex.path, ex.status) == ("GET", "/items?q=1", 200)
    assert bytes(ex.response.body) == b'{"a": true}'


def test_chunked_bodies_are_decoded_both_ways() -> None:
    rec, store, _ = recorder()
    rid = rec.opened(1)
    rec.request_bytes(1, b"POST /up HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n")
    rec.request_bytes(1, b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
    rec.response_bytes(1, b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n")
    rec.response_bytes(1, b"3\r\nabc\r\n0\r\n\r\n")
    rec.closed(1)
    ex = exchange(store, rid)
    assert bytes(ex.request.body) == b"hello world" and ex.request.complete
    assert bytes(ex.response.body) == b"abc" and ex.status == 201


def test_interim_100_continue_is_skipped() -> None:
    rec, store, _ = recorder()
    rid = rec.opened(1)
    rec.request_bytes(1, b"PUT /f HTTP/1.1\r\nContent-Length: 0\r\n\r\n")
    rec.response_bytes(1, b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\nX-A: 1\r\n\r\n")
    rec.closed(1)
    ex = exchange(store, rid)
    assert ex.status == 204 and ex.response.headers == [("X-A", "1")]


def test_a_body_that_ends_with_the_connection_completes_at_close() -> None:
    rec, store, _ = recorder()
    rid = rec.opened(1)
    rec.request_bytes(1, b"GET / HTTP/1.1\r\n\r\n")
    rec.response_bytes(1, b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nsome ")
    rec.response_bytes(1, b"text")
    assert not exchange(store, rid).response.complete
    rec.closed(1)
    ex = exchange(store, rid)
    assert bytes(ex.response.body) == b"some text" and ex.response.complete


def test_bodies_beyond_the_limit_keep_their_size_only() -> None:
    rec, store, _ = recorder(body_limit=4)
    rid = rec.opened(1)
    rec.request_bytes(1, b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\n0123456789")
    rec.closed(1)
    side = exchange(store, rid).request
    assert (bytes(side.body), side.size, side.truncated) == (b"0123", 10, True)


def test_a_head_request_has_no_body_whatever_its_response_says() -> None:
    rec, store, _ = recorder()
    rid = rec.opened(1)
    rec.request_bytes(1, b"HEAD /big HTTP/1.1\r\n\r\n")
    rec.response_bytes(1, b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
    ex = exchange(store, rid)
    assert ex.status == 200 and ex.response.complete and ex.response.size == 0


def test_malformed_bytes_stop_the_parse_of_that_side_only() -> None:
    rec, store, _ = recorder()
    rid = rec.opened(1)
    rec.request_bytes(1, b"GET / HTTP/1.1\r\n\r\n")
    rec.response_bytes(1, b"NOT HTTP AT ALL\r\n\r\n")
    rec.response_bytes(1, b"more")
    rec.closed(1)
    ex = exchange(store, rid)
    assert ex.method == "GET" and ex.status is None and ex.state == "done"
    assert ex.error is not None and "could not parse the response" in ex.error


def test_errors_and_duplicates_are_recorded() -> None:
    rec, store, _ = recorder()
    rid = rec.opened(1)
    rec.request_bytes(1, GET)
    rec.mark_duplicate(1)
    rec.closed(1, "TargetUnreachable: refused")
    ex = exchange(store, rid)
    assert ex.duplicate and ex.state == "error" and ex.error == "TargetUnreachable: refused"
    rec.request_bytes(1, b"late bytes are ignored")
    rec.closed(1)


def test_the_store_keeps_the_last_n_exchanges() -> None:
    rec, store, _ = recorder(keep=3)
    ids = [rec.opened(n) for n in range(5)]
    assert [ex.id for ex in store.newest_first()] == ids[:1:-1]
    assert store.get(ids[0]) is None
    rec.request_bytes(0, GET)  # evicted but still open: parsed, never shown, no error
    rec.closed(0)


# -- SSE ---------------------------------------------------------------------------------

SSE_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
)


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data)


def test_sse_events_are_split_and_timed() -> None:
    rec, store, clock = recorder()
    rid = rec.opened(1)
    rec.request_bytes(1, b"GET /events HTTP/1.1\r\n\r\n")
    rec.response_bytes(1, SSE_HEAD)
    clock.now += 0.1
    rec.response_bytes(
        1, chunk(b": ping\r\n\r\nevent: tick\r\nid: 7\r\ndata: one\r\ndata: two\r\n\r\ndata: th")
    )
    clock.now += 0.2
    rec.response_bytes(1, chunk(b"ree\n\n") + b"0\r\n\r\n")
    rec.closed(1)
    ex = exchange(store, rid)
    assert ex.kind == "sse"
    events = [(e["t"], e["event"], e["id"], e["data"]) for e in ex.timeline]
    assert events == [(100.0, "tick", "7", "one\ntwo"), (300.0, "", "7", "three")]


def test_an_sse_line_end_split_between_cr_and_lf() -> None:
    rec, store, _ = recorder()
    rid = rec.opened(1)
    rec.request_bytes(1, b"GET / HTTP/1.1\r\n\r\n")
    rec.response_bytes(1, b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n")
    for part in (b"data: a\r", b"\n\r", b"\n", b"data: b\r\r", b"data: c\n\n"):
        rec.response_bytes(1, part)
    rec.closed(1)
    assert [e["data"] for e in exchange(store, rid).timeline] == ["a", "b", "c"]


# -- A2A ---------------------------------------------------------------------------------

STREAM_CALL = json.dumps(
    {
        "jsonrpc": "2.0",
        "id": 7,
        "method": "SendStreamingMessage",
        "params": {"message": {"role": "ROLE_USER", "messageId": "m-1", "parts": [{"text": "a"}]}},
    }
).encode()


def sse_data(doc: object) -> bytes:
    return b"data: " + json.dumps(doc).encode() + b"\r\n\r\n"


def test_a2a_streaming_call_gives_method_ids_and_event_labels() -> None:
    rec, store, _ = recorder()
    rid = rec.opened(1)
    rec.request_bytes(
        1,
        b"POST /a2a HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%b"
        % (len(STREAM_CALL), STREAM_CALL),
    )
    rec.response_bytes(1, SSE_HEAD)
    task = {"id": "t-1", "contextId": "c-1", "status": {"state": "TASK_STATE_SUBMITTED"}}
    update = {"taskId": "t-1", "contextId": "c-1", "status": {"state": "TASK_STATE_COMPLETED"}}
    artifact = {"taskId": "t-1", "contextId": "c-1", "artifact": {"parts": [{"text": "a"}]}}
    for result in ({"task": task}, {"artifactUpdate": artifact}, {"statusUpdate": update}):
        rec.response_bytes(1, chunk(sse_data({"jsonrpc": "2.0", "id": 7, "result": result})))
    rec.response_bytes(1, b"0\r\n\r\n")
    rec.closed(1)
    ex = exchange(store, rid)
    assert ex.a2a == {
        "method": "SendStreamingMessage",
        "id": 7,
        "messageId": "m-1",
        "taskIds": ["t-1"],
        "contextIds": ["c-1"],
    }
    assert [e["a2a"] for e in ex.timeline] == [
        "task TASK_STATE_SUBMITTED",
        "artifactUpdate",
        "statusUpdate TASK_STATE_COMPLETED",
    ]


def test_a2a_get_task_and_a_plain_json_answer() -> None:
    rec, store, _ = recorder()
    rid = rec.opened(1)
    body = b'{"jsonrpc":"2.0","id":"r2","method":"tasks/get","params":{"id":"t-9"}}'
    rec.request_bytes(1, b"POST / HTTP/1.1\r\nContent-Length: %d\r\n\r\n%b" % (len(body), body))
    answer = b'{"jsonrpc":"2.0","id":"r2","result":{"kind":"task","id":"t-9","contextId":"c-9"}}'
    rec.response_bytes(
        1, b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%b" % (len(answer), answer)
    )
    rec.closed(1)
    facts = exchange(store, rid).a2a
    assert facts is not None
    assert (facts["method"], facts["taskIds"], facts["contextIds"]) == (
        "tasks/get",
        ["t-9"],
        ["c-9"],
    )


def test_json_that_is_not_json_rpc_has_no_a2a_facts() -> None:
    rec, store, _ = recorder()
    rid = rec.opened(1)
    rec.request_bytes(1, b'POST / HTTP/1.1\r\nContent-Length: 9\r\n\r\n{"a": 1} ')
    rec.closed(1)
    assert exchange(store, rid).a2a is None


# -- WebSocket ----------------------------------------------------------------------------

UPGRADE = (
    b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)
SWITCH = (
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
)


def masked_frame(
    opcode: int, payload: bytes, fin: bool = True, key: bytes = b"\x37\xfa\x21\x3d"
) -> bytes:
    masked = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    first = (0x80 if fin else 0) | opcode
    if len(payload) < 126:
        length = bytes([0x80 | len(payload)])
    else:
        length = bytes([0x80 | 126]) + len(payload).to_bytes(2, "big")
    return bytes([first]) + length + key + masked


def test_websocket_messages_after_a_101_both_ways_with_times() -> None:
    rec, store, clock = recorder()
    rid = rec.opened(1)
    rec.request_bytes(1, UPGRADE)
    rec.response_bytes(1, SWITCH + b"\x81\x05Hello")  # the first server frame rides along
    clock.now += 0.05
    # RFC 6455 5.7: a masked "Hello", then a fragmented text with a ping in between.
    rec.request_bytes(1, b"\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58")
    feed_bytewise(
        rec.request_bytes,
        1,
        masked_frame(1, b"Hel", fin=False) + masked_frame(9, b"p") + masked_frame(0, b"lo!"),
    )
    clock.now += 0.05
    rec.response_bytes(1, b"\x82\x7e\x01\x00" + bytes(256) + b"\x88\x02\x03\xe8")
    rec.closed(1)
    ex = exchange(store, rid)
    assert ex.kind == "websocket" and ex.status == 101
    seen = [
        (e["t"], e["dir"], e["kind"], e["size"], e.get("data", e.get("hex"))) for e in ex.timeline
    ]
    assert seen == [
        (0.0, "out", "text", 5, "Hello"),
        (50.0, "in", "text", 5, "Hello"),
        (50.0, "in", "ping", 1, "70"),
        (50.0, "in", "text", 6, "Hello!"),
        (100.0, "out", "binary", 256, " ".join(["00"] * 64)),
        (100.0, "out", "close", 2, "1000"),
    ]


def test_a_refused_upgrade_stays_http() -> None:
    rec, store, _ = recorder()
    rid = rec.opened(1)
    rec.request_bytes(1, UPGRADE)
    rec.response_bytes(1, b"HTTP/1.1 403 Forbidden\r\nContent-Length: 2\r\n\r\nno")
    rec.closed(1)
    ex = exchange(store, rid)
    assert ex.kind == "http" and ex.status == 403 and bytes(ex.response.body) == b"no"


def test_the_parse_waits_until_the_row_is_read_or_the_backlog_fills() -> None:
    rec, store, clock = recorder()
    rid = rec.opened(1)
    rec.request_bytes(1, GET)
    clock.now += 0.5
    rec.response_bytes(1, SSE_HEAD + chunk(b"data: a\n\n"))
    raw = store._rows[rid]  # what the store holds, before anyone read it
    assert raw.method == "" and raw.timeline == []
    ex = exchange(store, rid)  # reading it catches up, at the bytes' arrival times
    assert ex.method == "GET" and [e["t"] for e in ex.timeline] == [500.0]
    rec.response_bytes(1, chunk(b": " + b"x" * BACKLOG + b"\n\n"))  # a full backlog: parsed
    assert len(raw.response.body) > BACKLOG
    view = memoryview(bytearray(chunk(b"data: b\n\n")))
    rec.response_bytes(1, view)  # not bytes: copied, the caller may reuse its buffer
    view[:] = b"\0" * len(view)
    rec.closed(1)
    assert [e["data"] for e in exchange(store, rid).timeline][-1] == "b"


def test_timeline_data_is_bounded_by_the_body_limit() -> None:
    rec, store, _ = recorder(body_limit=10)
    rid = rec.opened(1)
    rec.request_bytes(1, b"GET / HTTP/1.1\r\n\r\n")
    rec.response_bytes(1, b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n")
    rec.response_bytes(1, b"data: 123456\n\ndata: 7890\n\ndata: abcdef\n\n")
    rec.closed(1)
    entries = exchange(store, rid).timeline
    assert [(e.get("data"), e["size"], e.get("cut", False)) for e in entries] == [
        ("123456", 6, False),
        ("7890", 4, False),
        (None, 6, True),
    ]
