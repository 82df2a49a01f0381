"""The local mesh runtime: workloads as processes on this machine.

Capture mode's plumbing: `plait.runtime.netns` (pods as network namespaces on a bridge,
per-pod hosts files, running a process in a pod) and `plait.runtime.iptables` (Istio's
capture rules, also the ``plait iptables`` command). Both need Linux and root.
"""
