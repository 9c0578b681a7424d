"""Masking and the JSON views: secrets stay masked unless revealed; bodies as the page
shows them (JSON pretty-printed, text, binary as size and hex)."""

from __future__ import annotations

import json

from edge_agent.inspect.store import MASK, Masker, Side, Store
from edge_agent.inspect.views import body, detail, summary


def test_secret_headers_are_masked_keeping_what_is_not_secret() -> None:
    masker = Masker()
    assert masker.header("Authorization", "Bearer abc.def") == f"Bearer {MASK}"
    assert masker.header("proxy-authorization", "Basic dXNlcjpw") == f"Basic {MASK}"
    assert masker.header("Authorization", "rawtoken") == MASK
    assert masker.header("Cookie", "sid=1; theme=dark") == f"sid={MASK}; theme={MASK}"
    assert masker.header("Set-Cookie", "sid=1; Path=/; HttpOnly") == f"sid={MASK}; Path=/; HttpOnly"
    assert masker.header("Content-Type", "text/plain") == "text/plain"


def test_secret_values_are_masked_anywhere_longest_first() -> None:
    masker = Masker(secrets=["sk-live-123456", "sk-live-123", "abc"])  # "abc": too short
    assert masker.text("key=sk-live-123456&b=sk-live-123&c=abc") == f"key={MASK}&b={MASK}&c=abc"
    assert masker.header("X-Api-Key", "sk-live-123") == MASK


def test_reveal_shows_everything() -> None:
    masker = Masker(reveal=True, secrets=["sk-live-123456"])
    assert masker.header("Authorization", "Bearer x") == "Bearer x"
    assert masker.text("sk-live-123456") == "sk-live-123456"


def test_the_api_views_mask_heads_paths_bodies_and_timelines() -> None:
    store = Store(masker=Masker(secrets=["hunter2hunter2"]))
    ex = store.new()
    ex.method, ex.path = "POST", "/login?pw=hunter2hunter2"
    ex.request.headers = [
        ("Authorization", "Bearer hunter2hunter2"),
        ("Content-Type", "text/plain"),
    ]
    ex.request.keep(b"password=hunter2hunter2", 100)
    ex.add_event({"t": 1.0, "type": "sse", "data": "token hunter2hunter2"}, 100)
    text = json.dumps(detail(ex, store.masker))
    assert "hunter2" not in text
    assert summary(ex, store.masker)["path"] == f"/login?pw={MASK}"


def side(data: bytes, *headers: tuple[str, str], limit: int = 1000) -> Side:
    part = Side(headers=list(headers))
    part.keep(data, limit)
    return part


def test_bodies_render_as_json_text_or_hex() -> None:
    masker = Masker()
    as_json = body(side(b'{"b":[1,2]}', ("Content-Type", "application/json")), masker)
    assert as_json["encoding"] == "json" and as_json["text"] == '{\n  "b": [\n    1,\n    2\n  ]\n}'
    assert body(side(b"plain words\n"), masker)["encoding"] == "text"
    binary = body(side(bytes(range(256)) * 4), masker)
    assert binary["encoding"] == "binary" and binary["size"] == 1024
    assert binary["hex"].startswith("00 01 02") and len(binary["hex"].split()) == 256
    gz = body(side(b"\x1f\x8b\x08\x00", ("Content-Encoding", "gzip")), masker)
    assert gz["encoding"] == "binary"
    cut = body(side(b'{"long": "' + b"x" * 50, limit=20), masker)
    assert cut["encoding"] == "text" and cut["truncated"] and cut["captured"] == 20


def test_listeners_hear_of_new_and_changed_rows() -> None:
    store = Store()
    heard: list[tuple[str, int]] = []
    store.subscribe(lambda kind, rid: heard.append((kind, rid)))
    ex = store.new()
    store.changed(ex)
    assert heard == [("new", ex.id), ("update", ex.id)]  # no loop running: told at once


def test_credentials_seen_in_heads_are_masked_in_bodies_too() -> None:
    masker = Masker()
    masker.learn([("Authorization", "Bearer tok-123456"), ("Cookie", "a=cookie-value; b=x")])
    masker.learn([("Set-Cookie", "sid=session-9; Path=/")])
    shown = masker.text("echo: Bearer tok-123456 cookie-value session-9 x")
    assert shown == f"echo: Bearer {MASK} {MASK} {MASK} x"
