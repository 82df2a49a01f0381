"""Bookinfo's reviews service, versions v1, v2 and v3: ``GET /reviews/<id>`` → two reviews as JSON.

Like Istio's (Java) reviews: v1 does not call ratings; v2 and v3 call
``GET http://ratings:9080/ratings/<id>`` (copying the tracing headers and
``end-user``) and add ``"rating": {"stars": n, "color": "black"|"red"}`` to
each review, or ``"rating": {"error": "Ratings service is currently
unavailable"}`` when ratings fails. The call to ratings times out after 10 s
with black stars (v2) and 2.5 s otherwise (v3), as in Istio's sample, which is
what Istio's fault-injection task relies on.

Environment:
  ``SERVICE_VERSION``   v1 (default), v2 or v3; sets the defaults of the next two
  ``ENABLE_RATINGS``    ``true`` to call ratings (default false for v1, true for v2/v3)
  ``STAR_COLOR``        colour of the stars (default black; red for v3)
  ``RATINGS_HOSTNAME``, ``RATINGS_SERVICE_PORT``, ``SERVICES_DOMAIN``  where ratings is (see `client`)
  ``POD_NAME`` (else ``HOSTNAME``, else the host name) and ``CLUSTER_NAME``
                        reported as ``podname`` and ``clustername``

Run it with ``SERVICE_VERSION=v2 python -m plait.demo.bookinfo.apps.reviews``.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass

from plait.demo.bookinfo.apps.client import CONTEXT_HEADERS, TRACE_HEADERS, forwarded_headers, get_json, service_url
from plait.demo.bookinfo.apps.server import Request, Response, Route, json_response, log, serve

# SERVICE_VERSION → (ratings enabled, star colour), as Istio's reviews images are built.
VERSION_DEFAULTS = {"v1": (False, "black"), "v2": (True, "black"), "v3": (True, "red")}
REVIEWS = (
    ("Reviewer1", "An extremely entertaining play by Shakespeare. The slapstick humour is refreshing!"),
    (
        "Reviewer2",
        ("Absolutely fun and entertaining. The play lacks thematic depth when compared to other plays by Shakespeare."),
    ),
)
RATINGS_UNAVAILABLE = "Ratings service is currently unavailable"
FORWARDED_HEADERS = TRACE_HEADERS + ("end-user",) + CONTEXT_HEADERS


@dataclass(frozen=True)
class Settings:
    version: str
    ratings_enabled: bool
    star_color: str
    ratings_url: str
    pod_name: str
    cluster_name: str

    @property
    def app_name(self) -> str:
        return f"reviews-{self.version}"

    @property
    def ratings_timeout(self) -> float:
        """Seconds to wait for ratings: Istio hard-codes 10 s for black stars, 2.5 s for any other colour."""
        return 10.0 if self.star_color == "black" else 2.5

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        version = env.get("SERVICE_VERSION", "v1")
        enabled, color = VERSION_DEFAULTS.get(version, VERSION_DEFAULTS["v1"])
        if "ENABLE_RATINGS" in env:
            enabled = env["ENABLE_RATINGS"].lower() == "true"
        return cls(
            version=version,
            ratings_enabled=enabled,
            star_color=env.get("STAR_COLOR", color),
            ratings_url=service_url("ratings") + "/ratings",
            pod_name=env.get("POD_NAME") or env.get("HOSTNAME") or socket.gethostname(),
            # Istio's Java app prints an unset CLUSTER_NAME as "null"; its product page hides that value.
            cluster_name=env.get("CLUSTER_NAME", "null"),
        )


def fetch_stars(settings: Settings, product_id: str, request: Request) -> dict[str, int]:
    """Reviewer → stars from the ratings service; empty when ratings did not answer usefully."""
    url = f"{settings.ratings_url}/{product_id}"
    reply = get_json(url, forwarded_headers(request.headers, FORWARDED_HEADERS), settings.ratings_timeout)
    if not reply.ok:
        log(settings.app_name, f"Error: unable to contact {url}: {reply.error or reply.status}")
        return {}
    ratings = reply.payload.get("ratings") if isinstance(reply.payload, dict) else None
    if not isinstance(ratings, dict):
        return {}
    return {reviewer: stars for reviewer, stars in ratings.items() if isinstance(stars, int)}


def review_list(settings: Settings, stars: dict[str, int]) -> list[dict[str, object]]:
    reviews = []
    for reviewer, text in REVIEWS:
        review: dict[str, object] = {"reviewer": reviewer, "text": text}
        if settings.ratings_enabled:
            if reviewer in stars:
                review["rating"] = {"stars": stars[reviewer], "color": settings.star_color}
            else:
                review["rating"] = {"error": RATINGS_UNAVAILABLE}
        reviews.append(review)
    return reviews


def routes(settings: Settings) -> list[Route]:
    def reviews(request: Request) -> Response:
        product_id = str(int(request.params[0]))
        stars = fetch_stars(settings, product_id, request) if settings.ratings_enabled else {}
        return json_response(
            {
                "id": product_id,
                "podname": settings.pod_name,
                "clustername": settings.cluster_name,
                "reviews": review_list(settings, stars),
            }
        )

    def health(_request: Request) -> Response:
        return json_response({"status": "Reviews is healthy"})

    return [
        Route("GET", r"/reviews/(\d+)", reviews),
        Route("GET", r"/health", health),
    ]


if __name__ == "__main__":
    SETTINGS = Settings.from_env(os.environ)
    serve(SETTINGS.app_name, routes(SETTINGS))
