"""`bnviz class`: the dashboard on every interface with a fresh teacher's key, and the two URLs printed.

Network traffic stays on 127.0.0.1: the server's listening address is read from /proc/net/tcp, not tried.
"""

import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import pytest

from bnviz import cli
from bnviz.machine import network

ROOT = Path(__file__).resolve().parents[1]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening(port):
    """The IPv4 addresses a socket listens on at ``port`` (Linux's /proc/net/tcp), as dotted strings."""
    found = []
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, hex_port = local.split(":")
        if state == "0A" and int(hex_port, 16) == port:
            found.append(socket.inet_ntoa(bytes.fromhex(address)[::-1]))
    return found


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads the listening address from Linux's /proc")
def test_bnviz_class_serves_on_every_interface_and_prints_both_urls():
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "bnviz", "class", "--port", str(port), "--no-browser"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    lines, errors = queue.Queue(), []
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()
    threading.Thread(target=lambda: errors.extend(proc.stderr), daemon=True).start()
    try:
        said = ""
        while "Students" not in said:
            said += lines.get(timeout=90)  # the server answered its health check, then printed both URLs
        teacher = re.search(r"Teacher .*: (\S+)", said).group(1)
        students = re.search(r"Students .*: (\S+)", said).group(1)
        key = re.fullmatch(rf"http://127\.0\.0\.1:{port}/\?key=([\w-]+)", teacher).group(1)
        assert len(key) >= 22  # 128 bits, URL-safe
        lan = network.lan_address()
        if lan is not None:
            assert students == f"http://{lan}:{port}/" and "every interface" in said
            assert listening(port) == ["0.0.0.0"]
        else:
            assert students == f"http://127.0.0.1:{port}/" and "this laptop only" in said
            assert listening(port) == ["127.0.0.1"]
        assert key not in students
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=10) as r:
            assert r.read() == b"ok"
    finally:
        proc.send_signal(signal.SIGTERM)  # bnviz class ends its server with it
        try:
            proc.wait(30)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
    assert listening(port) == [], "the server outlived bnviz class"
    assert "Traceback" not in "".join(errors), errors


class FakeServer:
    """subprocess.Popen as bnviz class uses it: records the command and environment, exits at once."""

    def __init__(self):
        self.calls = []

    def __call__(self, command, cwd=None, env=None):
        self.calls.append(SimpleNamespace(command=command, env=env))
        return SimpleNamespace(poll=lambda: 0, wait=lambda *a: 0, pid=0)


def test_without_a_network_it_says_so_and_serves_this_laptop_only(monkeypatch, capsys):
    server = FakeServer()
    monkeypatch.setattr(network, "lan_address", lambda: None)
    monkeypatch.setattr(cli.subprocess, "Popen", server)
    monkeypatch.setattr(cli, "wait_until_up", lambda url, proc: True)
    monkeypatch.setattr(cli.signal, "signal", lambda *a: None)
    port = free_port()
    assert cli.main(["class", "--port", str(port), "--no-browser"]) == 0
    out, err = capsys.readouterr()
    assert "no network address" in err and "serving on this laptop only" in err
    (call,) = server.calls
    assert call.command[call.command.index("--server.address") + 1] == "127.0.0.1"
    assert call.command[call.command.index("--server.port") + 1] == str(port)
    key = call.env["BNVIZ_TEACHER_KEY"]
    assert f"http://127.0.0.1:{port}/?key={key}" in out and "Students (same network" in out


def test_with_a_network_it_serves_every_interface_and_names_the_address(monkeypatch, capsys):
    server = FakeServer()
    monkeypatch.setattr(network, "lan_address", lambda: "192.168.1.20")
    monkeypatch.setattr(cli.subprocess, "Popen", server)
    monkeypatch.setattr(cli, "wait_until_up", lambda url, proc: True)
    monkeypatch.setattr(cli.signal, "signal", lambda *a: None)
    port = free_port()
    assert cli.main(["class", "--port", str(port), "--no-browser"]) == 0
    out, _ = capsys.readouterr()
    (call,) = server.calls
    assert call.command[call.command.index("--server.address") + 1] == "0.0.0.0"
    assert f"http://192.168.1.20:{port}/\n" in out
    keys = {call.env["BNVIZ_TEACHER_KEY"]}
    assert cli.main(["class", "--port", str(port), "--no-browser"]) == 0
    keys.add(server.calls[1].env["BNVIZ_TEACHER_KEY"])
    assert len(keys) == 2  # a fresh key each time


@pytest.mark.parametrize("lan", [None, "192.168.1.20"])
def test_a_port_in_use_is_named_with_what_to_do(monkeypatch, capsys, lan):
    monkeypatch.setattr(network, "lan_address", lambda: lan)
    monkeypatch.setattr(cli.subprocess, "Popen", FakeServer())
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        assert cli.classroom(taken.getsockname()[1], open_browser=False) == 2
    err = capsys.readouterr().err
    assert "is in use" in err and "--port" in err
