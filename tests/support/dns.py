"""A tiny DNS server on loopback (UDP) whose A records a test changes: a stand-in for a Kubernetes headless
Service, whose DNS answer gains an address when a pod is added. gRPC's resolver asks it when the target names
it as the authority: `dns://127.0.0.1:<port>/replicas.test:50051`."""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

A, IN = 1, 1


class FakeDns(asyncio.DatagramProtocol):
    """Answers A queries for any name with `addresses` (IPv4, TTL 0); other types get an empty answer."""

    def __init__(self, addresses: list[str]):
        self.addresses = list(addresses)
        self.queries: list[tuple[str, int]] = []  # (name, type) as asked
        self._transport: Any = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Keeps the transport to answer on."""
        self._transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        """Parses the one question and answers it."""
        query_id = struct.unpack("!H", data[:2])[0]
        labels, i = [], 12
        while data[i]:
            labels.append(data[i + 1 : i + 1 + data[i]].decode())
            i += 1 + data[i]
        qtype = struct.unpack("!H", data[i + 1 : i + 3])[0]
        question = data[12 : i + 5]
        self.queries.append((".".join(labels), qtype))
        records = [
            b"\xc0\x0c" + struct.pack("!HHIH", A, IN, 0, 4) + socket.inet_aton(address)  # name: the question's
            for address in (self.addresses if qtype == A else [])
        ]
        header = struct.pack("!HHHHHH", query_id, 0x8180, 1, len(records), 0, 0)  # a response, no error
        self._transport.sendto(header + question + b"".join(records), addr)


@asynccontextmanager
async def running_dns(addresses: list[str]) -> AsyncIterator[tuple[FakeDns, int]]:
    """A FakeDns on a free loopback UDP port; yields it and the port."""
    dns = FakeDns(addresses)
    transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(lambda: dns, local_addr=("127.0.0.1", 0))
    try:
        yield dns, transport.get_extra_info("sockname")[1]
    finally:
        transport.close()
