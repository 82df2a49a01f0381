"""Helpers shared by the tests that run whole local meshes (`plait up -d` … `plait down`): waiting for
another mesh to stop, `plait down` leaving nothing behind, a pod's Envoy admin API, and Bookinfo's product
page as a browser sees it."""

from __future__ import annotations

import re
import socket
import subprocess
import urllib.parse
from pathlib import Path

from plait.host.processes import alive
from plait.runtime import netns
from plait.runtime.local import API_PORT, CA_PORT, PROMETHEUS_ADDON_PORT, State, pod_argv
from plait.testing.http import http_request
from plait.testing.live import run_plait, wait_until

CONTROL_PLANE_PORTS = (CA_PORT, API_PORT, PROMETHEUS_ADDON_PORT)  # with Prometheus, run by default


def listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def wait_for_no_other_mesh(extra_ports: tuple[int, ...] = ()) -> None:
    """Local meshes share fixed ports and the capture bridge: wait (bounded) until none runs here."""
    ports = CONTROL_PLANE_PORTS + extra_ports
    wait_until(
        lambda: not any(listening(p) for p in ports) and not netns.leftovers(netns.Network()),
        120,
        f"another local mesh on this machine to stop (ports {ports}, bridge plait0)",
        interval=1,
    )


def down_leaves_nothing(workdir: Path, state_dir: Path, mode: str) -> None:
    """`plait down`, then check that nothing is left: processes (Prometheus too), and in capture mode
    namespaces, veths, the bridge and hosts files."""
    state = State.load(state_dir)
    down = run_plait("down", "--state-dir", str(state_dir), cwd=workdir)
    assert down.returncode == 0 and "nothing left running" in down.stdout, down.stdout + down.stderr
    if state:
        pids = [state.supervisor_pid, state.control_plane_pid, state.prometheus_pid] + [p.pid for p in state.pods]
        assert not [pid for pid in pids if pid and alive(pid)]
    if mode == "capture":
        assert netns.leftovers(netns.Network()) == []


def envoy_admin(state_dir: Path, pod_name: str, path: str) -> str:
    """A GET on a pod's Envoy admin API, on 127.0.0.1 where that Envoy runs: in a capture-mode pod
    its own loopback, reached by running curl inside the pod exactly as the mesh runs the pod."""
    state = State.load(state_dir)
    pod = next(p for p in state.pods if p.name == pod_name)
    if state.mode == "proxy" or pod.kind == "gateway":
        return http_request("127.0.0.1", pod.admin_port, path).body.decode()
    argv = pod_argv(state_dir, pod_name, ["curl", "-sf", "--max-time", "5", f"http://127.0.0.1:{pod.admin_port}{path}"])
    done = subprocess.run(argv, capture_output=True, text=True, timeout=20, check=False)
    assert done.returncode == 0, f"{pod_name} admin {path}: curl exit {done.returncode} {done.stderr}"
    return done.stdout


class Browser:
    """The product page through the ingress gateway, anonymous or logged in as a user."""

    def __init__(self, port: int):
        self.port, self.cookie = port, None

    def login(self, user: str) -> None:
        body = urllib.parse.urlencode({"username": user, "passwd": "password"})
        reply = http_request(
            "127.0.0.1",
            self.port,
            "/login",
            {"Content-Type": "application/x-www-form-urlencoded", "Content-Length": str(len(body))},
            method="POST",
            body=body.encode(),
        )
        assert reply.status in (200, 302), reply
        self.cookie = reply.headers["set-cookie"].split(";")[0]

    def page(self, timeout: float = 20):
        headers = {"Cookie": self.cookie} if self.cookie else {}
        return http_request("127.0.0.1", self.port, "/productpage", headers, timeout=timeout)

    def stars(self) -> str:
        """What a reader sees in the reviews: 'none' (v1), 'black' (v2), 'red' (v3) or 'unavailable'."""
        html = self.page().body.decode()
        if "product reviews are currently unavailable" in html:
            return "unavailable"
        colors = set(re.findall(r'color="(black|red)"', html))
        if "Ratings service is currently unavailable" in html:
            return "ratings-unavailable"
        return colors.pop() if len(colors) == 1 else ("none" if not colors else "mixed")
