"""Connect storms are paced: at most N new ADS streams warm at once (until their proxy acknowledged
its first clusters and listeners), the others wait their turn in arrival order; a proxy that never
acknowledges gives its turn back after the timeout. Everyone syncs."""

from __future__ import annotations

import asyncio
import dataclasses

from test_server import bookinfo, productpage, run  # same directory

from plait.testing.ads_client import AdsClient, make_node
from plait.xds.hub import XdsHub
from plait.xds.server import Pacer, serve_ads


class CountingPacer(Pacer):
    """A Pacer that notes how many turns were running at once, and in which order they began."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.running = self.most = 0
        self.order: list[int] = []

    async def turn(self):
        end = await super().turn()
        self.running += 1
        self.most = max(self.most, self.running)
        self.order.append(len(self.order))
        ended = False

        def counted_end() -> None:
            nonlocal ended
            if not ended:
                ended = True
                self.running -= 1
            end()

        return counted_end


def test_a_storm_is_served_a_few_streams_at_a_time_and_every_proxy_syncs():
    async def scenario():
        snapshot = bookinfo()
        hub = XdsHub(snapshot)
        pacer = CountingPacer(limit=2)
        server = await serve_ads(hub, "127.0.0.1", 0, pacer=pacer)
        target = f"127.0.0.1:{server.bound_port}"
        proxies = [productpage(snapshot, name=f"productpage-{i}") for i in range(10)]
        clients = [AdsClient(target, make_node(p), delta=i % 2 == 1) for i, p in enumerate(proxies)]
        try:
            await asyncio.gather(*(c.start() for c in clients))
            await asyncio.gather(*(c.wait_synced(30) for c in clients))
        finally:
            await asyncio.gather(*(c.close() for c in clients))
            await server.stop(0.5)
        return pacer

    pacer = run(scenario())
    assert len(pacer.order) == 10  # every stream had its turn
    assert pacer.most == 2  # never more than the limit at once (and the limit was used)
    assert pacer.running == 0  # every turn ended


def test_a_turn_ends_by_itself_after_the_timeout():
    async def scenario() -> float:
        pacer = Pacer(limit=1, timeout=0.2)
        await pacer.turn()  # never ended by its holder
        started = asyncio.get_running_loop().time()
        end = await asyncio.wait_for(pacer.turn(), 5)
        end()
        end()  # ending twice gives back one turn only
        await asyncio.wait_for(pacer.turn(), 1)
        return asyncio.get_running_loop().time() - started

    waited = asyncio.run(scenario())
    assert waited >= 0.15  # the second turn waited for the first one's timeout


def test_turns_begin_in_arrival_order():
    async def scenario() -> list[int]:
        pacer = Pacer(limit=1)
        first = await pacer.turn()
        began: list[int] = []

        async def waiter(i: int) -> None:
            end = await pacer.turn()
            began.append(i)
            end()

        tasks = []
        for i in range(5):
            tasks.append(asyncio.create_task(waiter(i)))
            await asyncio.sleep(0)  # each is waiting before the next arrives
        first()
        await asyncio.gather(*tasks)
        return began

    assert asyncio.run(scenario()) == [0, 1, 2, 3, 4]


def test_a_proxy_that_is_refused_gives_its_turn_back():
    """A bad node id aborts the stream after its turn began: the turn ends with the stream."""

    async def scenario() -> CountingPacer:
        snapshot = bookinfo()
        pacer = CountingPacer(limit=1)
        server = await serve_ads(XdsHub(snapshot), "127.0.0.1", 0, pacer=pacer)
        target = f"127.0.0.1:{server.bound_port}"
        bad = make_node(productpage(snapshot))
        bad.id = "not-an-istio-node-id"
        try:
            async with AdsClient(target, bad) as client:
                await asyncio.wait_for(client.wait_for(lambda c: c.error is not None), 10)
            good = dataclasses.replace(productpage(snapshot), name="productpage-2")
            async with AdsClient(target, make_node(good)) as client:
                await client.wait_synced(10)
        finally:
            await server.stop(0.5)
        return pacer

    pacer = run(scenario())
    assert len(pacer.order) == 2 and pacer.running == 0
