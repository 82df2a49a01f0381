"""``plait iptables`` takes the arguments the injector gives istio-init, and installs the rules they mean.

Runs the command as the init container would (``plait ARGS``), in print mode (``--dry-run``).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from plait.cli.main import app

TESTDATA = Path(__file__).parent / "testdata"
runner = CliRunner()

ISTIO_DEFAULT_RULES = """\
*nat
:ISTIO_INBOUND - [0:0]
:ISTIO_REDIRECT - [0:0]
:ISTIO_IN_REDIRECT - [0:0]
:ISTIO_OUTPUT - [0:0]
-A ISTIO_INBOUND -p tcp --dport 15008 -j RETURN
-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001
-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006
-A PREROUTING -p tcp -j ISTIO_INBOUND
-A ISTIO_INBOUND -p tcp --dport 15090 -j RETURN
-A ISTIO_INBOUND -p tcp --dport 15021 -j RETURN
-A ISTIO_INBOUND -p tcp --dport 15020 -j RETURN
-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT
-A OUTPUT -p tcp -j ISTIO_OUTPUT
-A ISTIO_OUTPUT -o lo -s 127.0.0.6/32 -j RETURN
-A ISTIO_OUTPUT -o lo ! -d 127.0.0.1/32 -p tcp ! --dport 15008 -m owner --uid-owner 1337 -j ISTIO_IN_REDIRECT
-A ISTIO_OUTPUT -o lo -m owner ! --uid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -m owner --uid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -o lo ! -d 127.0.0.1/32 -p tcp ! --dport 15008 -m owner --gid-owner 1337 -j ISTIO_IN_REDIRECT
-A ISTIO_OUTPUT -o lo -m owner ! --gid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -m owner --gid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN
-A ISTIO_OUTPUT -j ISTIO_REDIRECT
COMMIT
"""


def init_args(case: str, pod_name: str) -> list[str]:
    """The istio-init container's arguments in a golden (its command is ``plait``)."""
    for doc in yaml.safe_load_all((TESTDATA / f"{case}.golden.yaml").read_text()):
        if doc["metadata"]["name"] == pod_name:
            [init] = [c for c in doc["spec"]["initContainers"] if c["name"] == "istio-init"]
            assert init["command"] == ["plait"]
            return init["args"]
    raise AssertionError(f"no pod {pod_name} in {case}")


def dry_run(args: list[str]) -> str:
    result = runner.invoke(app, [*args, "--dry-run"])
    assert result.exit_code == 0, result.output
    return result.stdout


def test_istios_init_command_as_written() -> None:
    assert (
        dry_run(
            [
                "iptables",
                "-p",
                "15001",
                "-z",
                "15006",
                "-u",
                "1337",
                "-m",
                "REDIRECT",
                "-i",
                "*",
                "-x",
                "",
                "-b",
                "*",
                "-d",
                "15090,15021,15020",
            ]
        )
        == ISTIO_DEFAULT_RULES
    )


def test_the_injected_default_init_container() -> None:
    assert dry_run(init_args("01-plain-pod", "productpage")) == ISTIO_DEFAULT_RULES


def test_every_traffic_annotation_becomes_its_rules() -> None:
    rules = dry_run(init_args("03-traffic-annotations", "ratings")).splitlines()
    outbound = [r for r in rules if r.startswith("-A ISTIO_OUTPUT")]
    assert outbound[-6:] == [
        "-A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN",
        "-A ISTIO_OUTPUT -d 10.96.0.1/32 -j RETURN",  # excludeOutboundIPRanges
        "-A ISTIO_OUTPUT -p tcp --dport 5432 -j ISTIO_REDIRECT",  # includeOutboundPorts
        "-A ISTIO_OUTPUT -d 10.96.0.0/12 -j ISTIO_REDIRECT",  # includeOutboundIPRanges
        "-A ISTIO_OUTPUT -d 192.168.0.0/16 -j ISTIO_REDIRECT",
        "-A ISTIO_OUTPUT -j RETURN",
    ]
    assert outbound[:2] == [
        "-A ISTIO_OUTPUT -p tcp --dport 3306 -j RETURN",  # excludeOutboundPorts
        "-A ISTIO_OUTPUT -p tcp --dport 6379 -j RETURN",
    ]
    inbound = [r for r in rules if r.startswith("-A ISTIO_INBOUND")]
    assert inbound == [
        "-A ISTIO_INBOUND -p tcp --dport 15008 -j RETURN",  # includeInboundPorts: only these
        "-A ISTIO_INBOUND -p tcp --dport 9080 -j ISTIO_IN_REDIRECT",
        "-A ISTIO_INBOUND -p tcp --dport 9443 -j ISTIO_IN_REDIRECT",
    ]


def test_excluded_inbound_ports_and_no_outbound_capture() -> None:
    rules = dry_run(init_args("03-traffic-annotations", "details"))
    assert "-A ISTIO_INBOUND -p tcp --dport 9000 -j RETURN\n" in rules  # excludeInboundPorts
    assert "ISTIO_REDIRECT\n" not in rules.replace("-A ISTIO_REDIRECT", "")  # includeOutboundIPRanges ""


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("-q", "db", "-q: 'db' is not a port number"),
        ("-m", "TPROXY", "-m TPROXY is not supported"),
    ],
)
def test_bad_values_are_refused(flag: str, value: str, message: str) -> None:
    result = runner.invoke(app, ["iptables", flag, value, "--dry-run"])
    assert result.exit_code == 1
    assert message in result.stderr
