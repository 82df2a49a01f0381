"""TCP and TLS routing through a real ingress gateway: Gateway TCP and TLS PASSTHROUGH servers with
VirtualService tcp and tls routes, checked against banner/echo backends."""

from __future__ import annotations

import contextlib
import math
import ssl

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

TLS_PASSTHROUGH = """
apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: tls-gateway
spec:
  selector:
    istio: ingressgateway
  servers:
  - port:
      number: 443
      name: tls
      protocol: TLS
    bind: {gateway_ip}
    tls:
      mode: PASSTHROUGH
    hosts:
    - "*.example.com"
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: by-sni
spec:
  hosts:
  - "*.example.com"
  gateways:
  - tls-gateway
  tls:
  - match:
    - sniHosts:
      - shop.example.com
    route:
    - destination:
        host: shop
        port:
          number: 8443
  - match:
    - sniHosts:
      - blog.example.com
    route:
    - destination:
        host: blog
        port:
          number: 8443
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
    gateway = mesh.ingress_gateway(
        service_yaml("tcp-echo", ECHO_PORT, {"v1": v1, "v2": v2}, port_name="tcp"),
        TCP_GATEWAY.format(gateway_ip=mesh.client_ip),
    )

    assert exchange(gateway, 31400, b"hello v1\n") == ("tcp-echo-v1", b"hello v1\n")
    assert exchange(gateway, 31401, b"hello v2\n") == ("tcp-echo-v2", b"hello v2\n")

    total = 40
    banners = [exchange(gateway, 31402, b"ping\n")[0] for _ in range(total)]
    to_v1 = banners.count("tcp-echo-v1")
    assert set(banners) == {"tcp-echo-v1", "tcp-echo-v2"}
    assert abs(to_v1 - total / 2) <= 4.5 * math.sqrt(total * 0.25), f"{to_v1}/{total} went to v1"


def client_hello(server_name: str) -> bytes:
    """The first bytes a TLS client sends (a ClientHello carrying SNI `server_name`)."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ssl.create_default_context().wrap_bio(incoming, outgoing, server_hostname=server_name)
    with contextlib.suppress(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def backend_behind_sni(gateway, port: int, server_name: str) -> str:
    """Open a connection, send a ClientHello: the banner of the backend the gateway chose by SNI."""
    with gateway.connect(port) as sock, sock.makefile("rb") as stream:
        sock.sendall(client_hello(server_name))
        return stream.readline().decode().strip()


def closed_without_answer(sock) -> bool:
    try:
        return sock.recv(100) == b""
    except ConnectionResetError:
        return True


def test_tls_passthrough_routes_by_sni(mesh):
    shop, blog = mesh.tcp_backend("shop", 11, 8443), mesh.tcp_backend("blog", 12, 8443)
    gateway = mesh.ingress_gateway(
        service_yaml("shop", 8443, {"v1": shop}, port_name="tls"),
        service_yaml("blog", 8443, {"v1": blog}, port_name="tls"),
        TLS_PASSTHROUGH.format(gateway_ip=mesh.client_ip),
    )

    assert backend_behind_sni(gateway, 443, "shop.example.com") == "shop"
    assert backend_behind_sni(gateway, 443, "blog.example.com") == "blog"
    assert (shop.connections, blog.connections) == (1, 1)
    with gateway.connect(443) as sock:  # no filter chain for this name: the gateway drops the connection
        sock.sendall(client_hello("other.example.com"))
        assert closed_without_answer(sock)
    assert (shop.connections, blog.connections) == (1, 1)
