"""Every example frame in docs/protocol.md, pinned byte for byte.

Examples are fenced blocks tagged ``wire-frame``::

    [agent -> relay | relay -> agent]  TYPE  stream=N  flags=NONE|FIN|FIN+CLOSE
    <payload line>             json: {...} | data: b"..." | kind: KIND  data: b"..."
                               | increment: N
                               | code: NAME  reason: "..." | last: N  code: NAME  reason: "..."
    01 00 00 00 00 00 00 00    hex, up to 16 bytes a line; text after two spaces is a comment

For each block the hex must decode to the stated frame and payload, and the encoder must
produce exactly the hex from that frame. The blocks of the worked example must also be
what a real relay/agent Connection pair sends, in that order (replayed below).

``python -m tests.wire.test_protocol_doc`` prints the canonical block for each message of
the worked example, for editing the document.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import pytest

from wire import (
    IDLE_FRAME_ALLOWANCE,
    IDLE_FRAMES_PER_STREAM,
    MAX_PAYLOAD,
    Connection,
    ErrorCode,
    Flag,
    FrameError,
    FrameType,
    Hello,
    Role,
    StreamKind,
    Welcome,
)
from wire import frames as f

DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"
_BLOCK = re.compile(r"^```wire-frame\n(.*?)^```", re.M | re.S)
_HEAD = re.compile(
    r"^(?:(?P<src>agent|relay) -> (?P<dst>agent|relay)\s+)?"
    r"(?P<type>[A-Z]+)\s+stream=(?P<sid>\d+)\s+flags=(?P<flags>NONE|FIN|FIN\+CLOSE)$"
)
_HEX = re.compile(r"^([0-9a-f]{2}(?: [0-9a-f]{2})*)(?:\s{2,}.*)?$")

_JSON_CODECS = {
    FrameType.HELLO: (f.decode_hello, f.encode_hello),
    FrameType.WELCOME: (f.decode_welcome, f.encode_welcome),
}
_FLAGS = {"NONE": Flag.NONE, "FIN": Flag.FIN, "FIN+CLOSE": Flag.FIN | Flag.CLOSE}
_OPEN = re.compile(r"^kind: (?P<kind>[A-Z]+)  data: (?P<data>.*)$")


@dataclasses.dataclass
class Example:
    line: int  # in the document, for failure messages
    direction: str | None  # "agent -> relay", "relay -> agent" or None
    type: FrameType
    stream_id: int
    flags: Flag
    payload_line: str
    message: bytes


def parse_examples(text: str) -> list[Example]:
    examples = []
    for match in _BLOCK.finditer(text):
        lines = match.group(1).strip("\n").split("\n")
        head = _HEAD.match(lines[0].strip())
        assert head, f"bad example header: {lines[0]!r}"
        hex_lines = [_HEX.match(line.strip()) for line in lines[2:]]
        assert all(hex_lines), f"bad hex line in example {lines[0]!r}"
        examples.append(
            Example(
                line=text.count("\n", 0, match.start()) + 1,
                direction=f"{head['src']} -> {head['dst']}" if head["src"] else None,
                type=FrameType[head["type"]],
                stream_id=int(head["sid"]),
                flags=_FLAGS[head["flags"]],
                payload_line=lines[1].strip(),
                message=bytes.fromhex(" ".join(m.group(1) for m in hex_lines if m)),
            )
        )
    return examples


def _fields(line: str) -> dict[str, str]:
    return dict(re.findall(r'(\w+): ("(?:[^"\\]|\\.)*"|\S+)', line))


def expected_payload(example: Example) -> bytes:
    """The payload the example's text states, built with the encoders."""
    line, ftype = example.payload_line, example.type
    if ftype in _JSON_CODECS:
        assert line.startswith("json: ")
        payload = line.removeprefix("json: ").encode()
        decode, encode = _JSON_CODECS[ftype]
        assert encode(decode(payload)) == payload  # type: ignore[operator]
        return payload
    if ftype is FrameType.OPEN:
        match = _OPEN.match(line)
        assert match, f"bad OPEN payload line {line!r}"
        first = ast.literal_eval(match["data"])
        assert isinstance(first, bytes)
        return f.encode_open(StreamKind[match["kind"]], first)
    if ftype is FrameType.DATA:
        assert line.startswith("data: ")
        data = ast.literal_eval(line.removeprefix("data: "))
        assert isinstance(data, bytes)
        return data
    fields = _fields(line)
    if ftype is FrameType.WINDOW:
        return f.encode_window(int(fields["increment"]))
    code, reason = ErrorCode[fields["code"]], json.loads(fields["reason"])
    if ftype is FrameType.RESET:
        return f.encode_reason(code, reason)
    return f.encode_goaway(int(fields["last"]), code, reason)


