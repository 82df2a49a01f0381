"""What a user sees on Bookinfo's product page, read back from its HTML (for tests and demos).

`read_product_page(html)` returns a `ProductPageView`: who is signed in, the
book details or their error, each review with its stars and colour or its
rating error, the reviews error, and which reviews pod answered.
`ProductPageView.reviews_version` names the reviews version the stars point
to (v1: no stars, v2: black, v3: red), the way Istio's tasks tell them apart.
It relies on the attributes `page` documents; stdlib `html.parser` only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from html.parser import HTMLParser

STAR_COLOR_VERSIONS = {"black": "v2", "red": "v3"}


@dataclass
class Review:
    reviewer: str
    text: str = ""
    stars: int | None = None
    color: str | None = None
    rating_error: str | None = None


@dataclass
class ProductPageView:
    user: str | None = None
    details: dict[str, str] = field(default_factory=dict)
    details_error: str | None = None
    reviews: list[Review] = field(default_factory=list)
    reviews_error: str | None = None
    reviews_served_by: str | None = None

    @property
    def reviews_version(self) -> str | None:
        """The version the stars point to: v1, v2 or v3; None without reviews or when ratings failed."""
        if not self.reviews or any(review.rating_error for review in self.reviews):
            return None
        colors = {review.color for review in self.reviews}
        if colors == {None}:
            return "v1"
        return STAR_COLOR_VERSIONS.get(colors.pop()) if len(colors) == 1 else None


# (tag, class) → the field the element's text goes to.
_TEXT_FIELDS = {
    ("p", "error"): "error",
    ("p", "rating-error"): "rating_error",
    ("p", "review-text"): "text",
    ("dt", ""): "label",
    ("dd", ""): "value",
}


class _PageParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.view = ProductPageView()
        self._section: str | None = None
        self._capturing: tuple[str, str] | None = None  # (end tag, field)
        self._text: list[str] = []
        self._label = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {name: value or "" for name, value in attrs}
        css_class = attributes.get("class", "")
        if tag == "section":
            self._section = attributes.get("id")
        if "data-user" in attributes:
            self.view.user = attributes["data-user"]
        if tag == "blockquote" and css_class == "review":
            self.view.reviews.append(Review(attributes.get("data-reviewer", "")))
        if css_class == "stars" and self.view.reviews:
            self.view.reviews[-1].stars = int(attributes["data-stars"])
            self.view.reviews[-1].color = attributes["data-color"]
        if css_class == "served-by":
            self.view.reviews_served_by = attributes.get("data-podname")
        text_field = _TEXT_FIELDS.get((tag, css_class))
        if text_field:
            self._capturing, self._text = (tag, text_field), []

    def handle_data(self, data: str) -> None:
        if self._capturing:
            self._text.append(data)

    def handle_endtag(self, tag: str) -> None:
        if self._capturing and self._capturing[0] == tag:
            self._store(self._capturing[1], "".join(self._text).strip())
            self._capturing = None
        if tag == "section":
            self._section = None

    def _store(self, text_field: str, text: str) -> None:
        if text_field == "label":
            self._label = text.rstrip(":")
        elif text_field == "value":
            self.view.details[self._label] = text
        elif text_field == "error" and self._section == "details":
            self.view.details_error = text
        elif text_field == "error" and self._section == "reviews":
            self.view.reviews_error = text
        elif text_field in ("text", "rating_error") and self.view.reviews:
            setattr(self.view.reviews[-1], text_field, text)


def read_product_page(html: str) -> ProductPageView:
    parser = _PageParser()
    parser.feed(html)
    parser.close()
    return parser.view
