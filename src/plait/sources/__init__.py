"""Where the mesh's configuration and workloads come from (flows out: Resources and change sets).

`files.FileStore` is the configuration directory (Istio YAML, validated, persisted,
watched by polling); `workloads.WorkloadRegistry` holds workloads registered at run
time (by agents and the local runtime) with their readiness. `kubernetes.KubernetesSource`
reads the same configuration, and the registry (Services, EndpointSlices, Pods), from a
cluster instead of a directory: `kube_objects` maps the cluster's objects to Resources and
`kube_watch` folds lists and watch events into state, both without I/O. All are owned by the
control plane's event loop; nothing here blocks beyond small file reads and writes.
"""
