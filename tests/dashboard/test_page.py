"""The dashboard's page in real headless Chromium (Debian's, driven by Playwright), against the control plane
of conftest.py: every page renders what the JSON API says, with no console error and no request to any other
origin; the graph's figures are in its tables as text. (Bookinfo under load: tests/observe/test_dashboard.py.)"""

from __future__ import annotations

import pytest

from plait.testing.chromium import chromium_page, chromium_path

pytestmark = pytest.mark.skipif(chromium_path() is None, reason="Debian's chromium is not installed")


def rows(page, table: str) -> list[list[str]]:
    return [
        [c.strip() for c in r]
        for r in page.eval_on_selector_all(
            f"#{table} tbody tr", "rows => rows.map(r => [...r.cells].map(c => c.textContent))"
        )
    ]


def test_every_page_renders_without_errors(control_plane):
    _, dashboard = control_plane
    with chromium_page(dashboard.base) as browser:
        page = browser.page
        page.goto(f"{dashboard.base}/?namespace=default&window=5m&type=workload#graph")
        page.wait_for_selector("#graph-edges tbody tr")
        assert rows(page, "graph-edges") == [
            ["productpage-v1", "reviews-v1", "http", "4.00", "25.0", "-", "yes", "-", "failing"]
        ]
        assert [r[0] for r in rows(page, "graph-nodes")] == ["productpage-v1", "reviews-v1"]
        assert page.eval_on_selector("#cy canvas", "c => c.width > 0")  # cytoscape drew
        page.evaluate("cy.edges()[0].emit('tap')")  # as a click on the edge: its figures beside the graph
        details = page.inner_text("#details-figures")
        assert "Requests/s\t4.00" in details and "Success %\t75.00" in details and "Health\tfailing" in details
        # and its time series (the stand-in Prometheus: no traffic at the first step, then 4 rps, 25 % 5xx)
        page.wait_for_selector("#series-table tbody tr", state="attached")
        captions = page.eval_on_selector_all("#details-series figcaption", "f => f.map(x => x.textContent)")
        assert captions == [
            "Requests/s: last 4.00, max 4.00",
            "Error %: last 25.0, max 25.0",
            "p95 ms: none in the window",
        ]
        series = rows(page, "series-table")
        assert len(series) == 31 and series[0][1:] == ["0.00", "-", "-"]  # 5m every 10 s
        assert {tuple(r[1:]) for r in series[1:]} == {("4.00", "25.0", "-")}
        axes = page.eval_on_selector_all(
            "#details-series .time-axis", "a => a.map(x => [...x.children].map(s => s.textContent))"
        )
        assert axes == [[series[0][0], series[-1][0]]] * 3  # each chart's time axis: the first and last step
        assert page.eval_on_selector_all("#details-series svg path", "p => p.length") == 2  # no p95 line
        page.focus("#graph-nodes tbody tr[data-name='reviews-v1']")  # from the keyboard: a row of the tables
        page.keyboard.press("Enter")
        page.wait_for_function("document.querySelector('#details-figures').textContent.includes('Inbound rps')")
        page.wait_for_selector("#details-series figure.spark[data-field='p95']", state="attached")
        assert "Node\treviews-v1" in page.inner_text("#details-figures")
        assert "Inbound p95 ms\t-" in page.inner_text("#details-figures")  # the stand-in has no latency
        fields = page.eval_on_selector_all("#details-series figure.spark", "f => f.map(x => x.dataset.field)")
        assert fields == ["rpsIn", "rpsOut", "errorRate", "p95"]
        before = page.evaluate("document.body.dataset.loaded")
        page.dispatch_event("#window", "change")  # a refresh rebuilds the tables: the row keeps the focus
        page.wait_for_function(f"document.body.dataset.loaded !== {before!r}")
        assert page.evaluate("document.activeElement.dataset.name") == "reviews-v1"
        page.click("a[data-page=workloads]")
        page.wait_for_selector("#workloads tbody tr")
        assert [r[0] for r in rows(page, "workloads")] == ["reviews-v1-0"]
        page.select_option("#namespace", "istio-system")
        page.wait_for_function("document.querySelector('#workloads tbody tr td').textContent === 'ingress-0'")
        page.select_option("#namespace", "default")
        page.click("a[data-page=services]")
        page.wait_for_selector("#services tbody tr")
        assert rows(page, "services")[0][:4] == ["reviews", "Service", "default", "9080"]
        page.click("a[data-page=config]")
        page.wait_for_selector("#config tbody tr")
        [vs] = rows(page, "config")
        assert vs[:4] == ["VirtualService", "default", "reviews", "✘"] and "IST0101" in vs[4]
        page.click("a[data-page=traces]")
        page.wait_for_function("document.body.dataset.loaded && location.hash === '#traces'")
        page.click("a[data-page=live]")
        page.wait_for_selector("#tap-target option", state="attached")
        assert page.eval_on_selector_all("#tap-target option", "o => o.map(x => x.value)") == ["deploy/reviews-v1"]
        assert page.inner_text("#status") == ""
    assert browser.problems == []


def test_a_request_elsewhere_is_caught(control_plane):
    _, dashboard = control_plane
    with chromium_page(dashboard.base) as browser:
        browser.page.goto(dashboard.base + "/")
        browser.page.evaluate("fetch('http://192.0.2.1/').catch(() => {})")
        browser.page.wait_for_timeout(200)
    assert any("request to another origin: http://192.0.2.1/" in p for p in browser.problems), browser.problems


def lit_pixels(page) -> int:
    """How many pixels of the traffic animation's canvas are drawn."""
    return page.eval_on_selector(
        "#traffic",
        "c => c.getContext('2d').getImageData(0, 0, c.width, c.height).data.filter((v, i) => i % 4 === 3 && v).length",
    )


def test_traffic_animation_moves_and_is_off_for_reduced_motion(control_plane):
    _, dashboard = control_plane
    with chromium_page(dashboard.base) as browser:
        page = browser.page
        page.goto(f"{dashboard.base}/?namespace=default&window=5m&type=workload#graph")
        page.wait_for_selector("#graph-edges tbody tr")
        assert page.is_checked("#animate")
        page.wait_for_function("document.querySelector('#traffic').width > 0")
        first = page.eval_on_selector("#traffic", "c => c.toDataURL()")
        page.wait_for_timeout(300)
        assert lit_pixels(page) > 0 and page.eval_on_selector("#traffic", "c => c.toDataURL()") != first  # moving
        red = page.eval_on_selector(
            "#traffic",
            "c => { const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; let n = 0;"
            " for (let i = 0; i < d.length; i += 4) if (d[i] > 180 && d[i + 1] < 80 && d[i + 3] === 255) n++; return n; }",
        )
        assert red > 0  # a quarter of the edge's requests fail: red dots
        page.uncheck("#animate")
        assert lit_pixels(page) == 0

        page.emulate_media(reduced_motion="reduce")
        page.reload()
        page.wait_for_selector("#graph-edges tbody tr")
        page.wait_for_timeout(300)
        assert not page.is_checked("#animate") and lit_pixels(page) == 0
        page.check("#animate")  # the user may still ask for it
        page.wait_for_timeout(300)
        assert lit_pixels(page) > 0
    assert browser.problems == []
