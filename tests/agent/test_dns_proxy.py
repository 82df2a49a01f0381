"""The agent's DNS proxy: answers mesh names from the name table, forwards the rest, survives a dead upstream."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import pytest
from typer.testing import CliRunner

from plait.agent.dnslookup import LookupTable, ResolvConf, parse_resolv_conf, parse_upstream
from plait.agent.dnsproxy import DnsProxy
from plait.cli.main import app
from plait.testing.dns import FakeNameserver, addresses, query
from plait.xds.nametable import NameInfo, NameTable

SEARCH = ("default.svc.cluster.local", "svc.cluster.local", "cluster.local")
TABLE = NameTable(
    {
        "reviews.default.svc.cluster.local": NameInfo(
            ips=("10.96.0.12",), registry="Kubernetes", shortname="reviews", namespace="default"
        ),
        "ledger.finance.svc.cluster.local": NameInfo(
            ips=("10.96.0.40",), registry="Kubernetes", shortname="ledger", namespace="finance"
        ),
        "legacy.corp.example": NameInfo(ips=("192.168.7.10", "fd00::7"), registry="External"),
    }
)


def ask(table: LookupTable, name: str, rdtype: str = "A") -> dns.message.Message | None:
    return table.answer(dns.message.make_query(name, rdtype))


@pytest.mark.parametrize(
    "name",
    [
        "reviews",
        "reviews.default",
        "reviews.default.svc",
        "reviews.default.svc.cluster.local",
        "reviews.default.svc.cluster.local.",
        "REVIEWS.Default.svc.cluster.local",
    ],
)
def test_kubernetes_names_as_search_domains_produce_them(name: str) -> None:
    response = ask(LookupTable(TABLE, "default", SEARCH), name)
    assert response is not None
    assert response.rcode() == dns.rcode.NOERROR and response.flags & dns.flags.AA
    assert addresses(response) == ["10.96.0.12"]
    assert response.answer[0].ttl == 30


def test_short_name_only_in_the_proxys_own_namespace() -> None:
    table = LookupTable(TABLE, "default", SEARCH)
    assert table.lookup("ledger") is None
    assert table.lookup("ledger.finance").host == "ledger.finance.svc.cluster.local"


def test_search_expansion_of_a_service_entry_host_is_a_cname() -> None:
    response = ask(LookupTable(TABLE, "default", SEARCH), "legacy.corp.example.default.svc.cluster.local")
    assert response is not None
    cname, a = response.answer
    assert cname.rdtype == dns.rdatatype.CNAME and cname[0].target.to_text() == "legacy.corp.example."
    assert a.name.to_text() == "legacy.corp.example." and addresses(response) == ["192.168.7.10"]


def test_aaaa_answers_ipv6_or_nodata() -> None:
    table = LookupTable(TABLE, "default", SEARCH)
    assert addresses(ask(table, "legacy.corp.example", "AAAA")) == ["fd00::7"]
    nodata = ask(table, "reviews", "AAAA")
    assert nodata is not None and nodata.rcode() == dns.rcode.NOERROR and nodata.answer == []


def test_unknown_names_and_other_types_go_upstream() -> None:
    table = LookupTable(TABLE, "default", SEARCH)
    assert ask(table, "www.example.org") is None
    assert ask(table, "reviews", "MX") is None
    assert ask(table, "payments.default.svc.cluster.local") is None


def test_resolv_conf() -> None:
    text = (
        "# generated\nnameserver 10.96.0.10\nnameserver fe80::1%eth0\n"
        "search Default.svc.cluster.local. svc.cluster.local\noptions ndots:5\n"
    )
    assert parse_resolv_conf(text) == ResolvConf(
        (("10.96.0.10", 53), ("fe80::1", 53)), ("default.svc.cluster.local", "svc.cluster.local")
    )
    assert parse_upstream("127.0.0.1:5353") == ("127.0.0.1", 5353)
    assert parse_upstream("[::1]:5353") == ("::1", 5353)
    with pytest.raises(ValueError, match="expected IP or IP:PORT"):
        parse_upstream("dns.example:53")


async def _with_proxy(test: Callable[[DnsProxy, FakeNameserver], Awaitable[None]]) -> None:
    upstream = FakeNameserver("203.0.113.5")
    await upstream.start()
    dns_proxy = DnsProxy(ResolvConf((("127.0.0.1", upstream.port),), SEARCH), "default", upstream_timeout=0.5)
    dns_proxy.update(TABLE)
    await dns_proxy.start("127.0.0.1", 0)
    try:
        await test(dns_proxy, upstream)
    finally:
        await dns_proxy.stop()
        await upstream.stop()


def with_proxy(test: Callable[[DnsProxy, FakeNameserver], Awaitable[None]]) -> None:
    """Run `test(proxy, upstream)` against a DNS proxy on a free port whose upstream is a fake nameserver."""
    asyncio.run(_with_proxy(test))


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_answers_table_names_and_forwards_the_rest(tcp: bool) -> None:
    async def test(proxy: DnsProxy, upstream: FakeNameserver) -> None:
        mesh = await query("reviews", "127.0.0.1", proxy.port, tcp=tcp)
        assert addresses(mesh) == ["10.96.0.12"]
        outside = await query("www.example.org", "127.0.0.1", proxy.port, tcp=tcp)
        assert addresses(outside) == ["203.0.113.5"]
        assert upstream.asked == ["www.example.org."]  # the table's name never reached the upstream

    with_proxy(test)


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_mesh_names_resolve_while_upstream_is_silent(tcp: bool) -> None:
    async def test(proxy: DnsProxy, upstream: FakeNameserver) -> None:
        upstream.silent = True
        pending = asyncio.create_task(query("www.example.org", "127.0.0.1", proxy.port, tcp=tcp))
        mesh = await query("legacy.corp.example", "127.0.0.1", proxy.port, tcp=tcp)
        assert addresses(mesh) == ["192.168.7.10"]
        assert not pending.done()  # the upstream's question is still waiting
        assert (await pending).rcode() == dns.rcode.SERVFAIL  # after the upstream timeout

    with_proxy(test)


def test_mesh_names_resolve_while_upstream_is_down() -> None:
    async def test(proxy: DnsProxy, upstream: FakeNameserver) -> None:
        await upstream.stop()
        assert addresses(await query("reviews.default", "127.0.0.1", proxy.port)) == ["10.96.0.12"]
        assert (await query("www.example.org", "127.0.0.1", proxy.port)).rcode() == dns.rcode.SERVFAIL

    with_proxy(test)


def test_table_updates_take_effect() -> None:
    async def test(proxy: DnsProxy, upstream: FakeNameserver) -> None:
        proxy.update(NameTable({"new.example": NameInfo(ips=("192.0.2.1",), registry="External")}))
        assert addresses(await query("new.example", "127.0.0.1", proxy.port)) == ["192.0.2.1"]
        assert addresses(await query("reviews", "127.0.0.1", proxy.port)) == ["203.0.113.5"]  # now the upstream's

    with_proxy(test)


def test_answers_too_big_for_udp_are_truncated_and_complete_over_tcp() -> None:
    many = tuple(f"10.1.{i // 250}.{i % 250 + 1}" for i in range(100))  # 100 A records: > 512 bytes
    headless = NameTable({"db.default.svc.cluster.local": NameInfo(ips=many, registry="Kubernetes")})

    async def test(proxy: DnsProxy, upstream: FakeNameserver) -> None:
        proxy.update(headless)
        over_udp = await query("db.default.svc.cluster.local", "127.0.0.1", proxy.port)
        assert over_udp.flags & dns.flags.TC and over_udp.answer == []
        over_tcp = await query("db.default.svc.cluster.local", "127.0.0.1", proxy.port, tcp=True)
        assert sorted(addresses(over_tcp)) == sorted(many)

    with_proxy(test)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--dns-upstream", "dns.example"], "upstream nameserver 'dns.example': expected IP or IP:PORT"),
        (["--resolv-conf", "/nonexistent/resolv.conf"], "cannot read /nonexistent/resolv.conf"),
    ],
)
def test_bad_dns_settings_are_refused_before_anything_starts(args: list[str], message: str) -> None:
    result = CliRunner().invoke(app, ["agent", "--name", "a", "--ip", "127.0.0.1", "--dns-capture", *args])
    assert result.exit_code == 2
    assert message in " ".join(result.output.replace("│", " ").split())
