"""Bookinfo apps as real processes on loopback, without a mesh: what they answer and what they send.

Each app runs as ``python -m plait.demo.bookinfo.apps.<service>`` on its own
address in a ``127.0.N`` subnet held for this module, on a free port, pointed
at the others with Istio's ``<SERVICE>_HOSTNAME`` / ``<SERVICE>_SERVICE_PORT``
variables. Where a test
must see what an app sends (headers, proxy requests) or make a backend slow or
fail, the backend is a recording stub in the test process.
"""

from __future__ import annotations

import http.client
import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib.util import find_spec
from pathlib import Path

import pytest
import yaml

from plait.demo.bookinfo.apps.reviews import Settings
from plait.demo.bookinfo.apps.view import read_product_page
from plait.testing.backends import loopback_subnet
from plait.testing.live import free_port

MANIFEST = Path(__file__).parents[2] / "src/plait/demo/bookinfo/manifests/bookinfo.yaml"
PROXY_VARIABLES = {"http_proxy", "https_proxy", "all_proxy", "no_proxy"}
TRACE_HEADERS = {
    "x-request-id": "6b0c7c43-5d6b-9d4c-a3a6-0c2c1c7e9b11",
    "x-b3-traceid": "80f198ee56343ba864fe8b2a57d3eff7",
    "x-b3-spanid": "e457b5a2e4d86bd1",
    "x-b3-parentspanid": "05e3ac9a4f6e3b90",
    "x-b3-sampled": "1",
    "x-b3-flags": "0",
    "b3": "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90",
    "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    "tracestate": "rojo=00f067aa0ba902b7",
    "x-ot-span-context": "80f198ee56343ba8:e457b5a2e4d86bd1:05e3ac9a4f6e3b90:1",
    "x-cloud-trace-context": "105445aa7843bc8bf206b12000100000/1;o=1",
    "grpc-trace-bin": "AABL/FIlLUhWgNqLBDRXF8C2AQI=",
}
DETAILS_UNAVAILABLE = "Sorry, product details are currently unavailable for this book."
REVIEWS_UNAVAILABLE = "Sorry, product reviews are currently unavailable for this book."
RATINGS_UNAVAILABLE = "Ratings service is currently unavailable"


@dataclass
class App:
    process: subprocess.Popen
    address: str
    port: int
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text()


def start_app(service: str, address: str, log_dir: Path, **env: str) -> App:
    port = free_port(address)
    clean_env = {name: value for name, value in os.environ.items() if name.lower() not in PROXY_VARIABLES}
    log_path = log_dir / f"{service}-{address}.log"
    with log_path.open("w") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", f"plait.demo.bookinfo.apps.{service}"],
            env={**clean_env, "BIND_ADDRESS": address, "PORT": str(port), **env},
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    return App(process, address, port, log_path)


def stop_apps(apps: list[App]) -> None:
    """SIGTERM to every app still running, then wait for each; SIGKILL one that outlives 5 s."""
    running = [app for app in apps if app.process.poll() is None]
    for app in running:
        app.process.terminate()
    for app in running:
        try:
            app.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            app.process.kill()
            app.process.wait(timeout=5)


def wait_ready(*apps: App, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    for app in apps:
        while get(app, "/health", timeout=1).status != 200:
            assert app.process.poll() is None, f"app exited:\n{app.log()}"
            assert time.monotonic() < deadline, f"app not ready:\n{app.log()}"
            time.sleep(0.05)


@dataclass(frozen=True)
class Nowhere:
    """A loopback address and port where nothing listens: connections are refused."""

    address: str
    port: int

    @classmethod
    def on(cls, address: str) -> Nowhere:
        return cls(address, free_port(address))

    @property
    def url(self) -> str:
        return f"http://{self.address}:{self.port}"


def points_at(service: str, target: App | Stub | Nowhere) -> dict[str, str]:
    """Istio's variables that send an app's calls for `service` to `target`."""
    return {f"{service.upper()}_HOSTNAME": target.address, f"{service.upper()}_SERVICE_PORT": str(target.port)}


@dataclass
class Reply:
    status: int
    headers: http.client.HTTPMessage | None = None
    body: str = ""

    def json(self) -> object:
        return json.loads(self.body)


def get(
    app: App,
    path: str,
    headers: dict[str, str] | None = None,
    method: str = "GET",
    body: str | Iterator[bytes] | None = None,
    timeout: float = 15.0,
) -> Reply:
    """One request on a fresh connection; an iterator body goes chunked. Status 0 when no answer came."""
    connection = http.client.HTTPConnection(app.address, app.port, timeout=timeout)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return Reply(response.status, response.headers, response.read().decode())
    except OSError:
        return Reply(0)
    finally:
        connection.close()


@dataclass
class Stub:
    """A backend in the test process: answers every GET with `payload` (after `delay` s) and records requests."""

    payload: object
    status: int = 200
    delay: float = 0.0
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)  # (request target, lower-cased headers)
    address: str = "127.0.0.1"
    port: int = 0

    def __enter__(self) -> Stub:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                stub.requests.append((self.path, {name.lower(): value for name, value in self.headers.items()}))
                time.sleep(stub.delay)
                body = json.dumps(stub.payload).encode()
                self.send_response(stub.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_args: object) -> None:
                pass

        class QuietServer(ThreadingHTTPServer):
            def handle_error(self, *_args: object) -> None:  # clients that gave up on a slow answer
                pass

        self._server = QuietServer((self.address, 0), Handler)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def last_headers(self) -> dict[str, str]:
        return self.requests[-1][1]


