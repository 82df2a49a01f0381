"""The mesh dashboard (Kiali's graph, linkerd viz's lists) served beside the control plane.

`graph`, `series` and `views` build its JSON from the control plane's answers and Prometheus' (pure); `server` is
the aiohttp app serving that JSON and the static page (``static/``: plain JS with vendored cytoscape and
dagre). The CLI runs `serve` in the control plane's process (``plait control-plane --dashboard-port``).
"""

from plait.dashboard.server import DEFAULT_PORT, Backends, Dashboard, serve

__all__ = ["DEFAULT_PORT", "Backends", "Dashboard", "serve"]
