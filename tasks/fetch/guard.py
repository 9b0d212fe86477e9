"""Which addresses a download may reach. Checked on the address actually connected to (after DNS, for
every redirect too), so a URL list cannot reach the cloud metadata endpoint, the loopback admin page
or the office network unless `network.allow_hosts` lists it."""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

from . import FetchError


class AddressPolicy:
    def __init__(self, allow_hosts: tuple[str, ...] = ()):
        self.hosts = {h.lower() for h in allow_hosts if not _network(h)}
        self.networks = [n for h in allow_hosts if (n := _network(h))]

    def allowed(self, host: str, address: str) -> bool:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
        if getattr(ip, "ipv4_mapped", None):
            ip = ip.ipv4_mapped
        if ip.is_global and not ip.is_multicast:
            return True
        return host.lower() in self.hosts or any(ip in n for n in self.networks)

    def resolve(self, host: str, port: int) -> list[tuple]:
        """getaddrinfo, keeping only addresses this policy allows; refused ones raise blocked_address."""
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as e:
            raise FetchError("dns", f"{host}: {e.strerror}") from None
        allowed = [info for info in infos if self.allowed(host, info[4][0])]
        if not allowed:
            raise FetchError(
                "blocked_address",
                f"{host} resolves to {infos[0][4][0]}, a private, loopback or"
                " link-local address (list it in network.allow_hosts to allow it)",
            )
        return allowed

    def connect(self, host: str, port: int, timeout: float) -> socket.socket:
        """A connected socket to an allowed address of host (the address checked is the one used)."""
        last = None
        for family, kind, proto, _, address in self.resolve(host, port):
            sock = socket.socket(family, kind, proto)
            sock.settimeout(timeout)
            try:
                sock.connect(address)
                return sock
            except OSError as e:
                sock.close()
                last = e
        raise last

    def check_url(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise FetchError("bad_url", f"only http(s) URLs are fetched: {url[:200]}")
        self.resolve(parts.hostname, parts.port or (443 if parts.scheme == "https" else 80))


def _network(entry: str):
    try:
        return ipaddress.ip_network(entry, strict=False)
    except ValueError:
        return None
