"""Envoy resources from the mesh model (flows in: MeshSnapshot + Proxy; flows out: ResourceSet).

`translate/` holds one pure module per Envoy resource kind (clusters, endpoints,
listeners, routes); `generator` combines them for one proxy; `static` turns a
ResourceSet into a static bootstrap and asks the real Envoy to validate it;
`simulate` follows Envoy's matching over generated resources to explain where
a request goes. Nothing here holds state; only `static.envoy_validate` does I/O.
"""
