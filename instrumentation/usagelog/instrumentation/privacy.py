"""Optional privacy transforms applied to an event before it leaves the process.

- ``USAGELOG_USER_ID_HMAC_KEY``: user IDs become keyed pseudonyms, HMAC-SHA256(key, ID) as 32
  hex digits. The same key on every instance gives a user the same pseudonym everywhere, so
  counts per consumer still work; without the key the pseudonym cannot be reversed or
  recomputed from a guessed ID.
- ``USAGELOG_CLIENT_IP``: ``full`` keeps the address, ``truncate`` keeps an IPv4 address's /24
  and an IPv6 address's /48 (an IPv4-mapped IPv6 address is treated as IPv4), ``none`` drops it.
  An address that does not parse is dropped when truncating: it cannot be made coarser.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress

IPV4_PREFIX = 24
IPV6_PREFIX = 48


class Pseudonymiser:
    def __init__(self, key: str) -> None:
        self._key = key.encode("utf-8")

    def __call__(self, user_id: str) -> str:
        if not user_id:
            return ""
        digest = hmac.new(self._key, user_id.encode("utf-8", "surrogatepass"), hashlib.sha256)
        return digest.hexdigest()[:32]


def client_address(address: str, mode: str) -> str:
    """The client address as ``USAGELOG_CLIENT_IP`` (``full``, ``truncate``, ``none``) wants it."""
    if mode == "full" or not address:
        return address
    if mode == "none":
        return ""
    try:
        ip = ipaddress.ip_address(address.strip().strip("[]").split("%", 1)[0])
    except ValueError:
        return ""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    prefix = IPV4_PREFIX if ip.version == 4 else IPV6_PREFIX
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False).network_address)
