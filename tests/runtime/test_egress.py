"""Istio's egress-gateway pattern in the local mesh, end to end in both modes, and REGISTRY_ONLY.

An "external" HTTP server runs on the host's loopback, outside the mesh. A ServiceEntry names it
``httpbin.external.test`` (a static endpoint instead of DNS); a Gateway, a DestinationRule and a
VirtualService, as in Istio's "Egress Gateways" task but for the host, send the mesh's requests
for it to the egress gateway, which sends them on out. Requests are made from inside a client pod, as its app would make them:
in capture mode with curl in the pod's network namespace (where the host's loopback does not
exist, so the egress gateway is the only way out), in proxy mode through the pod's sidecar as
its HTTP proxy (where the gateway's own counters and the X-Forwarded-For header it adds show the
way the request went). Then a namespace-wide Sidecar with REGISTRY_ONLY blocks a host that no
Service or ServiceEntry names, while the ServiceEntry host still works.

docs/egress.md shows exactly the YAML applied here (checked by the last test).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from plait.runtime import netns
from plait.runtime.local import State
from plait.testing.backends import HttpBackend
from plait.testing.http import http_request
from plait.testing.live import free_port, wait_until
from plait.testing.live import run_plait as plait
from plait.testing.localmesh import down_leaves_nothing, wait_for_no_other_mesh

MODES = ["proxy", "capture"]  # capture needs root (CI runs as root) and fails loudly without it
DOC = Path(__file__).parents[2] / "docs" / "egress.md"
EXTERNAL_HOST = "httpbin.external.test"
EXTERNAL_ADDRESS = "240.240.0.1"  # the ServiceEntry's address: what the host name resolves to in a pod
DOC_EXTERNAL_PORT = 8000  # where the docs' external server listens; the test picks a free port

CLIENT = """\
apiVersion: v1
kind: Service
metadata:
  name: client
spec:
  selector:
    app: client
  ports:
  - name: http
    port: 80
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: client
spec:
  replicas: 2
  selector:
    matchLabels:
      app: client
  template:
    metadata:
      labels:
        app: client
    spec:
      containers:
      - name: client
        image: python:3.11
        command: ["sh", "-c", "exec python3 -m http.server $PORT --bind $BIND_ADDRESS"]
        ports:
        - containerPort: 80
        readinessProbe:
          httpGet: {path: /, port: 80}
"""

EGRESS = """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: httpbin-external
spec:
  hosts:
  - httpbin.external.test
  addresses:
  - 240.240.0.1
  ports:
  - number: 80
    name: http
    protocol: HTTP
  location: MESH_EXTERNAL
  resolution: STATIC
  endpoints:
  - address: 127.0.0.1
    ports:
      http: 8000
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: istio-egressgateway
spec:
  selector:
    istio: egressgateway
  servers:
  - port:
      number: 80
      name: http
      protocol: HTTP
    hosts:
    - httpbin.external.test
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: egressgateway-for-httpbin
spec:
  host: istio-egressgateway.istio-system.svc.cluster.local
  subsets:
  - name: httpbin
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: direct-httpbin-through-egress-gateway
spec:
  hosts:
  - httpbin.external.test
  gateways:
  - istio-egressgateway
  - mesh
  http:
  - match:
    - gateways:
      - mesh
      port: 80
    route:
    - destination:
        host: istio-egressgateway.istio-system.svc.cluster.local
        subset: httpbin
        port:
          number: 80
  - match:
    - gateways:
      - istio-egressgateway
      port: 80
    route:
    - destination:
        host: httpbin.external.test
        port:
          number: 80
      weight: 100
"""

REGISTRY_ONLY = """\
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata:
  name: default
  namespace: default
spec:
  outboundTrafficPolicy:
    mode: REGISTRY_ONLY
"""


def egress_yaml(port: int) -> str:
    """EGRESS with the ServiceEntry's endpoint at the test's external server."""
    text = EGRESS.replace(f"http: {DOC_EXTERNAL_PORT}\n", f"http: {port}\n")
    assert text != EGRESS
    return text


@dataclass(frozen=True)
class Reply:
    exit_code: int  # curl's: 0 when an HTTP answer came back, 7 when nothing accepted the connection
    status: int  # 0 without an HTTP answer
    body: str

    @property
    def backend(self) -> str | None:
        return json.loads(self.body)["name"] if self.status == 200 else None


@dataclass
class Mesh:
    mode: str
    workdir: Path
    state_dir: Path
    external: HttpBackend

    def pod(self, name: str):
        state = State.load(self.state_dir)
        return next(p for p in state.pods if p.name == name)

    def curl(self, url: str, *, resolve: bool = True, pod: str = "client-0") -> Reply:
        """GET `url` from inside `pod`, as its app would: in capture mode in the pod's network
        namespace (`resolve`: the external host's name given to curl, as the pod's hosts file has
        no entry for it); in proxy mode through the pod's sidecar, the app's HTTP_PROXY."""
        argv = ["curl", "-s", "--max-time", "10", "-w", "\n%{http_code}", url]
        if self.mode == "capture":
            if resolve:
                argv[1:1] = ["--resolve", f"{EXTERNAL_HOST}:80:{EXTERNAL_ADDRESS}"]
            argv = netns.exec_argv(netns.Network().namespace(pod), argv)
        else:
            argv[1:1] = ["--proxy", f"http://{self.pod(pod).ip}:15001"]
        env = {k: v for k, v in os.environ.items() if k.lower() not in ("http_proxy", "all_proxy", "no_proxy")}
        done = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=20, env=env)
        body, _, status = done.stdout.rpartition("\n")
        return Reply(done.returncode, int(status or 0), body)

    def gateway_counter(self, name: str) -> int:
        """A counter of the egress gateway's Envoy (its admin API on the host)."""
        stats = http_request("127.0.0.1", self.pod("istio-egressgateway").admin_port, "/stats").body.decode()
        match = re.search(rf"^{re.escape(name)}: (\d+)$", stats, flags=re.MULTILINE)
        return int(match.group(1)) if match else 0

    def apply(self, text: str) -> None:
        path = self.workdir / "apply.yaml"
        path.write_text(text)
        result = plait("apply", "-f", str(path), cwd=self.workdir)
        assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture(scope="module", params=MODES)