DETAILS_JSON = {
    "id": 0,
    "type": "paperback",
    "pages": 200,
    "publisher": "PublisherA",
    "language": "English",
    "ISBN-10": "1234567890",
    "ISBN-13": "123-1234567890",
}
REVIEWS_JSON = {
    "id": "0",
    "podname": "stub",
    "clustername": "null",
    "reviews": [{"reviewer": "Reviewer1", "text": "good"}, {"reviewer": "Reviewer2", "text": "fun"}],
}
RATINGS_JSON = {"id": 0, "ratings": {"Reviewer1": 5, "Reviewer2": 4}}


@pytest.fixture(scope="module")
def log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("bookinfo-logs")


@pytest.fixture(scope="module")
def addresses() -> Iterator[Iterator[str]]:
    """Fresh addresses in a 127.0.N subnet no other test process holds; .1 is left unused."""
    with loopback_subnet() as net:
        yield (f"{net}.{host}" for host in itertools.count(10))


@pytest.fixture
def nowhere(addresses: Iterator[str]) -> Nowhere:
    return Nowhere.on(next(addresses))


@pytest.fixture
def apps(log_dir: Path, addresses: Iterator[str]):
    """Starts apps for one test (start(service, **env)) and stops them, by PID, afterwards."""
    started: list[App] = []

    def start(service: str, **env: str) -> App:
        app = start_app(service, next(addresses), log_dir, **env)
        started.append(app)
        return app

    yield start
    stop_apps(started)


@pytest.fixture(scope="module")
def bookinfo(log_dir: Path, addresses: Iterator[str]):
    """The whole app: ratings, details, reviews v1/v2/v3 and one productpage per reviews version."""
    ratings = start_app("ratings", next(addresses), log_dir)
    details = start_app("details", next(addresses), log_dir)
    reviews = {
        version: start_app(
            "reviews",
            next(addresses),
            log_dir,
            SERVICE_VERSION=version,
            POD_NAME=f"reviews-{version}-0",
            **points_at("ratings", ratings),
        )
        for version in ("v1", "v2", "v3")
    }
    productpages = {
        version: start_app(
            "productpage",
            next(addresses),
            log_dir,
            **points_at("details", details),
            **points_at("reviews", reviews[version]),
            **points_at("ratings", ratings),
        )
        for version in reviews
    }
    everything = [ratings, details, *reviews.values(), *productpages.values()]
    try:
        wait_ready(*everything)
        yield {"ratings": ratings, "details": details, "reviews": reviews, "productpage": productpages}
    finally:
        stop_apps(everything)


def test_details_answers_like_istios(bookinfo):
    details = bookinfo["details"]
    assert get(details, "/details/0").json() == {
        "id": 0,
        "author": "William Shakespeare",
        "year": 1595,
        "type": "paperback",
        "pages": 200,
        "publisher": "PublisherA",
        "language": "English",
        "ISBN-10": "1234567890",
        "ISBN-13": "123-1234567890",
    }
    assert get(details, "/details/7").json()["id"] == 7
    bad = get(details, "/details/abc")
    assert (bad.status, bad.json()) == (400, {"error": "please provide numeric product id"})
    assert get(details, "/health").json() == {"status": "Details is healthy"}


def test_ratings_answers_like_istios(bookinfo):
    ratings = bookinfo["ratings"]
    assert get(ratings, "/ratings/0").json() == RATINGS_JSON
    assert get(ratings, "/ratings/x").status == 400
    assert get(ratings, "/health").json() == {"status": "Ratings is healthy"}
    assert get(ratings, "/nothing").status == 404


