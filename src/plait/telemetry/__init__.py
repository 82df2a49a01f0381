"""Telemetry: what Envoy is told to measure and log, and how its measurements are shown.

Flows in: the model's view of a proxy, of the endpoints and services it talks to
(`plait.model.Proxy`, `Endpoint`, `Service`) and of the mesh's MeshConfig and Telemetry
objects. Flows out: plain dicts of Envoy configuration (`metrics`: the stats access
loggers that make Istio's standard metrics in a short form, the peer header, the endpoint
and cluster metadata they read; `logs`: the file access logger of ``meshConfig.accessLogFile`` and
Telemetry ``accessLogging``), the environment an agent gives its Envoy, and the
Prometheus exposition rules (`prometheus`: Envoy's ``envoy_istio_*`` names become Istio's
``istio_*``, the short form is spelled out into Istio's labels with the proxy's own, empty label
values become ``unknown``; `tap`, `tapsessions`, `top`: the tap logger
gated by a runtime key, the runtime layer that turns it on, tap events and linkerd's lines, the
open sessions, top's table). Pure: no I/O, no state (`tapsessions` keeps the sessions it is told of); the translator
(`plait.xds.translate.telemetry`) places the pieces into listeners and clusters, the
agent's bootstrap serves the metrics on its Prometheus port (Istio's 15090).

Traces: `tracing` (the Zipkin tracer of each connection manager, from ``enableTracing``,
``defaultConfig.tracing`` and Telemetry ``tracing``), `spans` (Zipkin v2 and OTLP bodies read into
Zipkin's span shape), `tracestore` (the collector's bounded store and Zipkin's read queries, sans
I/O; the control plane's `plait.controlplane.collector` serves it) and `traceview` (traces merged,
summarised and drawn for ``plait traces``).
"""
