"""Where the mesh's configuration and workloads come from (flows out: Resources and change sets).

`files.FileStore` is the configuration directory (Istio YAML, validated, persisted,
watched by polling); `workloads.WorkloadRegistry` holds workloads registered at run
time (by agents and the local runtime) with their readiness. Both are owned by the
control plane's event loop; nothing here blocks beyond small file reads and writes.
A Kubernetes watcher (a later issue) plugs in beside them.
"""
