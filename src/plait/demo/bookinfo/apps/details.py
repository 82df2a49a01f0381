"""Bookinfo's details service: ``GET /details/<id>`` → the book's details as JSON.

Like Istio's (Ruby) details v1: one hard-coded book whatever the id, 400 for
an id that is not a number, ``GET /health`` → ``{"status": "Details is healthy"}``.
Run it with ``python -m plait.demo.bookinfo.apps.details``.
"""

from __future__ import annotations

from plait.demo.bookinfo.apps.server import Request, Response, Route, json_response, serve


def book_details(book_id: int) -> dict[str, object]:
    return {
        "id": book_id,
        "author": "William Shakespeare",
        "year": 1595,
        "type": "paperback",
        "pages": 200,
        "publisher": "PublisherA",
        "language": "English",
        "ISBN-10": "1234567890",
        "ISBN-13": "123-1234567890",
    }


def details(request: Request) -> Response:
    try:
        book_id = int(request.params[0].rsplit("/", 1)[-1])
    except ValueError:
        return json_response({"error": "please provide numeric product id"}, 400)
    return json_response(book_details(book_id))


def health(_request: Request) -> Response:
    return json_response({"status": "Details is healthy"})


ROUTES = [
    Route("GET", r"/details/(.*)", details),
    Route("GET", r"/health", health),
]

if __name__ == "__main__":
    serve("details", ROUTES)
