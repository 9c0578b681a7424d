"""A userspace netem: delays and drops the IP packets routed through a TUN device.

Used by ``faults.impaired`` when the kernel has no ``sch_netem`` (some minimal VM kernels
do not). The ISP namespace routes every packet that crosses it into the TUN device (policy
routing on the input interface); this process reads each packet, drops it with
probability ``--loss-pct``, and writes it back ``--delay-ms`` later, from where the kernel
forwards it on. A fixed delay keeps the order, as netem with a fixed delay does. The TUN
device has no offloads, so the kernel hands over packets already segmented to the MTU with
complete checksums, and loss applies per packet on the wire, as with netem.

Runs inside the ISP namespace (``ip netns exec``), stdlib only. Prints ``ready`` once the
device exists; prints its packet counts when stopped (SIGTERM).
"""

from __future__ import annotations

import argparse
import collections
import fcntl
import os
import random
import select
import signal
import struct
import sys
import time
from typing import Final

TUNSETIFF: Final = 0x400454CA
IFF_TUN: Final = 0x0001
IFF_NO_PI: Final = 0x1000
#: Larger than any packet a TUN device without offloads hands over (MTU 1500 here).
READ_SIZE: Final = 65536


def open_tun(name: str) -> int:
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI))
    return fd


class DelayLine:
    def __init__(self, fd: int, delay: float, loss: float, rng: random.Random) -> None:
        self.fd, self.delay, self.loss, self.rng = fd, delay, loss, rng
        self.queue: collections.deque[tuple[float, bytes]] = collections.deque()
        self.seen = self.dropped = 0

    def run(self) -> None:
        while True:
            wait = max(0.0, self.queue[0][0] - time.monotonic()) if self.queue else 1.0
            readable, _, _ = select.select([self.fd], [], [], wait)
            if readable:
                self._read_all()
            self._write_due()

    def _read_all(self) -> None:
        while True:
            try:
                packet = os.read(self.fd, READ_SIZE)
            except BlockingIOError:
                return
            self.seen += 1
            if self.rng.random() < self.loss:
                self.dropped += 1
            else:
                self.queue.append((time.monotonic() + self.delay, packet))

    def _write_due(self) -> None:
        now = time.monotonic()
        while self.queue and self.queue[0][0] <= now:
            os.write(self.fd, self.queue.popleft()[1])


def main() -> None:
    p = argparse.ArgumentParser(description="delay and drop packets through a TUN device")
    p.add_argument("--dev", required=True)
    p.add_argument("--delay-ms", type=float, required=True)
    p.add_argument("--loss-pct", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=None)
    args = p.parse_args()
    line = DelayLine(
        open_tun(args.dev), args.delay_ms / 1000, args.loss_pct / 100, random.Random(args.seed)
    )
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print("ready", flush=True)
    try:
        line.run()
    finally:
        print(f"packets seen={line.seen} dropped={line.dropped}", flush=True)


if __name__ == "__main__":
    main()
