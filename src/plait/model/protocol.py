"""Port protocols, chosen as Istio chooses them: appProtocol, then the port name's prefix."""

from __future__ import annotations

from enum import Enum


class Protocol(str, Enum):
    HTTP = "HTTP"
    HTTP2 = "HTTP2"
    GRPC = "GRPC"
    GRPC_WEB = "GRPC-Web"
    HTTPS = "HTTPS"
    TLS = "TLS"
    TCP = "TCP"
    MONGO = "Mongo"
    MYSQL = "MySQL"
    REDIS = "Redis"
    UDP = "UDP"
    AUTO = "AUTO"  # unnamed port: Envoy sniffs HTTP from the first bytes

    @property
    def is_http(self) -> bool:
        return self in (Protocol.HTTP, Protocol.HTTP2, Protocol.GRPC, Protocol.GRPC_WEB)

    @property
    def is_http2(self) -> bool:
        return self in (Protocol.HTTP2, Protocol.GRPC)

    @property
    def is_tls(self) -> bool:
        return self in (Protocol.HTTPS, Protocol.TLS)

    @property
    def is_tcp(self) -> bool:
        return not self.is_http and self is not Protocol.AUTO


_BY_NAME = {p.value.lower(): p for p in Protocol if p is not Protocol.AUTO}
_BY_NAME["grpc-web"] = Protocol.GRPC_WEB
# Kubernetes appProtocol values Istio understands besides its own names.
_BY_NAME["kubernetes.io/h2c"] = Protocol.HTTP2
_BY_NAME["kubernetes.io/ws"] = Protocol.HTTP
_BY_NAME["kubernetes.io/wss"] = Protocol.HTTPS


def parse(value: str | None) -> Protocol | None:
    """An explicit protocol (ServiceEntry/Gateway `protocol`, appProtocol), any case."""
    if not value:
        return None
    return _BY_NAME.get(value.lower())


def from_port(name: str, app_protocol: str | None = None, transport: str = "TCP") -> Protocol:
    """Istio's rule for Kubernetes ports: appProtocol wins, then ``<protocol>[-<suffix>]`` names."""
    if transport.upper() == "UDP":
        return Protocol.UDP
    explicit = parse(app_protocol)
    if explicit:
        return explicit
    lowered = name.lower()
    if lowered.startswith("grpc-web"):
        return Protocol.GRPC_WEB
    prefix = lowered.split("-", 1)[0]
    return _BY_NAME.get(prefix, Protocol.AUTO)