TEXT = DOC.read_text(encoding="utf-8")
EXAMPLES = parse_examples(TEXT)
_SCHEMA = re.compile(r"^<!-- schema: ([A-Z]+) -->\n```json\n(.*?)^```", re.M | re.S)
SCHEMAS = {FrameType[name]: json.loads(body) for name, body in _SCHEMA.findall(TEXT)}


def test_the_document_has_examples_of_every_frame_kind() -> None:
    assert {e.type for e in EXAMPLES} == set(FrameType)


@pytest.mark.parametrize("example", EXAMPLES, ids=[f"line{e.line}" for e in EXAMPLES])
def test_example_frame(example: Example) -> None:
    payload = expected_payload(example)
    encoded = f.encode_parts(example.type, example.stream_id, payload, example.flags)
    assert example.message == encoded, f"docs/protocol.md line {example.line}"
    assert f.decode_frame(example.message) == f.Frame(
        example.type, example.stream_id, payload, example.flags
    )
    if example.type in _JSON_CODECS:
        decode, _ = _JSON_CODECS[example.type]
        decode(payload)


def test_every_json_payload_has_a_schema() -> None:
    assert set(SCHEMAS) == set(_JSON_CODECS)


@pytest.mark.parametrize(
    "example",
    [e for e in EXAMPLES if e.type in _JSON_CODECS],
    ids=[f"line{e.line}" for e in EXAMPLES if e.type in _JSON_CODECS],
)
def test_json_examples_follow_their_schema(example: Example) -> None:
    assert not schema_errors(SCHEMAS[example.type], json.loads(example.message[8:]))


@pytest.mark.parametrize(
    ("ftype", "value"),
    [
        (FrameType.HELLO, {"name": 5}),
        (FrameType.HELLO, {"caller_auth": [{"scheme": "digest", "sha256": "0" * 64}]}),
        (FrameType.HELLO, {"caller_auth": [{"scheme": "basic", "sha256": "A" * 64}]}),
        (FrameType.HELLO, {"agent": "x" * 201}),
        (FrameType.HELLO, {"tunnel": "udp"}),
        (
            FrameType.WELCOME,
            {"name": "a", "urls": [], "max_streams": 1, "max_request_body": 0, "tunnel": "ssh"},
        ),
        (FrameType.WELCOME, {"name": "d", "urls": [], "max_streams": 0, "max_request_body": 0}),
        (FrameType.WELCOME, {"name": "d", "urls": []}),
        (FrameType.HELLO, {"caller_auth": [{"scheme": "bearer"}]}),
        (FrameType.HELLO, {"caller_auth": [{"scheme": "bearer", "sha256": "0" * 64}] * 9}),
        (FrameType.WELCOME, {"name": "d", "urls": "u", "max_streams": 1, "max_request_body": 0}),
        (FrameType.WELCOME, {"name": 1, "urls": [], "max_streams": 1, "max_request_body": 0}),
        (FrameType.WELCOME, {"name": "d", "urls": [], "max_streams": 1, "max_request_body": -1}),
        (
            FrameType.WELCOME,
            {"name": "d", "urls": [], "max_streams": 1, "max_request_body": 0, "replaced": 7},
        ),
        (
            FrameType.WELCOME,
            {
                "name": "d",
                "urls": [],
                "max_streams": 1,
                "max_request_body": 0,
                "replaced": "x" * 201,
            },
        ),
    ],
)
def test_schemas_reject_what_the_decoders_reject(ftype: FrameType, value: object) -> None:
    decode, _ = _JSON_CODECS[ftype]
    with pytest.raises(FrameError):
        decode(json.dumps(value).encode())
    assert schema_errors(SCHEMAS[ftype], value)