@pytest.mark.parametrize(
    "version, rating1, rating2",
    [
        ("v1", None, None),
        ("v2", {"stars": 5, "color": "black"}, {"stars": 4, "color": "black"}),
        ("v3", {"stars": 5, "color": "red"}, {"stars": 4, "color": "red"}),
    ],
)
def test_reviews_versions_answer_like_istios(bookinfo, version, rating1, rating2):
    answer = get(bookinfo["reviews"][version], "/reviews/0").json()
    assert (answer["id"], answer["podname"], answer["clustername"]) == ("0", f"reviews-{version}-0", "null")
    first, second = answer["reviews"]
    assert first["reviewer"] == "Reviewer1" and first["text"].startswith("An extremely entertaining play")
    assert second["reviewer"] == "Reviewer2" and second["text"].startswith("Absolutely fun and entertaining")
    assert (first.get("rating"), second.get("rating")) == (rating1, rating2)
    assert get(bookinfo["reviews"][version], "/health").json() == {"status": "Reviews is healthy"}


@pytest.mark.parametrize("version, stars", [("v1", [None, None]), ("v2", [5, 4]), ("v3", [5, 4])])
def test_product_page_shows_what_each_reviews_version_gives(bookinfo, version, stars):
    reply = get(bookinfo["productpage"][version], "/productpage")
    assert reply.status == 200 and reply.headers["Content-Type"].startswith("text/html")
    page = read_product_page(reply.body)
    assert page.reviews_version == version
    assert [review.stars for review in page.reviews] == stars
    assert page.details["ISBN-10"] == "1234567890" and page.details["Publisher"] == "PublisherA"
    assert (page.details_error, page.reviews_error, page.user) == (None, None, None)
    assert page.reviews_served_by == f"reviews-{version}-0"
    assert "The Comedy of Errors" in reply.body and 'name="login_form"' in reply.body
    assert reply.body.count('class="glyphicon glyphicon-star"') == sum(filter(None, stars))


def test_json_api_answers_like_istios(bookinfo):
    productpage = bookinfo["productpage"]["v2"]
    products = get(productpage, "/api/v1/products").json()
    assert [(product["id"], product["title"]) for product in products] == [(0, "The Comedy of Errors")]
    assert get(productpage, "/api/v1/products/0").json()["author"] == "William Shakespeare"
    reviews = get(productpage, "/api/v1/products/0/reviews").json()
    assert [review["rating"]["color"] for review in reviews["reviews"]] == ["black", "black"]
    assert get(productpage, "/api/v1/products/0/ratings").json() == RATINGS_JSON
    assert get(productpage, "/health").body == "Product page is healthy"
    assert "Normal user" in get(productpage, "/").body
    assert get(productpage, "/static/bookinfo.css").headers["Content-Type"] == "text/css"


def test_login_sets_a_user_cookie_and_reviews_then_get_end_user(apps):
    with Stub(DETAILS_JSON) as details, Stub(REVIEWS_JSON) as reviews:
        productpage = apps("productpage", **points_at("details", details), **points_at("reviews", reviews))
        wait_ready(productpage)

        form = {"Content-Type": "application/x-www-form-urlencoded"}
        login = get(productpage, "/login", method="POST", body="username=jason&passwd=secret", headers=form)
        assert (login.status, login.headers["Location"]) == (302, "/productpage")
        assert login.headers["Set-Cookie"] == "user=jason; Path=/"
        chunked = get(
            productpage, "/login", method="POST", body=iter([b"username=jason", b"&passwd=secret"]), headers=form
        )  # no Content-Length: as a proxy may forward an HTTP/2 form
        assert chunked.headers["Set-Cookie"] == "user=jason; Path=/"

        signed_in = get(productpage, "/productpage", headers={"Cookie": "user=jason"})
        assert "Welcome, jason" in signed_in.body and read_product_page(signed_in.body).user == "jason"
        assert reviews.last_headers()["end-user"] == "jason"
        assert details.last_headers()["end-user"] == "jason"

        logout = get(productpage, "/logout", headers={"Cookie": "user=jason"})
        assert logout.status == 302 and "Max-Age=0" in logout.headers["Set-Cookie"]
        signed_out = get(productpage, "/productpage")
        assert read_product_page(signed_out.body).user is None and "Sign in" in signed_out.body
        assert "end-user" not in reviews.last_headers()


