"""``edge-agent call``: one message to a peer workspace through the platform's proxy."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from edge_agent.console import output_options
from edge_agent.molecule.calls import CallResult
from edge_agent.molecule.client import CALL_TIMEOUT, PlatformClient
from edge_agent.molecule.clishared import (
    platform_options,
    platform_settings,
    platform_tls_options,
    run_cli,
    with_client,
)


@click.command()
@click.argument("peer_id")
@click.argument("text")
@platform_options
@platform_tls_options
@click.option(
    "--stream", is_flag=True, help="Send message/stream (the platform relays it all at the end)."
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=CALL_TIMEOUT,
    show_default=True,
    metavar="SECONDS",
    help="How long to wait for the answer.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the peer's JSON-RPC answer.")
@output_options
def call(
    config: str | None,
    peer_id: str,
    text: str,
    stream: bool,
    timeout: float,
    as_json: bool,
    **flags: Any,
) -> None:
    """Send TEXT to the workspace PEER_ID through the platform and print its answer.

    The call goes through the platform's A2A proxy as this workspace (its token and
    X-Workspace-ID), so the platform checks the hierarchy. TEXT "-" reads stdin.
    Exit codes: 0 answered, 5 our token refused, 10 queued by the platform (no answer
    now), 11 denied by the hierarchy, 12 no such workspace, 13 peer unreachable, 14 no
    answer in time, 15 the peer answered with an error.
    """
    settings = platform_settings(config, flags)
    if text == "-":
        text = sys.stdin.read()

    async def main(client: PlatformClient) -> None:
        result = await client.call_peer(peer_id, text, stream=stream, reply_timeout=timeout)
        _print_answer(result, as_json)

    sys.exit(run_cli(with_client(settings, main)))


def _print_answer(result: CallResult, as_json: bool) -> None:
    if as_json:
        documents = result.documents
        click.echo(json.dumps(documents[0] if len(documents) == 1 else documents, indent=2))
    elif result.texts:
        click.echo(result.text)
    else:
        click.echo("(the answer holds no text; --json shows all of it)", err=True)
