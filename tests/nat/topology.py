"""A laptop behind a NAT router, an ISP hop, and the internet, in network namespaces.

::

    laptop                router (NAT)                isp                   internet
    eth0 10.77.1.2 ---- lan0 10.77.1.1            (forwards only)        (relay, platform)
                          wan0 10.77.3.2 ---- down0 10.77.3.1
                                                  up0 10.77.2.1 ---- eth0 10.77.2.2

* The laptop's default route is the router. The router masquerades laptop traffic leaving
  ``wan0`` (nftables) and has a stateful forward filter: laptop -> internet and replies
  pass, nothing new comes in; no port forwarding. ``ip_forward`` is on in the router and
  the ISP namespaces only.
* The internet namespace has a route to the router's public subnet through the ISP and no
  route at all to the private 10.77.1.0/24, as on the real internet.
* The ISP hop is where a userspace delay line goes when the kernel lacks netem
  (``faults.impaired``).

Addresses exist only inside these namespaces; no link touches the host's namespace
(veth pairs are created straight inside them). Every process started with :meth:`spawn`
and every namespace go away in :meth:`destroy`, which the fixtures call however the test
ended.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Final

from tests.nat.netns import PREFIX, Netns
from tests.nat.procs import NsProcess

LAPTOP_NET: Final = "10.77.1.0/24"
LAPTOP_IP: Final = "10.77.1.2"
ROUTER_LAN_IP: Final = "10.77.1.1"
ROUTER_WAN_NET: Final = "10.77.3.0/24"
ROUTER_WAN_IP: Final = "10.77.3.2"
ISP_DOWN_IP: Final = "10.77.3.1"
ISP_UP_IP: Final = "10.77.2.1"
INTERNET_IP: Final = "10.77.2.2"

ROUTER_NFT: Final = f"""
table ip edge_nat {{
    chain postrouting {{
        type nat hook postrouting priority srcnat; policy accept;
        oifname "wan0" ip saddr {LAPTOP_NET} masquerade
    }}
    chain forward {{
        type filter hook forward priority filter; policy drop;
        ct state established,related accept
        iifname "lan0" oifname "wan0" accept
    }}
}}
"""

_counter = itertools.count(1)


class Topology:
    def __init__(self, log_dir: Path) -> None:
        run_id = f"{PREFIX}-{os.getpid()}-{next(_counter)}"
        self.log_dir = log_dir
        self.laptop = Netns(f"{run_id}-laptop")
        self.router = Netns(f"{run_id}-router")
        self.isp = Netns(f"{run_id}-isp")
        self.internet = Netns(f"{run_id}-internet")
        self.procs: list[NsProcess] = []

    @property
    def namespaces(self) -> list[Netns]:
        return [self.laptop, self.router, self.isp, self.internet]

    @classmethod
    def build(cls, log_dir: Path) -> Topology:
        """Make the whole topology; on any error, remove what was made and re-raise."""
        topo = cls(log_dir)
        try:
            topo._build()
        except BaseException:
            topo.destroy()
            raise
        return topo

    def _build(self) -> None:
        for ns in self.namespaces:
            ns.add()
            # No IPv6 on the veths: no router solicitations or DAD in the captures and delays.
            ns.sysctl("net.ipv6.conf.default.disable_ipv6", "1")
        self._wire(self.laptop, "eth0", LAPTOP_IP, self.router, "lan0", ROUTER_LAN_IP)
        self._wire(self.router, "wan0", ROUTER_WAN_IP, self.isp, "down0", ISP_DOWN_IP)
        self._wire(self.isp, "up0", ISP_UP_IP, self.internet, "eth0", INTERNET_IP)
        self.laptop.ip("route", "add", "default", "via", ROUTER_LAN_IP)
        self.router.ip("route", "add", "default", "via", ISP_DOWN_IP)
        self.internet.ip("route", "add", ROUTER_WAN_NET, "via", ISP_UP_IP)
        for ns in (self.router, self.isp):
            ns.sysctl("net.ipv4.ip_forward", "1")
        # The delay line re-injects packets on its TUN device, not on the interface their
        # source routes through: no reverse-path filter in the ISP (0 = off; the kernel
        # uses the larger of "all" and the interface's own value).
        for key in ("all", "default"):
            self.isp.sysctl(f"net.ipv4.conf.{key}.rp_filter", "0")
        self.router.nft(ROUTER_NFT)

    @staticmethod
    def _wire(a: Netns, a_dev: str, a_ip: str, b: Netns, b_dev: str, b_ip: str) -> None:
        """A veth pair between two namespaces, a /24 on each end, both up."""
        a.ip("link", "add", a_dev, "type", "veth", "peer", "name", b_dev, "netns", b.name)
        for ns, dev, ip in ((a, a_dev, a_ip), (b, b_dev, b_ip)):
            ns.ip("addr", "add", f"{ip}/24", "dev", dev)
            ns.ip("link", "set", dev, "up")

    def spawn(
        self,
        ns: Netns,
        name: str,
        argv: Sequence[str],
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> NsProcess:
        """Start ``argv`` inside ``ns``; it is stopped in :meth:`destroy` at the latest."""
        proc = NsProcess(ns, name, argv, self.log_dir, env=env, cwd=cwd)
        self.procs.append(proc)
        return proc

    def link_down(self) -> None:
        """Take the laptop's only link down, as when Wi-Fi drops."""
        self.laptop.ip("link", "set", "eth0", "down")

    def link_up(self) -> None:
        """Bring the laptop's link back, and its default route, as DHCP would.

        The kernel removes the routes through a link that goes down; the connected route
        returns with the link, the default route does not.
        """
        self.laptop.ip("link", "set", "eth0", "up")
        self.laptop.ip("route", "replace", "default", "via", ROUTER_LAN_IP)

    def process_logs(self) -> str:
        return "\n".join(f"----- {p.name} ({p.argv[0]})\n{p.output()}" for p in self.procs)

    def destroy(self) -> None:
        """Stop every process (process groups), then remove every namespace. Idempotent."""
        errors: list[BaseException] = []
        for proc in reversed(self.procs):
            try:
                proc.stop()
            except Exception as exc:  # keep going: the namespaces must go in any case
                errors.append(exc)
        for ns in self.namespaces:
            ns.delete()
        if errors:
            raise errors[0]
