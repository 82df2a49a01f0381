"""Follow one request through one proxy's Envoy configuration, choosing at each step as Envoy does.

Flows in: the ResourceSet generated for the source proxy, that Proxy, a Request
(URL, method, headers) and a resolver (hostname → IP, what DNS answers inside
the mesh). Flows out: an Outcome — listener → filter chain → HTTP connection
manager → route configuration → virtual host → route → cluster(s) →
endpoints, with the reason for every choice and the policies of the route.
Pure: no I/O, no clock, no randomness (weights and fault percentages are
reported, never rolled). This engine serves the simulation tests and
``plait explain``.

Envoy's rules, as followed here:

* capture mode: ``virtualOutbound`` hands a connection to the listener whose
  address is exactly the original destination ip:port, else to the
  ``0.0.0.0:<port>`` listener, else keeps it (passthrough or blackhole);
* filter chains: criterion by criterion (destination port, destination IP,
  server name, transport protocol, application protocols, source), keep the
  most specific chains that match, never backtrack; none → the default chain;
* virtual hosts: the exact domain, then the longest ``*suffix`` wildcard,
  then the longest ``prefix*`` wildcard, then ``*``; the Host is lower-cased
  and keeps its ``:port``;
* routes: the first whose path, headers and query parameters all match
  (``safe_regex`` is an RE2 full match on the path without its query);
* authorization: a connection manager's jwt_authn and RBAC filters run before
  routing (401/403 stop the request), a TCP chain's network RBAC filters
  before tcp_proxy; at the other end, the destination sidecar's inbound chain
  is chosen and its filters run on what the client sends (mTLS or not, as the
  client's cluster says).

The modules, in the order a request meets them: `request` (the Request, its
Connection, the Resolver), `listeners` (listener hand-off, filter chains),
`engine` (`simulate`: the connection manager, the route's action), `routes`
(virtual hosts, route matching), `policies` (timeouts, retries, faults,
rewrites…), `clusters` (clusters and endpoints), `outcome` (what comes back),
`mesh` (`simulate_mesh` over a MeshSnapshot with the mesh's own DNS), and for
authorization `jwt` (jwt_authn), `rbac` (Envoy's RBAC matchers), `authz` (the
filters in order, explained in Istio's terms) and `inbound` (the destination
sidecar).
"""

from plait.xds.simulate.engine import simulate
from plait.xds.simulate.inbound import Caller
from plait.xds.simulate.listeners import select_filter_chain
from plait.xds.simulate.mesh import mesh_resolver, simulate_mesh
from plait.xds.simulate.outcome import Authorization, ClusterTarget, Endpoint, Fault, Hop, Outcome, Policies, Retries
from plait.xds.simulate.request import Connection, Request, Resolver
from plait.xds.simulate.routes import find_virtual_host, route_mismatch

__all__ = [
    "Authorization",
    "Caller",
    "ClusterTarget",
    "Connection",
    "Endpoint",
    "Fault",
    "Hop",
    "Outcome",
    "Policies",
    "Request",
    "Resolver",
    "Retries",
    "find_virtual_host",
    "mesh_resolver",
    "route_mismatch",
    "select_filter_chain",
    "simulate",
    "simulate_mesh",
]