def mesh(request, tmp_path_factory):
    workdir = tmp_path_factory.mktemp(f"egress-{request.param}")
    with HttpBackend("external", "127.0.0.1", free_port()) as external:
        mesh = Mesh(request.param, workdir, workdir / "state", external)
        (workdir / "client.yaml").write_text(CLIENT)
        (workdir / "egress.yaml").write_text(egress_yaml(external.port))
        wait_for_no_other_mesh(extra_ports=(8081,))
        started = time.monotonic()
        try:
            up = plait(
                "up",
                "-f",
                "client.yaml",
                "-f",
                "egress.yaml",
                "-d",
                "--mode",
                mesh.mode,
                "--ingress-port",
                str(free_port()),
                "--state-dir",
                str(mesh.state_dir),
                cwd=workdir,
            )
            assert up.returncode == 0, up.stdout + up.stderr
            print(f"{mesh.mode}: mesh ready in {time.monotonic() - started:.1f}s")
            yield mesh
        finally:
            down_leaves_nothing(mesh.workdir, mesh.state_dir, mesh.mode)


def test_external_host_is_reached_through_the_egress_gateway(mesh: Mesh) -> None:
    counter = f"cluster.outbound|80||{EXTERNAL_HOST}.upstream_rq_200"
    before_gateway, before_external = mesh.gateway_counter(counter), mesh.external.count
    replies = [mesh.curl(f"http://{EXTERNAL_HOST}/status/{i}") for i in range(3)]
    assert [(r.status, r.backend) for r in replies] == [(200, "external")] * 3, replies
    assert mesh.external.count - before_external == 3
    # the egress gateway sent each of them on to the external server
    wait_until(lambda: mesh.gateway_counter(counter) - before_gateway == 3, 5, "the gateway's counter")
    seen = mesh.external.requests[-1]
    assert seen.headers["host"] == EXTERNAL_HOST
    # only the gateway appends X-Forwarded-For (use_remote_address); sidecars do not
    assert "x-forwarded-for" in seen.headers
    if mesh.mode == "capture":  # the gateway saw the request come from the client pod
        assert seen.headers["x-forwarded-for"] == mesh.pod("client-0").ip


def test_the_external_server_by_its_own_address(mesh: Mesh) -> None:
    """Capture mode: unreachable from a pod (its 127.0.0.1 is its own, and the host does not expose a
    loopback server on the bridge). Proxy mode: apps share the host's network, so under ALLOW_ANY the
    sidecar sends a request for the bare address straight out, not through the gateway; only
    REGISTRY_ONLY stops that (next tests)."""
    counter = f"cluster.outbound|80||{EXTERNAL_HOST}.upstream_rq_total"
    before_gateway, before_external = mesh.gateway_counter(counter), mesh.external.count
    if mesh.mode == "capture":
        for address in ("127.0.0.1", netns.Network().gateway):
            reply = mesh.curl(f"http://{address}:{mesh.external.port}/")
            assert (reply.exit_code, reply.status) == (7, 0), reply  # couldn't connect
        assert mesh.external.count == before_external
    else:
        reply = mesh.curl(f"http://127.0.0.1:{mesh.external.port}/direct")
        assert (reply.status, reply.backend) == (200, "external")
        assert mesh.external.count - before_external == 1
        assert "x-forwarded-for" not in mesh.external.requests[-1].headers
    assert mesh.gateway_counter(counter) == before_gateway


def test_a_pod_reaches_the_external_host_by_name_alone(mesh: Mesh) -> None:
    """Capture mode: the pod's hosts file names ServiceEntry hosts too (an address only ever captured)."""
    reply = mesh.curl(f"http://{EXTERNAL_HOST}/by-name", resolve=False)
    assert (reply.status, reply.backend) == (200, "external"), reply


def test_registry_only_blocks_unknown_hosts_but_not_the_service_entry(mesh: Mesh) -> None:
    # a host no Service or ServiceEntry names: the other client pod, by its own address
    unknown = f"http://{mesh.pod('client-1').ip}/"
    assert mesh.curl(unknown).status == 200  # ALLOW_ANY (the default): passed through
    mesh.apply(REGISTRY_ONLY)
    wait_until(lambda: mesh.curl(unknown).status == 502, 15, "REGISTRY_ONLY to block the unknown host", 0.2)
    blocked = mesh.curl(unknown)
    assert (blocked.status, blocked.body) == (502, "")  # the sidecar's own answer
    external = mesh.curl(f"http://{EXTERNAL_HOST}/after-registry-only")
    assert (external.status, external.backend) == (200, "external")
    assert mesh.curl("http://client/").status == 200  # the mesh's own services too
    direct = mesh.curl(f"http://127.0.0.1:{mesh.external.port}/direct")  # proxy: 502; capture: no connection
    assert direct.status == (502 if mesh.mode == "proxy" else 0), direct


def test_the_docs_show_the_yaml_this_test_applies() -> None:
    examples = [list(yaml.safe_load_all(t)) for t in re.findall(r"```yaml\n(.*?)```", DOC.read_text(), re.DOTALL)]
    applied = [list(yaml.safe_load_all(t)) for t in (CLIENT, EGRESS, REGISTRY_ONLY)]
    assert examples == applied
