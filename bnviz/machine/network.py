"""This laptop's address on the local network, found offline, and the addresses a class can open.

The address comes from a UDP socket "connected" to a private address: connecting a UDP socket only picks the
route and the local address, and sends no packet, so this works without the internet (and says None without a
network at all). Streamlit's "Network URL" is found the same way.
"""

import ipaddress
import socket
import urllib.parse

# A private address, never contacted: the route towards it names the interface a class on the same network reaches.
PROBE = ("10.254.254.254", 1)
ALL_INTERFACES = ("", "0.0.0.0", "::")


def lan_address(probe: tuple[str, int] = PROBE) -> str | None:
    """This machine's IPv4 address on its network, or None when it has none (only loopback, or no route)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(probe)  # UDP: no packet is sent
            address = s.getsockname()[0]
    except OSError:
        return None
    return None if is_loopback(address) or address == "0.0.0.0" else address


def is_loopback(host: str | None) -> bool:
    """Whether ``host`` (an address or a name) is this machine's loopback: 127.0.0.0/8, ::1 or localhost."""
    if not host:
        return False
    host = host.strip("[]")
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def share_base(page_url: str, bound: str | None, lan: str | None) -> str:
    """The address students open for a server bound to ``bound``, seen by the teacher at ``page_url``.

    The teacher's own browser names the laptop (127.0.0.1); a phone needs its network address: ``lan`` when the
    server listens on every interface, the bound address when it listens on one. Otherwise the page's own URL.
    """
    parts = urllib.parse.urlsplit(page_url)
    if not is_loopback(parts.hostname):
        return f"{parts.scheme}://{parts.netloc}/"
    host = lan if (bound or "") in ALL_INTERFACES else bound
    if host is None or is_loopback(host):
        return f"{parts.scheme}://{parts.netloc}/"
    port = f":{parts.port}" if parts.port else ""
    host = f"[{host}]" if ":" in host else host
    return f"{parts.scheme}://{host}{port}/"


def port_free(port: int, host: str = "0.0.0.0") -> bool:
    """Whether a server could listen on ``host:port`` now (nothing else is bound there)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True
