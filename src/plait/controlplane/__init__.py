"""plait's istiod: the control-plane process (flows in: the config directory, API calls and
registered workloads; flows out: xDS to every proxy).

`mesh.MeshState` owns the sources and the current MeshSnapshot and debounces changes;
`api.Api` is the HTTP API and debug port; `collector.Collector` the trace collector (Zipkin's
port 9411: spans in, Zipkin's read API out, in memory); `app.run` wires them to the xDS hub and the
ADS server and handles shutdown. Everything runs on one asyncio event loop; snapshot
builds and translation are synchronous and short.

On Kubernetes, `kubeidentity` adds istiod's cluster duties: the validating admission webhook
(`webhook`, every replica) and, for the leader of a Lease (`leader`: the election's rules
without I/O; `kubelease`: its shell), the root-certificate ConfigMaps (`rootcert`) and the
webhook's caBundle; `kubefollow` is their list + watch.
"""
