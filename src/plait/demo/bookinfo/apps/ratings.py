"""Bookinfo's ratings service: ``GET /ratings/<id>`` → the stars each reviewer gave, as JSON.

Like Istio's (Node.js) ratings v1: ``{"id": 0, "ratings": {"Reviewer1": 5,
"Reviewer2": 4}}`` for any numeric id, 400 otherwise, ``GET /health`` →
``{"status": "Ratings is healthy"}``.
Run it with ``python -m plait.demo.bookinfo.apps.ratings``.
"""

from __future__ import annotations

from plait.demo.bookinfo.apps.server import Request, Response, Route, json_response, serve


def ratings(request: Request) -> Response:
    try:
        product_id = int(request.params[0])
    except ValueError:
        return json_response({"error": "please provide numeric product ID"}, 400)
    return json_response({"id": product_id, "ratings": {"Reviewer1": 5, "Reviewer2": 4}})


def health(_request: Request) -> Response:
    return json_response({"status": "Ratings is healthy"})


ROUTES = [
    Route("GET", r"/ratings/([^/]*)", ratings),
    Route("GET", r"/health", health),
]

if __name__ == "__main__":
    serve("ratings", ROUTES)
