"""Faults injected into a :class:`~tests.nat.topology.Topology`.

* :func:`silent_drop`: the router drops every packet between the laptop and the internet,
  without RST or ICMP, as a NAT box that lost its state or a dead Wi-Fi uplink does. Open
  TCP connections become half-open: neither end learns anything until its own timers fire.
* :func:`tcp_reset`: the router answers every TCP packet between the laptop and the
  internet with a reset (nftables ``reject with tcp reset``), as a NAT box that lost its
  state and says so does: both ends of an open connection see it die at their next send.
* :func:`impaired`: delay and loss on the path, each way. ``tc netem`` on the router's two
  interfaces when the kernel has it; otherwise a userspace delay line (``delayline.py``)
  in the ISP namespace with the same effect (fixed delay each way, independent loss per
  packet each way). The yielded :class:`Impairment` says which one is in force.

Both undo themselves when the ``with`` block ends, also on error; the topology's teardown
removes everything in any case.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Final

from tests.nat.netns import Netns, NetnsError
from tests.nat.procs import NsProcess
from tests.nat.topology import Topology

FAULT_TABLE: Final = "edge_fault"
# Priority below the NAT router's filter (0), so the drop is decided first.
DROP_NFT: Final = f"""
table ip {FAULT_TABLE} {{
    chain forward {{
        type filter hook forward priority filter - 10; policy accept;
        iifname "lan0" drop
        oifname "lan0" drop
    }}
}}
"""
#: Router interfaces netem goes on: egress toward the internet, egress toward the laptop.
NETEM_DEVS: Final = ("wan0", "lan0")
DELAY_LINE: Final = Path(__file__).with_name("delayline.py")
TUN_DEV: Final = "dl0"
#: Policy-routing table that sends everything crossing the ISP into the delay line.
DELAY_TABLE: Final = "100"
ISP_INPUTS: Final = ("down0", "up0")


RESET_TABLE: Final = "edge_reset"
RESET_NFT: Final = f"""
table ip {RESET_TABLE} {{
    chain forward {{
        type filter hook forward priority filter - 10; policy accept;
        iifname "lan0" ip protocol tcp reject with tcp reset
        oifname "lan0" ip protocol tcp reject with tcp reset
    }}
}}
"""


@contextmanager
def tcp_reset(topo: Topology) -> Iterator[None]:
    topo.router.nft(RESET_NFT)
    try:
        yield
    finally:
        topo.router.run(["nft", "delete", "table", "ip", RESET_TABLE], check=False)


def drop_on(topo: Topology) -> None:
    topo.router.nft(DROP_NFT)


def drop_off(topo: Topology) -> None:
    topo.router.run(["nft", "delete", "table", "ip", FAULT_TABLE], check=False)


@contextmanager
def silent_drop(topo: Topology) -> Iterator[None]:
    drop_on(topo)
    try:
        yield
    finally:
        drop_off(topo)


@dataclasses.dataclass(frozen=True, slots=True)
class Impairment:
    kind: str  # "netem" or "delay line"
    delay_ms: int
    loss_pct: float


@contextmanager
def impaired(topo: Topology, delay_ms: int, loss_pct: float) -> Iterator[Impairment]:
    """``delay_ms`` each way (so RTT grows by twice that) and ``loss_pct`` % loss each way."""
    if _netem_on(topo.router, delay_ms, loss_pct):
        try:
            yield Impairment("netem", delay_ms, loss_pct)
        finally:
            _netem_off(topo.router)
        return
    proc = _delay_line_on(topo, delay_ms, loss_pct)
    try:
        yield Impairment("delay line", delay_ms, loss_pct)
    finally:
        _delay_line_off(topo, proc)


def _netem_on(router: Netns, delay_ms: int, loss_pct: float) -> bool:
    """Add netem to the router's interfaces; False when the kernel has no netem."""
    spec = ["netem", "delay", f"{delay_ms}ms", "loss", f"{loss_pct}%"]
    try:
        for dev in NETEM_DEVS:
            router.tc("qdisc", "add", "dev", dev, "root", *spec)
    except NetnsError as exc:
        _netem_off(router)
        if "unknown" in str(exc).lower():  # "Specified qdisc kind is unknown."
            return False
        raise
    return True


def _netem_off(router: Netns) -> None:
    for dev in NETEM_DEVS:
        router.tc("qdisc", "del", "dev", dev, "root", check=False)


def _delay_line_on(topo: Topology, delay_ms: int, loss_pct: float) -> NsProcess:
    argv = [sys.executable, str(DELAY_LINE), "--dev", TUN_DEV, "--delay-ms", str(delay_ms)]
    proc = topo.spawn(topo.isp, "delayline", [*argv, "--loss-pct", str(loss_pct)])
    try:
        proc.wait_output(r"^ready$", timeout=10)
        isp = topo.isp
        isp.ip("link", "set", TUN_DEV, "up")
        isp.ip("route", "add", "default", "dev", TUN_DEV, "table", DELAY_TABLE)
        for dev in ISP_INPUTS:  # packets coming back out of the TUN use the main table
            isp.ip("rule", "add", "iif", dev, "table", DELAY_TABLE)
    except BaseException:
        _delay_line_off(topo, proc)
        raise
    return proc


def _delay_line_off(topo: Topology, proc: NsProcess) -> None:
    for dev in ISP_INPUTS:
        topo.isp.ip("rule", "del", "iif", dev, "table", DELAY_TABLE, check=False)
    proc.stop()  # the TUN device, and the route through it, go with the process
