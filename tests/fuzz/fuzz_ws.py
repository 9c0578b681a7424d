#!/usr/bin/env python3
"""Coverage-guided fuzzing of the tunnel link's WebSocket framing (``tunnel.wsframe``).

Run it with ``scripts/fuzz ws [SECONDS]`` (atheris). ``wsframe.Parser`` reads every byte
a peer puts on the agent WebSocket before the tunnel frame decoder (``wire``) sees a
message. The first byte of an input picks the side (a server parser wants masked frames,
a client parser unmasked ones), a small or the real message limit, a per-call frame
limit (as the link parses a loop turn at a time) and a seed for where the rest is cut
into reads.

What counts as a crash:

* anything but :class:`tunnel.wsframe.WsError` escaping ``feed``, or a WsError with a
  close code other than 1002 and 1009;
* a message over the limit, or a data message whose opcode is not text or binary;
* a different outcome for the same bytes fed whole and cut into reads, or parsed a few
  frames per call (``feed(b"", limit)`` while ``more``): the same error or none, the
  same messages (before an error, those of the calls that did not raise);
* a control payload over 125 bytes;
* each message encoded again (``wsframe.encode``, masked or not) and parsed by a fresh
  parser of the same side not coming back the same.

``one_input`` needs no atheris, so ``tests/fuzz/test_fuzz_ws.py`` replays the committed
corpus and every saved crash in CI.
"""

from __future__ import annotations

import random
import sys

if __name__ == "__main__":  # instrument tunnel.wsframe before anything imports it
    import atheris

    with atheris.instrument_imports(include=["tunnel.wsframe"]):
        import tunnel.wsframe  # noqa: F401

from tunnel.wsframe import (
    CLOSE_PROTOCOL_ERROR,
    CLOSE_TOO_BIG,
    OP_BINARY,
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    Masks,
    Parser,
    WsError,
    encode,
)

_LIMITS = (256 * 1024 + 8, 64)
_CONTROL = (OP_CLOSE, OP_PING, OP_PONG)
Message = tuple[int, bytes]


def _parse(
    masked: bool, max_size: int, parts: list[bytes], limit: int
) -> tuple[list[Message], int | None]:
    parser = Parser(max_size, masked)
    out: list[Message] = []
    try:
        for part in parts:
            out += parser.feed(part, limit)
            for _ in range(len(part) + 1):  # each call parses a frame at least: bounded
                if not parser.more:
                    break
                out += parser.feed(b"", limit)
    except WsError as exc:
        assert exc.code in (CLOSE_PROTOCOL_ERROR, CLOSE_TOO_BIG), exc.code
        return out, exc.code
    return out, None


def _check(messages: list[Message], masked: bool, max_size: int) -> None:
    for opcode, payload in messages:
        if opcode in _CONTROL:
            assert len(payload) <= 125, "control payload over 125 bytes"
            continue
        assert opcode in (OP_TEXT, OP_BINARY), f"data message with opcode {opcode}"
        assert len(payload) <= max_size, "message over the limit"
        again = Parser(max_size, masked).feed(encode(opcode, payload, Masks() if masked else None))
        assert again == [(opcode, payload)], "a message does not survive encoding again"


def one_input(data: bytes) -> None:
    if not data:
        return
    masked = bool(data[0] & 1)
    max_size = _LIMITS[(data[0] >> 1) & 1]
    limit = (1, 3, 256, 1 << 62)[(data[0] >> 2) & 3]
    rng = random.Random(data[0] >> 4)
    body = data[1:]
    cuts = sorted(rng.randrange(len(body) + 1) for _ in range(rng.randrange(6)))
    parts = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True)]

    whole, whole_error = _parse(masked, max_size, [body], 1 << 62)
    split, split_error = _parse(masked, max_size, parts, limit)
    # The error does not depend on the reads; the messages neither, except that a
    # ``feed`` that raises drops the messages of that call (the link fails then).
    assert whole_error == split_error, f"{whole_error} / {split_error}"
    if whole_error is None:
        assert whole == split, "the reads or the per-call limit changed the messages"
    else:
        assert split[: len(whole)] == whole, "the reads changed the messages before an error"
    _check(split, masked, max_size)


def main() -> None:
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
