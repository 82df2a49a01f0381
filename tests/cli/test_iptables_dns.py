"""`plait iptables --redirect-dns`: Istio's DNS capture rules, printed (pure) and removed again."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from plait.cli.main import app
from plait.runtime.iptables import CaptureConfig, IptablesError, removal_input, render_rules

DNS_TCP = "-A ISTIO_OUTPUT -d 10.96.0.10/32 -p tcp --dport 53 -j REDIRECT --to-ports 15053"
DNS_UDP = [
    "-A OUTPUT -p udp --dport 53 -m owner --uid-owner 1337 -j RETURN",
    "-A OUTPUT -p udp --dport 53 -m owner --gid-owner 1337 -j RETURN",
    "-A OUTPUT -d 10.96.0.10/32 -p udp --dport 53 -j REDIRECT --to-ports 15053",
]


def test_dns_rules_follow_istio_order() -> None:
    config = CaptureConfig.from_flags(redirect_dns=True, dns_servers=["10.96.0.10", "fd00::10"])
    lines = render_rules(config).splitlines()
    # TCP: after the proxy's own RETURNs (its upstream queries get out), before 127.0.0.1's RETURN
    assert lines.index(DNS_TCP) == lines.index("-A ISTIO_OUTPUT -m owner --gid-owner 1337 -j RETURN") + 1
    assert lines.index("-A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN") == lines.index(DNS_TCP) + 1
    # UDP: in OUTPUT itself, the proxy's queries first
    assert lines[-4:-1] == DNS_UDP
    # TCP DNS stays out of the loopback rules (Istio: `! --dport 53`), so DNS to a loopback nameserver is captured
    assert "-A ISTIO_OUTPUT -o lo -p tcp ! --dport 53 -m owner ! --uid-owner 1337 -j RETURN" in lines
    assert (
        "-A ISTIO_OUTPUT -o lo ! -d 127.0.0.1/32 -p tcp ! --dport 53 -m owner --uid-owner 1337 -j ISTIO_IN_REDIRECT"
        in lines
    )
    assert not any("fd00" in line for line in lines)  # IPv6 nameservers: plait captures IPv4 only


def test_capture_all_dns_and_no_dns() -> None:
    rules = render_rules(CaptureConfig.from_flags(redirect_dns=True, capture_all_dns=True))
    assert "-A ISTIO_OUTPUT -p tcp --dport 53 -j REDIRECT --to-ports 15053\n" in rules
    assert "-A OUTPUT -p udp --dport 53 -j REDIRECT --to-ports 15053\n" in rules
    assert render_rules(CaptureConfig.from_flags(dns_servers=["10.96.0.10"])) == render_rules(CaptureConfig())


def test_bad_nameserver_is_named() -> None:
    with pytest.raises(IptablesError, match="nameserver 'dns.example' is not an IP address"):
        CaptureConfig.from_flags(redirect_dns=True, dns_servers=["dns.example"])


def test_cleanup_removes_the_udp_dns_rules() -> None:
    saved = "\n".join(
        [
            "*nat",
            ":OUTPUT ACCEPT [0:0]",
            ":ISTIO_OUTPUT - [0:0]",
            "-A OUTPUT -p tcp -j ISTIO_OUTPUT",
            "-A OUTPUT -p udp -m udp --dport 53 -m owner --uid-owner 1337 -j RETURN",
            "-A OUTPUT -d 10.96.0.10/32 -p udp -m udp --dport 53 -j REDIRECT --to-ports 15053",
            "-A OUTPUT -p udp -m udp --dport 5353 -j RETURN",
            "COMMIT",
        ]
    )
    assert removal_input(saved).splitlines() == [
        "*nat",
        "-D OUTPUT -p tcp -j ISTIO_OUTPUT",
        "-D OUTPUT -p udp -m udp --dport 53 -m owner --uid-owner 1337 -j RETURN",
        "-D OUTPUT -d 10.96.0.10/32 -p udp -m udp --dport 53 -j REDIRECT --to-ports 15053",
        "-F ISTIO_OUTPUT",
        "-X ISTIO_OUTPUT",
        "COMMIT",
    ]


def test_cli_reads_nameservers_from_resolv_conf(tmp_path: Path) -> None:
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("nameserver 10.96.0.10\nsearch default.svc.cluster.local svc.cluster.local\n")
    result = CliRunner().invoke(app, ["iptables", "--dry-run", "--redirect-dns", "--resolv-conf", str(resolv)])
    assert result.exit_code == 0, result.output
    assert DNS_TCP in result.stdout.splitlines()
    missing = CliRunner().invoke(app, ["iptables", "-n", "--redirect-dns", "--resolv-conf", str(tmp_path / "none")])
    assert missing.exit_code == 1 and "cannot read" in missing.output
