"""HTML of Bookinfo's productpage: the product page, the index page and a small stylesheet.

Pure functions from data to text. The product page follows Istio's template
(book summary, "Book Details", "Book Reviews" with stars, the same error
texts) and marks what tests need to read with stable attributes:
``data-user`` on the signed-in line, ``<section id="details">`` and
``<section id="reviews">``, ``<blockquote class="review" data-reviewer>``,
``<span class="stars" data-stars data-color>`` holding Istio's
``glyphicon-star`` / ``glyphicon-star-empty`` spans, ``p.rating-error``,
``p.error`` and ``p.served-by[data-podname]``. `view` reads them back.
"""

from __future__ import annotations

from html import escape

STYLESHEET = """\
body { font-family: sans-serif; margin: 0; color: #222; }
nav { background: #1f2937; color: #f9fafb; padding: 0.8em 2em; display: flex; justify-content: space-between; }
nav a { color: #f9fafb; }
main { padding: 1em 2em; max-width: 60em; }
h1 { color: #1e3a8a; }
section#reviews { background: #eff6ff; padding: 1em; }
blockquote.review { border-left: 4px solid #93c5fd; margin: 1em 0; padding-left: 1em; }
.error, .rating-error { color: #dc2626; }
.served-by { font-family: monospace; color: #4b5563; }
dl { display: grid; grid-template-columns: max-content auto; gap: 0.2em 1em; }
dd { margin: 0; }
"""

DETAILS_FIELDS = (
    ("Type", "type"),
    ("Pages", "pages"),
    ("Publisher", "publisher"),
    ("Language", "language"),
    ("ISBN-10", "ISBN-10"),
    ("ISBN-13", "ISBN-13"),
)
MAX_STARS = 5


def _document(title: str, body: str) -> str:
    return (
        f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{escape(title)}</title>\n'
        f'<link rel="stylesheet" href="/static/bookinfo.css">\n</head>\n<body>\n{body}\n</body>\n</html>\n'
    )


def _user_bar(user: str | None) -> str:
    if user:
        return (
            f'<p class="user" id="user" data-user="{escape(user)}">Welcome, {escape(user)} '
            f'(<a href="/logout">sign out</a>)</p>'
        )
    return (
        '<details class="sign-in"><summary>Sign in</summary>\n'
        '<form method="post" action="/login" name="login_form">\n'
        '<input type="text" name="username" id="username" placeholder="User Name" required>\n'
        '<input type="password" name="passwd" placeholder="Password">\n'
        '<button type="submit">Sign in</button>\n</form></details>'
    )


def _details_section(status: int, details: dict) -> str:
    if status != 200:
        return (
            '<section id="details"><h2>Error fetching product details!</h2>\n'
            f'<p class="error">{escape(str(details.get("error", "")))}</p></section>'
        )
    rows = "".join(f"<dt>{label}:</dt><dd>{escape(str(details.get(key, '')))}</dd>\n" for label, key in DETAILS_FIELDS)
    return f'<section id="details"><h2>Book Details</h2>\n<dl>\n{rows}</dl></section>'


def _stars(rating: dict) -> str:
    if isinstance(rating.get("stars"), int):
        count = max(0, min(MAX_STARS, rating["stars"]))
        color = escape(str(rating.get("color", "black")))
        full = '<span class="glyphicon glyphicon-star">&#9733;</span>' * count
        empty = '<span class="glyphicon glyphicon-star-empty">&#9734;</span>' * (MAX_STARS - count)
        return (
            f'<span class="stars" data-stars="{count}" data-color="{color}" style="color: {color}">{full}{empty}</span>'
        )
    if rating.get("error"):
        return f'<p class="rating-error"><i>{escape(str(rating["error"]))}</i></p>'
    return ""


def _review(review: dict) -> str:
    reviewer = escape(str(review.get("reviewer", "")))
    rating = review.get("rating")
    return (
        f'<blockquote class="review" data-reviewer="{reviewer}">\n'
        f'<p class="review-text">{escape(str(review.get("text", "")))}</p>\n<small>{reviewer}</small>\n'
        f"{_stars(rating) if isinstance(rating, dict) else ''}\n</blockquote>"
    )


def _reviews_section(status: int, reviews: dict) -> str:
    if status != 200:
        return (
            '<section id="reviews"><h2>Error fetching product reviews!</h2>\n'
            f'<p class="error">{escape(str(reviews.get("error", "")))}</p></section>'
        )
    items = "\n".join(_review(review) for review in reviews.get("reviews", []) if isinstance(review, dict))
    served_by = escape(str(reviews.get("podname", "")))
    cluster = str(reviews.get("clustername", "null"))
    on_cluster = f" on cluster {escape(cluster)}" if cluster != "null" else ""
    return (
        f'<section id="reviews"><h2>Book Reviews</h2>\n{items}\n'
        f'<p class="served-by" data-podname="{served_by}">Reviews served by: {served_by}{on_cluster}</p>'
        "</section>"
    )


def product_page(product: dict, user: str | None, details: tuple[int, dict], reviews: tuple[int, dict]) -> str:
    """The product page; `details` and `reviews` are (status, JSON) as productpage got them."""
    body = (
        f'<nav><a class="brand" href="/productpage">BookInfo Sample</a>\n{_user_bar(user)}</nav>\n<main>\n'
        f'<section id="product"><h1>{escape(product["title"])}</h1>\n'
        f"<p>Summary: {product['descriptionHtml']}</p></section>\n"
        f"{_details_section(*details)}\n{_reviews_section(*reviews)}\n</main>"
    )
    return _document("Simple Bookstore App", body)


def index_page(services: list[tuple[str, str, str]]) -> str:
    """The landing page: the services productpage calls, as (name, URL, endpoint), and two links to the product page."""
    rows = "".join(
        f"<tr><td>{escape(name)}</td><td>{escape(url)}</td><td>/{escape(endpoint)}</td></tr>\n"
        for name, url, endpoint in services
    )
    body = (
        "<main>\n<h3>Hello! This is a simple bookstore application consisting of three services as shown below"
        "</h3>\n<table>\n<tr><th>service</th><th>address</th><th>endpoint</th></tr>\n"
        f"{rows}</table>\n<p>Click on one of the links below to auto generate a request to the backend as a "
        'real user or a tester</p>\n<ul><li><a href="/productpage?u=normal">Normal user</a></li>\n'
        '<li><a href="/productpage?u=test">Test user</a></li></ul>\n</main>'
    )
    return _document("Simple Bookstore App", body)
