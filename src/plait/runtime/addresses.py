"""Addresses for the local mesh: pod IPs, app IPs (explicit-proxy mode), service VIPs, host ports."""

from __future__ import annotations

import ipaddress
import socket

POD_NETWORKS = {"proxy": "127.1.0.0/16", "capture": "10.244.0.0/16"}
APP_NETWORK = "127.2.0.0/16"  # explicit-proxy mode: each app listens on an address of its own
SERVICE_NETWORK = "10.96.0.0/16"  # Kubernetes' habit; never routed, always captured or proxied
EXTERNAL_NETWORK = "240.240.0.0/16"  # names of ServiceEntry hosts without an address: captured, routed by Host
FIRST_HOST_PORT = 15100


class Addresses:
    """Hands out each address and port once. Pod addresses start at .2 (.1 is the bridge in capture mode)."""

    def __init__(self, mode: str):
        self._pods = ipaddress.ip_network(POD_NETWORKS[mode]).hosts()
        next(self._pods)  # .1: the host side of the bridge
        self._apps = ipaddress.ip_network(APP_NETWORK).hosts()
        next(self._apps)
        self._services = ipaddress.ip_network(SERVICE_NETWORK).hosts()
        self._external = ipaddress.ip_network(EXTERNAL_NETWORK).hosts()
        for _ in range(9):  # .1-.9 stay free, as in Kubernetes (10.96.0.1 is the API server, .10 DNS)
            next(self._services)
        self._next_port = FIRST_HOST_PORT

    def pod_ip(self) -> str:
        return str(next(self._pods))

    def app_ip(self) -> str:
        return str(next(self._apps))

    def service_ip(self) -> str:
        return str(next(self._services))

    def external_ip(self) -> str:
        return str(next(self._external))

    def port(self) -> int:
        """The next host port free on 127.0.0.1 (admin and status ports of agents)."""
        while True:
            port, self._next_port = self._next_port, self._next_port + 1
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