def test_trace_headers_and_end_user_travel_from_productpage_through_reviews_to_ratings(apps):
    with Stub(DETAILS_JSON) as details, Stub(RATINGS_JSON) as ratings:
        reviews = apps("reviews", SERVICE_VERSION="v2", **points_at("ratings", ratings))
        productpage = apps("productpage", **points_at("details", details), **points_at("reviews", reviews))
        wait_ready(reviews, productpage)
        page = get(productpage, "/productpage", headers={**TRACE_HEADERS, "Cookie": "user=jason"})
        assert read_product_page(page.body).reviews_version == "v2"
        for backend in (details, ratings):
            received = backend.last_headers()
            assert {name: received.get(name) for name in TRACE_HEADERS} == TRACE_HEADERS
        assert ratings.last_headers()["end-user"] == "jason"
        assert ratings.last_headers()["cookie"] == "user=jason"


def test_failed_backends_show_istios_messages(apps, bookinfo, nowhere):
    with Stub({"error": "Service unavailable"}, status=503) as failing_details:
        productpage = apps(
            "productpage",
            **points_at("details", failing_details),
            **points_at("reviews", nowhere),
            **points_at("ratings", nowhere),
        )
        reviews_without_ratings = apps("reviews", SERVICE_VERSION="v3", **points_at("ratings", nowhere))
        productpage_v3 = apps(
            "productpage", **points_at("details", bookinfo["details"]), **points_at("reviews", reviews_without_ratings)
        )
        wait_ready(productpage, reviews_without_ratings, productpage_v3)

        broken = get(productpage, "/productpage")
        assert broken.status == 200
        page = read_product_page(broken.body)
        assert (page.details_error, page.reviews_error) == (DETAILS_UNAVAILABLE, REVIEWS_UNAVAILABLE)
        assert "Error fetching product details!" in broken.body and "Error fetching product reviews!" in broken.body

        api = get(productpage, "/api/v1/products/0")
        assert (api.status, api.json()) == (503, {"error": DETAILS_UNAVAILABLE})
        assert get(productpage, "/api/v1/products/0/reviews").status == 500
        assert get(productpage, "/api/v1/products/0/ratings").json() == {
            "error": "Sorry, product ratings are currently unavailable for this book."
        }

        no_ratings = read_product_page(get(productpage_v3, "/productpage").body)
        assert [review.rating_error for review in no_ratings.reviews] == [RATINGS_UNAVAILABLE] * 2
        assert no_ratings.reviews_version is None and no_ratings.reviews_error is None


def test_outgoing_calls_go_through_http_proxy_unless_no_proxy(apps, bookinfo, nowhere):
    with Stub(RATINGS_JSON) as proxy:
        proxied = apps("reviews", SERVICE_VERSION="v3", HTTP_PROXY=f"http://127.0.0.1:{proxy.port}")
        details, reviews = bookinfo["details"], bookinfo["reviews"]["v1"]
        bypassing = apps(
            "productpage",
            HTTP_PROXY=nowhere.url,
            NO_PROXY=f"{details.address},{reviews.address}",
            **points_at("details", details),
            **points_at("reviews", reviews),
        )
        wait_ready(proxied, bypassing)

        answer = get(proxied, "/reviews/0", headers={"x-request-id": "through-proxy"}).json()
        assert answer["reviews"][0]["rating"] == {"stars": 5, "color": "red"}
        target, headers = proxy.requests[-1]
        assert (target, headers["host"], headers["x-request-id"]) == (
            "http://ratings:9080/ratings/0",
            "ratings:9080",
            "through-proxy",
        )

        assert read_product_page(get(bypassing, "/productpage").body).reviews_version == "v1"


def test_timeouts_give_istios_fault_injection_outcomes(apps):
    """productpage: 3 s per try, 2 tries for reviews; reviews → ratings: 10 s for v2 (black), 2.5 s for v3 (red)."""
    with (
        Stub(DETAILS_JSON) as details,
        Stub(REVIEWS_JSON, delay=10) as slow_reviews,
        Stub(RATINGS_JSON, delay=4.5) as slow_ratings,
    ):
        productpage = apps("productpage", **points_at("details", details), **points_at("reviews", slow_reviews))
        reviews_v2 = apps("reviews", SERVICE_VERSION="v2", **points_at("ratings", slow_ratings))
        reviews_v3 = apps("reviews", SERVICE_VERSION="v3", **points_at("ratings", slow_ratings))
        wait_ready(productpage, reviews_v2, reviews_v3)

        def timed(app: App, path: str) -> tuple[float, Reply]:
            started = time.monotonic()
            reply = get(app, path, timeout=20)
            return time.monotonic() - started, reply

        with ThreadPoolExecutor(3) as pool:
            page_call = pool.submit(timed, productpage, "/productpage")
            v2_call = pool.submit(timed, reviews_v2, "/reviews/0")
            v3_call = pool.submit(timed, reviews_v3, "/reviews/0")
            (page_seconds, page), (v2_seconds, v2), (v3_seconds, v3) = (
                page_call.result(),
                v2_call.result(),
                v3_call.result(),
            )

        assert read_product_page(page.body).reviews_error == REVIEWS_UNAVAILABLE
        assert 5.9 <= page_seconds < 8.0 and len(slow_reviews.requests) == 2
        assert [review["rating"] for review in v2.json()["reviews"]] == [
            {"stars": 5, "color": "black"},
            {"stars": 4, "color": "black"},
        ]
        assert v2_seconds >= 4.5
        assert [review["rating"] for review in v3.json()["reviews"]] == [{"error": RATINGS_UNAVAILABLE}] * 2
        assert 2.4 <= v3_seconds < 4.0


