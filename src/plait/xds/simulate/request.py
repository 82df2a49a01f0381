"""The request being explained, as the application sends it, and what a listener sees of its connection.

`Request` parses a URL and headers and answers header look-ups as Envoy's matchers see them
(pseudo-headers, repeated headers joined with ','); `Connection` is what the listener filters
know; a `Resolver` is what DNS answers inside the mesh. Also the small host and path rules
Envoy applies to a request: is it an IP, stripping a Host's port, ``normalize_path``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

Resolver = Callable[[str], "str | None"]


@dataclass(frozen=True)
class Request:
    """One HTTP request as the application sends it. Header names are lower case."""

    scheme: str
    host: str
    port: int
    path: str
    query: str = ""
    method: str = "GET"
    headers: tuple[tuple[str, str], ...] = ()
    explicit_port: bool = False

    @classmethod
    def from_url(cls, url: str, method: str = "GET", headers: Iterable[tuple[str, str]] = ()) -> Request:
        """Parse ``http[s]://host[:port]/path?query``; a URL without a scheme is taken as http://."""
        text = url.strip()
        if "://" not in text:
            text = "http://" + text
        parts = urlsplit(text)
        if parts.scheme not in ("http", "https"):
            raise ValueError(f"{url!r}: only http:// and https:// URLs can be explained")
        try:
            port = parts.port
        except ValueError:
            raise ValueError(f"{url!r}: the port is not a number between 0 and 65535") from None
        if not parts.hostname:
            raise ValueError(f"{url!r}: no host name; expected e.g. http://reviews:9080/reviews/0")
        default_port = 443 if parts.scheme == "https" else 80
        return cls(
            scheme=parts.scheme,
            host=parts.hostname,
            port=port or default_port,
            path=parts.path or "/",
            query=parts.query,
            method=method.upper(),
            headers=tuple((k.strip().lower(), v.strip()) for k, v in headers),
            explicit_port=port is not None,
        )

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        port = f":{self.port}" if self.explicit_port else ""
        return f"{self.scheme}://{host}{port}{self.path}" + (f"?{self.query}" if self.query else "")

    @property
    def authority(self) -> str:
        """The Host header: given explicitly, else the URL's host, with ``:port`` when the URL has one."""
        given = self._values("host") or self._values(":authority")
        if given:
            return given[0]
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}" if self.explicit_port else host

    def _values(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k == name]

    def header(self, name: str) -> str | None:
        """A header's value as Envoy matches it (repeated headers joined with ','); pseudo-headers too."""
        if name in (":authority", "host"):
            return self.authority
        pseudo = {
            ":method": self.method,
            ":scheme": self.scheme,
            ":path": self.path + (f"?{self.query}" if self.query else ""),
        }
        if name in pseudo:
            return pseudo[name]
        values = self._values(name)
        return ",".join(values) if values else None


@dataclass(frozen=True)
class Connection:
    """What a listener sees of the connection once its listener filters ran."""

    dest_ip: str | None
    dest_port: int
    source_ip: str | None = None
    server_name: str | None = None
    transport: str = "raw_buffer"
    alpn: tuple[str, ...] = ()


def is_ip(text: str | None) -> bool:
    try:
        ipaddress.ip_address(text or "")
        return True
    except ValueError:
        return False


def strip_port(host: str) -> str:
    if host.startswith("["):
        return host[: host.index("]") + 1] if "]" in host else host
    name, sep, port = host.rpartition(":")
    return name if sep and port.isdigit() and ":" not in name else host


def normalize_path(path: str) -> str:
    """RFC 3986 dot-segment removal, as Envoy's ``normalize_path`` (slashes are not merged)."""
    segments = path.split("/")
    out: list[str] = []
    for i, segment in enumerate(segments[1:], 1):
        last = i == len(segments) - 1
        if segment == "..":
            if out:
                out.pop()
        elif segment != ".":
            out.append(segment)
            continue
        if last:
            out.append("")
    return "/" + "/".join(out)