_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "integer": (int,),
    "null": (type(None),),
}


def schema_errors(schema: dict[str, Any], value: Any, at: str = "$") -> list[str]:
    """The subset of JSON Schema the document uses, enough to check its examples."""
    kinds = schema.get("type")
    if kinds is not None:
        names = [kinds] if isinstance(kinds, str) else kinds
        if isinstance(value, bool) or not any(isinstance(value, _TYPES[n]) for n in names):
            return [f"{at}: not {kinds}"]
    errors: list[str] = []
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{at}: not one of {schema['enum']}")
    if isinstance(value, str):
        if len(value) > schema.get("maxLength", len(value)):
            errors.append(f"{at}: too long")
        if "pattern" in schema and not re.search(schema["pattern"], value):
            errors.append(f"{at}: does not match {schema['pattern']}")
    if isinstance(value, int):
        if not schema.get("minimum", value) <= value <= schema.get("maximum", value):
            errors.append(f"{at}: out of range")
    if isinstance(value, dict):
        errors += [f"{at}: {key} missing" for key in schema.get("required", []) if key not in value]
        for key, sub in schema.get("properties", {}).items():
            if key in value:
                errors += schema_errors(sub, value[key], f"{at}.{key}")
    if isinstance(value, list):
        if not schema.get("minItems", 0) <= len(value) <= schema.get("maxItems", len(value)):
            errors.append(f"{at}: wrong number of items")
        prefix = schema.get("prefixItems", [])
        for i, item in enumerate(value):
            sub = prefix[i] if i < len(prefix) else schema.get("items")
            if sub is not None:
                errors += schema_errors(sub, item, f"{at}[{i}]")
    return errors


# -- the worked example, replayed -----------------------------------------------------------


#: The worked example's bytes: what the relay's HTTP reader and the target produce.
ECHO_REQUEST = (
    b"POST /echo?x=1 HTTP/1.1\r\nhost: relay.example\r\ncontent-type: text/plain\r\n"
    b"content-length: 5\r\nx-forwarded-prefix: /a/demo\r\n\r\nhello"
)
ECHO_RESPONSE = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 5\r\n\r\nhello"
OLD_REQUEST = b"GET /old HTTP/1.1\r\nhost: relay.example\r\n\r\n"
OLD_RESPONSE = b"HTTP/1.0 200 OK\r\n\r\nbye"
BIG_REQUEST = b"GET /big HTTP/1.1\r\nhost: relay.example\r\n\r\n"
BIG_HEAD = b"HTTP/1.1 200 OK\r\ncontent-length: 1048576\r\n\r\n"
BULK = 128 * 1024  # the download's first body frame, not shown


def worked_example() -> list[tuple[str, bytes]]:
    """The exchange of the worked example, made by a real relay and agent."""
    relay, agent = Connection(Role.RELAY), Connection(Role.AGENT)
    sent: list[tuple[str, bytes]] = []

    def move(src: Connection, shown: bool = True) -> None:
        dst = agent if src is relay else relay
        direction = "relay -> agent" if src is relay else "agent -> relay"
        for message in src.data_to_send():
            dst.receive(message)
            if shown:
                sent.append((direction, message))

    agent.send_hello(Hello("demo", (), "edge-agent/0.2.0"))
    move(agent)
    relay.send_welcome(Welcome("demo", ("https://relay.example/a/demo/",), 100, 10 * 2**20))
    move(relay)
    # One exchange whose request fits in the OPEN; the agent answers in one DATA.
    echo = relay.open_stream(StreamKind.HTTP, ECHO_REQUEST, end_stream=True)
    move(relay)
    agent.consumed(echo, len(ECHO_REQUEST))
    agent.send_data(echo, ECHO_RESPONSE, end_stream=True)
    move(agent)
    relay.consumed(echo, len(ECHO_RESPONSE))
    assert not (relay.is_open(echo) or agent.is_open(echo))
    # A response delimited by the end of the connection: FIN and CLOSE.
    old = relay.open_stream(StreamKind.HTTP, OLD_REQUEST, end_stream=True)
    move(relay)
    agent.consumed(old, len(OLD_REQUEST))
    agent.send_data(old, OLD_RESPONSE, end_stream=True, close=True)
    move(agent)
    relay.consumed(old, len(OLD_RESPONSE))
    # A download the caller abandons.
    big = relay.open_stream(StreamKind.HTTP, BIG_REQUEST, end_stream=True)
    move(relay)
    agent.consumed(big, len(BIG_REQUEST))
    agent.send_data(big, BIG_HEAD)
    move(agent)
    agent.send_data(big, bytes(BULK))  # not shown
    move(agent, shown=False)
    relay.consumed(big, len(BIG_HEAD) + BULK)  # the caller took the head and 128 KiB
    move(relay)
    relay.send_reset(big, ErrorCode.CANCEL, "caller went away")
    move(relay)
    # A raw TCP stream: the relay has no bytes yet; the agent's side speaks first.
    tcp = relay.open_stream(StreamKind.TCP)
    move(relay)
    agent.send_data(tcp, b"SSH-2.0-OpenSSH_9.6\r\n")
    move(agent)
    relay.send_goaway(ErrorCode.NO_ERROR, "relay shutting down")
    move(relay)
    return sent


