"""One pure module per Envoy resource kind; each takes the snapshot and proxy and returns dicts
in Envoy's JSON form (``@type`` on typed configs), following Istio's names and defaults.
`envoyfilter` (with `envoyfilter_listeners`, `envoyfilter_objects`, `protomerge`) applies the
proxy's EnvoyFilter patches last, over what the others made."""