def test_sigterm_stops_an_app_cleanly_and_every_request_is_logged(apps):
    ratings = apps("ratings")
    wait_ready(ratings)
    assert get(ratings, "/ratings/3").status == 200
    ratings.process.send_signal(signal.SIGTERM)
    assert ratings.process.wait(timeout=5) == 0
    lines = ratings.log().splitlines()
    assert any(f"listening on http://{ratings.address}:{ratings.port}" in line for line in lines)
    assert sum('"GET /ratings/3"' in line and " 200 " in line for line in lines) == 1
    assert sum('"GET /health"' in line for line in lines) >= 1


def test_manifest_deploys_the_apps_like_istios_bookinfo():
    documents = [document for document in yaml.safe_load_all(MANIFEST.read_text()) if document]
    by_kind: dict[str, dict[str, dict]] = {}
    for document in documents:
        by_kind.setdefault(document["kind"], {})[document["metadata"]["name"]] = document
    services = ["details", "ratings", "reviews", "productpage"]
    assert sorted(by_kind["Service"]) == sorted(services)
    for name, service in by_kind["Service"].items():
        assert service["spec"]["ports"] == [{"port": 9080, "name": "http"}]
        assert service["spec"]["selector"] == {"app": name}
    assert sorted(by_kind["ServiceAccount"]) == sorted(f"bookinfo-{name}" for name in services)
    assert sorted(by_kind["Deployment"]) == [
        "details-v1",
        "productpage-v1",
        "ratings-v1",
        "reviews-v1",
        "reviews-v2",
        "reviews-v3",
    ]

    reviews_settings = {}
    for name, deployment in by_kind["Deployment"].items():
        app, version = name.split("-")
        pod = deployment["spec"]["template"]
        assert pod["metadata"]["labels"] == {"app": app, "version": version}
        assert pod["spec"]["serviceAccountName"] == f"bookinfo-{app}"
        (container,) = pod["spec"]["containers"]
        assert container["command"] == ["python", "-m", f"plait.demo.bookinfo.apps.{app}"]
        assert find_spec(container["command"][2]) is not None
        assert container["ports"] == [{"containerPort": 9080}]
        assert container["readinessProbe"] == {"httpGet": {"path": "/health", "port": 9080}}
        if app == "reviews":
            env = {variable["name"]: variable["value"] for variable in container["env"]}
            reviews_settings[version] = Settings.from_env(env)
    assert {
        version: (settings.ratings_enabled, settings.star_color) for version, settings in reviews_settings.items()
    } == {"v1": (False, "black"), "v2": (True, "black"), "v3": (True, "red")}


def test_after_sigterm_an_app_keeps_serving_for_its_shutdown_delay_then_exits(apps):
    """In a Kubernetes pod (default 5 s there, the sidecar's drain period): callers' proxies learn a moment after SIGTERM that the pod
    left the Service, and what they send meanwhile is still answered."""
    details = apps("details", SHUTDOWN_DELAY_SECONDS="1.5")
    wait_ready(details)
    details.process.terminate()
    time.sleep(0.5)
    assert get(details, "/details/0").status == 200  # still serving, 0.5 s after SIGTERM
    assert details.process.wait(timeout=5) == 0
    assert "stopping on signal SIGTERM in 1.5 s" in details.log()


def test_the_shutdown_delay_is_for_kubernetes_pods_unless_set():
    from plait.demo.bookinfo.apps.server import shutdown_delay

    assert shutdown_delay({}) == 0
    assert shutdown_delay({"KUBERNETES_SERVICE_HOST": "10.0.0.1"}) == 5
    assert shutdown_delay({"KUBERNETES_SERVICE_HOST": "10.0.0.1", "SHUTDOWN_DELAY_SECONDS": "0"}) == 0