def test_worked_example_is_what_the_connections_send() -> None:
    shown = [(e.direction, e.message) for e in EXAMPLES if e.direction]
    assert shown == worked_example()


def render(direction: str | None, message: bytes) -> str:
    """The canonical ``wire-frame`` block for one message."""
    frame = f.decode_frame(message)
    flags = "FIN+CLOSE" if frame.close else "FIN" if frame.fin else "NONE"
    head = f"{frame.type.name}  stream={frame.stream_id}  flags={flags}"
    lines = [f"{direction}  {head}" if direction else head, _describe(frame)]
    lines.append(" ".join(f"{b:02x}" for b in message[:8]).ljust(50) + "header")
    body = message[8:]
    for i in range(0, len(body), 16):
        chunk = body[i : i + 16]
        text = "".join(chr(b) if 0x20 <= b < 0x7F else "." for b in chunk)
        lines.append((" ".join(f"{b:02x}" for b in chunk).ljust(50) + text).rstrip())
    return "```wire-frame\n" + "\n".join(lines) + "\n```"


def _describe(frame: f.Frame) -> str:
    if frame.type in _JSON_CODECS:
        return "json: " + frame.payload.decode()
    if frame.type is FrameType.OPEN:
        kind, first = f.decode_open(frame.payload)
        return f"kind: {kind.name}  data: {first!r}"
    if frame.type is FrameType.DATA:
        return f"data: {frame.payload!r}"
    if frame.type is FrameType.WINDOW:
        return f"increment: {f.decode_window(frame.payload)}"
    if frame.type is FrameType.RESET:
        code, reason = f.decode_reset(frame.payload)
        return f"code: {code.name}  reason: {json.dumps(reason)}"
    last, code, reason = f.decode_goaway(frame.payload)
    return f"last: {last}  code: {code.name}  reason: {json.dumps(reason)}"


def test_the_document_is_version_2() -> None:
    assert TEXT.startswith("# The molecule-edge tunnel protocol, version 2\n")
    assert "`molecule-edge.v2`" in TEXT and "`molecule-edge.v1`" in TEXT
    assert "RESPONSE" not in TEXT.replace("RESPONSE (0x04)", "")


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("MAX_PAYLOAD", f"{MAX_PAYLOAD:,} bytes"),
        ("MAX_FRAME_SIZE", f"{MAX_PAYLOAD + 8:,} bytes"),
        ("IDLE_FRAME_ALLOWANCE", f"{IDLE_FRAME_ALLOWANCE:,} frames"),
        ("IDLE_FRAMES_PER_STREAM", f"{IDLE_FRAMES_PER_STREAM} frames"),
    ],
)
def test_the_limits_table_states_the_constants(name: str, text: str) -> None:
    [row] = [line for line in TEXT.splitlines() if line.startswith(f"| `{name}` |")]
    assert f"| {text} |" in row


if __name__ == "__main__":
    for direction, message in worked_example():
        print(render(direction, message), end="\n\n")
