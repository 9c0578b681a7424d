"""tunnel.logs: one line per event, text or JSON, with the ``extra=`` fields."""

from __future__ import annotations

import json
import logging

from tunnel import logs


def record(**extra: object) -> logging.LogRecord:
    rec = logging.makeLogRecord(
        {"name": "relay.server", "levelno": logging.INFO, "levelname": "INFO"}
    )
    rec.msg = "relay_listening"
    for key, value in extra.items():
        setattr(rec, key, value)
    return rec


def test_text_lines_carry_the_event_and_its_fields() -> None:
    line = logs.TextFormatter().format(record(port=8080, agent="demo"))
    assert line.endswith(" INFO    relay.server: relay_listening port=8080 agent=demo")
    assert logs.TextFormatter().format(record()).endswith("relay.server: relay_listening")


def test_json_lines_carry_the_event_and_its_fields() -> None:
    entry = json.loads(logs.JsonFormatter().format(record(port=8080, error=ValueError("x"))))
    assert entry["level"] == "info" and entry["logger"] == "relay.server"
    assert entry["event"] == "relay_listening"
    assert entry["port"] == 8080 and entry["error"] == "x"  # not JSON: str()
    assert entry["ts"].endswith("+00:00")


def test_private_and_standard_attributes_are_not_fields() -> None:
    rec = record(_private=1, visible=2)
    assert logs.fields(rec) == {"visible": 2}


def test_configure_sets_the_handler_and_the_levels() -> None:
    root = logging.getLogger()
    named = logging.getLogger("tunnel.websocket")
    saved = list(root.handlers), root.level, named.level
    try:
        logs.configure(logging.WARNING, "json", {"tunnel.websocket": logging.DEBUG})
        assert len(root.handlers) == 1
        assert isinstance(root.handlers[0].formatter, logs.JsonFormatter)
        assert root.level == logging.WARNING
        assert named.level == logging.DEBUG
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        named.setLevel(saved[2])
