"""Our own Python implementation of Istio's Bookinfo sample application (stdlib only).

Four services, each a module run as ``python -m plait.demo.bookinfo.apps.<service>``:
`productpage` (HTML page, login/logout, JSON API; calls details and reviews),
`details` (book details), `reviews` (v1 no stars, v2 black stars, v3 red
stars; v2/v3 call ratings) and `ratings`. They answer like Istio's apps
(same paths, JSON, texts, timeouts and forwarded headers), so Istio's
Bookinfo tasks behave the same on them. `manifests/bookinfo.yaml` deploys them.

Flows in: HTTP requests on ``BIND_ADDRESS:PORT`` (default 0.0.0.0:9080);
settings from environment variables (each module's docstring lists its own).
Flows out: HTTP calls to ``http://<service>:9080`` through `urllib.request`,
so ``HTTP_PROXY``/``NO_PROXY`` send them through a sidecar when set; one log
line per request on stdout.

Who owns state: nothing persists; productpage keeps the signed-in user in a
``user`` cookie. Shared pieces: `server` (routing, logging, SIGTERM → clean
exit), `client` (service URLs, forwarded headers, JSON calls), `page` (HTML)
and `view` (reads a product page back into what a user sees).

What may block: each request runs in its own thread; outgoing calls are
bounded by the timeouts Istio's apps use (productpage 3 s, twice for reviews;
reviews → ratings 10 s for v2, 2.5 s for v3).
"""
