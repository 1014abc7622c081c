"""bnviz/machine/network.py: the laptop's network address found offline, and the address a class can open."""

import socket

import pytest

from bnviz.machine import network


class FakeSocket:
    """A UDP socket whose route gives ``local``, or fails (no network); it records what was asked of it."""

    def __init__(self, local=None, error=None):
        self.local, self.error, self.connected, self.sent = local, error, None, []

    def __call__(self, family, kind):
        assert (family, kind) == (socket.AF_INET, socket.SOCK_DGRAM)
        return self

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def connect(self, address):
        if self.error:
            raise self.error
        self.connected = address

    def getsockname(self):
        return (self.local, 40000)

    def send(self, data):  # pragma: no cover - called only if lan_address sent a packet, which fails the test
        self.sent.append(data)

    sendto = send


@pytest.mark.parametrize(
    "local, error, expected",
    [
        ("192.168.1.20", None, "192.168.1.20"),
        ("10.0.0.7", None, "10.0.0.7"),
        ("127.0.1.1", None, None),  # only loopback
        ("0.0.0.0", None, None),
        (None, OSError(101, "Network is unreachable"), None),  # no interface, no route
    ],
)
def test_the_network_address_comes_from_the_route_with_no_packet_sent(monkeypatch, local, error, expected):
    fake = FakeSocket(local, error)
    monkeypatch.setattr(network.socket, "socket", fake)
    assert network.lan_address() == expected
    assert not fake.sent
    assert fake.connected in (None, network.PROBE)


def test_on_this_machine_the_address_is_none_or_not_loopback():
    found = network.lan_address()
    assert found is None or not network.is_loopback(found)
    assert network.lan_address(("127.0.0.1", 9)) is None  # a loopback route names no network


@pytest.mark.parametrize(
    "host, loopback",
    [("127.0.0.1", True), ("127.8.0.3", True), ("::1", True), ("[::1]", True), ("localhost", True)]
    + [("0.0.0.0", False), ("", False), (None, False), ("192.168.1.2", False), ("example.org", False)],
)
def test_loopback(host, loopback):
    assert network.is_loopback(host) is loopback


@pytest.mark.parametrize(
    "page, bound, lan, expected",
    [
        # bnviz class: on every interface; the teacher's browser names 127.0.0.1, the class gets the network address
        ("http://127.0.0.1:8501/?run=x", "0.0.0.0", "192.168.1.20", "http://192.168.1.20:8501/"),
        ("http://localhost:8600/", "", "10.0.0.7", "http://10.0.0.7:8600/"),
        # on every interface, but no network: still loopback (the panel says so)
        ("http://127.0.0.1:8501/", "0.0.0.0", None, "http://127.0.0.1:8501/"),
        # make run: loopback only, whatever the network
        ("http://127.0.0.1:8501/", "127.0.0.1", "192.168.1.20", "http://127.0.0.1:8501/"),
        # bound to one address: that one
        ("http://127.0.0.1:8501/", "192.168.5.5", "192.168.1.20", "http://192.168.5.5:8501/"),
        ("http://[::1]:8501/", "fd00::5", None, "http://[fd00::5]:8501/"),
        # the page is already opened by its network address: as it is
        ("http://192.168.1.20:8501/?watch=a", "0.0.0.0", "192.168.1.20", "http://192.168.1.20:8501/"),
    ],
)
def test_the_share_link_names_the_network_address_when_there_is_one(page, bound, lan, expected):
    assert network.share_base(page, bound, lan) == expected
