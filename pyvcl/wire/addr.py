"""Addresses and ports as the session layer stores them (protocol.md 6.1, gotcha 18).

Ports sit in network byte order inside a little-endian u16 slot; an IPv4 address occupies the
last 4 bytes of a 16-byte ``ip46_address_t`` (the first 12 are zero).
"""

from __future__ import annotations

import ipaddress
import socket

IP46_LEN = 16
_IP4_AT = IP46_LEN - 4


def port_to_wire(port: int) -> int:
    """The u16 value to store for ``port`` (host order in, the slot's value out)."""
    if not 0 <= port <= 0xFFFF:
        raise ValueError(f"port out of range: {port}")
    return socket.htons(port)


def port_from_wire(value: int) -> int:
    return socket.ntohs(value)


def ip_to_wire(address: str | ipaddress.IPv4Address | ipaddress.IPv6Address) -> tuple[bytes, int]:
    """``(ip46 bytes, is_ip4)`` for an address ("" or "0.0.0.0" is IPv4 any)."""
    addr = ipaddress.ip_address(address or "0.0.0.0")
    if isinstance(addr, ipaddress.IPv4Address):
        return bytes(_IP4_AT) + addr.packed, 1
    return addr.packed, 0


def ip_from_wire(ip46: bytes, is_ip4: int) -> str:
    if len(ip46) != IP46_LEN:
        raise ValueError(f"ip46 field of {len(ip46)} bytes")
    if is_ip4:
        return str(ipaddress.IPv4Address(ip46[_IP4_AT:]))
    return str(ipaddress.IPv6Address(ip46))
