"""Bookinfo's productpage: the HTML page users open, and a small JSON API.

Like Istio's (Python/Flask) productpage:
  ``GET /productpage``   the book (from details) and its reviews (from reviews) as HTML
  ``POST /login``        form ``username``/``passwd`` → cookie ``user=<name>``, redirect to /productpage
  ``GET /logout``        clears the cookie, redirect to /productpage
  ``GET /``, ``/index.html``  a landing page; ``GET /health``; ``GET /static/bookinfo.css``
  ``GET /api/v1/products``, ``/api/v1/products/<id>``, ``…/<id>/reviews``, ``…/<id>/ratings``

Calls to details, reviews and ratings copy Istio's tracing and context
headers from the incoming request and, for a signed-in user, add
``end-user: <user>`` (what Istio's request-routing samples match on). Each
call times out after 3 s; the call to reviews is tried twice, as in Istio's
sample, so a 7 s delay behind reviews gives "Sorry, product reviews are
currently unavailable for this book." after about 6 s.

Environment: ``DETAILS_HOSTNAME``, ``REVIEWS_HOSTNAME``, ``RATINGS_HOSTNAME``,
``<SERVICE>_SERVICE_PORT`` and ``SERVICES_DOMAIN`` say where the others are
(see `client`); ``PORT`` and ``BIND_ADDRESS`` where to listen (see `server`).
Run it with ``python -m plait.demo.bookinfo.apps.productpage``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from http.cookies import CookieError, SimpleCookie
from urllib.parse import quote

from plait.demo.bookinfo.apps import page
from plait.demo.bookinfo.apps.client import CONTEXT_HEADERS, TRACE_HEADERS, forwarded_headers, get_json, service_url
from plait.demo.bookinfo.apps.server import (
    Request,
    Response,
    Route,
    html_response,
    json_response,
    log,
    redirect,
    serve,
    text_response,
)

PRODUCTS = [
    {
        "id": 0,
        "title": "The Comedy of Errors",
        "descriptionHtml": '<a href="https://en.wikipedia.org/wiki/The_Comedy_of_Errors">Wikipedia Summary</a>: '
        "The Comedy of Errors is one of <b>William Shakespeare's</b> early plays. It is his shortest "
        "and one of his most farcical comedies, with a major part of the humour coming from slapstick "
        "and mistaken identity, in addition to puns and word play.",
    }
]
UNAVAILABLE = "Sorry, product {} are currently unavailable for this book."
TIMEOUT_SECONDS = 3.0
REVIEWS_ATTEMPTS = 2  # Istio's productpage retries reviews once, on purpose, for the fault-injection task
USER_COOKIE = "user"


def signed_in_user(request: Request) -> str | None:
    cookies = SimpleCookie()
    try:
        cookies.load(request.headers.get("Cookie") or "")
    except CookieError:
        return None
    morsel = cookies.get(USER_COOKIE)
    return morsel.value if morsel is not None and morsel.value else None


def user_cookie(user: str, max_age: int | None = None) -> str:
    """The Set-Cookie value that signs `user` in (or, with max_age=0, out)."""
    cookie = SimpleCookie()
    cookie[USER_COOKIE] = user
    cookie[USER_COOKIE]["path"] = "/"
    if max_age is not None:
        cookie[USER_COOKIE]["max-age"] = max_age
    return cookie.output(header="").strip()


def outgoing_headers(request: Request) -> dict[str, str]:
    headers = forwarded_headers(request.headers, TRACE_HEADERS + CONTEXT_HEADERS)
    user = signed_in_user(request)
    if user:
        headers["end-user"] = user
    return headers


@dataclass(frozen=True)
class Backends:
    """Where details, reviews and ratings are, and how productpage asks them (status, JSON) for a product."""

    details_url: str
    reviews_url: str
    ratings_url: str

    @classmethod
    def from_env(cls) -> Backends:
        return cls(service_url("details"), service_url("reviews"), service_url("ratings"))

    def services(self) -> list[tuple[str, str, str]]:
        return [
            ("details", self.details_url, "details"),
            ("reviews", self.reviews_url, "reviews"),
            ("ratings", self.ratings_url, "ratings"),
        ]

    def details(self, product_id: str, headers: dict[str, str]) -> tuple[int, dict]:
        return self._get("details", f"{self.details_url}/details/{product_id}", headers, attempts=1)

    def reviews(self, product_id: str, headers: dict[str, str]) -> tuple[int, dict]:
        return self._get("reviews", f"{self.reviews_url}/reviews/{product_id}", headers, REVIEWS_ATTEMPTS)

    def ratings(self, product_id: str, headers: dict[str, str]) -> tuple[int, dict]:
        return self._get("ratings", f"{self.ratings_url}/ratings/{product_id}", headers, attempts=1)

    @staticmethod
    def _get(what: str, url: str, headers: dict[str, str], attempts: int) -> tuple[int, dict]:
        for _ in range(attempts):
            reply = get_json(url, headers, TIMEOUT_SECONDS)
            if reply.ok and isinstance(reply.payload, dict):
                return 200, reply.payload
            log("productpage", f"Error: {url}: {reply.error or reply.status}")
        failed_status = reply.status if reply.status and reply.status != 200 else 500
        return failed_status, {"error": UNAVAILABLE.format(what)}


def routes(backends: Backends) -> list[Route]:
    def front(request: Request) -> Response:
        headers = outgoing_headers(request)
        product = PRODUCTS[0]
        product_id = str(product["id"])
        details = backends.details(product_id, headers)
        reviews = backends.reviews(product_id, headers)
        return html_response(page.product_page(product, signed_in_user(request), details, reviews))

    def login(request: Request) -> Response:
        return redirect("/productpage", (user_cookie(request.form().get("username", "")),))

    def logout(_request: Request) -> Response:
        return redirect("/productpage", (user_cookie("", max_age=0),))

    def api(fetch: Callable[[str, dict[str, str]], tuple[int, dict]]) -> Callable[[Request], Response]:
        def handler(request: Request) -> Response:
            status, payload = fetch(quote(request.params[0], safe=""), outgoing_headers(request))
            return json_response(payload, status)

        return handler

    return [
        Route("GET", r"/|/index\.html", lambda _request: html_response(page.index_page(backends.services()))),
        Route("GET", r"/health", lambda _request: text_response("Product page is healthy")),
        Route("GET", r"/static/bookinfo\.css", lambda _request: Response(200, page.STYLESHEET.encode(), "text/css")),
        Route("POST", r"/login", login),
        Route("GET", r"/logout", logout),
        Route("GET", r"/productpage", front),
        Route("GET", r"/api/v1/products", lambda _request: json_response(PRODUCTS)),
        Route("GET", r"/api/v1/products/([^/]+)", api(backends.details)),
        Route("GET", r"/api/v1/products/([^/]+)/reviews", api(backends.reviews)),
        Route("GET", r"/api/v1/products/([^/]+)/ratings", api(backends.ratings)),
    ]


if __name__ == "__main__":
    serve("productpage", routes(Backends.from_env()))
