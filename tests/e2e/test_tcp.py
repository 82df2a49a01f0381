"""TCP routing through a real ingress gateway: Gateway TCP servers and VirtualService tcp routes."""

from __future__ import annotations

import math

from plait.testing.backends import service_yaml

ECHO_PORT = 9000

TCP_GATEWAY = """
apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: tcp-echo-gateway
spec:
  selector:
    istio: ingressgateway
  servers:
  - port:
      number: 31400
      name: tcp
      protocol: TCP
    bind: {gateway_ip}
    hosts:
    - "*"
  - port:
      number: 31401
      name: tcp-v2
      protocol: TCP
    bind: {gateway_ip}
    hosts:
    - "*"
  - port:
      number: 31402
      name: tcp-split
      protocol: TCP
    bind: {gateway_ip}
    hosts:
    - "*"
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: tcp-echo
spec:
  host: tcp-echo
  subsets:
  - name: v1
    labels:
      version: v1
  - name: v2
    labels:
      version: v2
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: tcp-echo
spec:
  hosts:
  - "*"
  gateways:
  - tcp-echo-gateway
  tcp:
  - match:
    - port: 31400
    route:
    - destination:
        host: tcp-echo
        port:
          number: 9000
        subset: v1
  - match:
    - port: 31401
    route:
    - destination:
        host: tcp-echo
        port:
          number: 9000
        subset: v2
  - match:
    - port: 31402
    route:
    - destination:
        host: tcp-echo
        port:
          number: 9000
        subset: v1
      weight: 50
    - destination:
        host: tcp-echo
        port:
          number: 9000
        subset: v2
      weight: 50
"""


def exchange(gateway, port: int, payload: bytes) -> tuple[str, bytes]:
    """Connect to the gateway's `port`: the backend's banner line, and the echo of `payload`."""
    with gateway.connect(port) as sock, sock.makefile("rb") as stream:
        banner = stream.readline().decode().strip()
        sock.sendall(payload)
        return banner, stream.read(len(payload))


def test_tcp_routes_by_gateway_port_and_by_weight(mesh):
    v1 = mesh.tcp_backend("tcp-echo-v1", 11, ECHO_PORT)
    v2 = mesh.tcp_backend("tcp-echo-v2", 12, ECHO_PORT)
    gateway = mesh.ingress_gateway(service_yaml("tcp-echo", ECHO_PORT, {"v1": v1, "v2": v2}, port_name="tcp"),
                                   TCP_GATEWAY.format(gateway_ip=mesh.client_ip))

    assert exchange(gateway, 31400, b"hello v1\n") == ("tcp-echo-v1", b"hello v1\n")
    assert exchange(gateway, 31401, b"hello v2\n") == ("tcp-echo-v2", b"hello v2\n")

    total = 40
    banners = [exchange(gateway, 31402, b"ping\n")[0] for _ in range(total)]
    to_v1 = banners.count("tcp-echo-v1")
    assert set(banners) == {"tcp-echo-v1", "tcp-echo-v2"}
    assert abs(to_v1 - total / 2) <= 4.5 * math.sqrt(total * 0.25), f"{to_v1}/{total} went to v1"
