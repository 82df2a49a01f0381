"""plait: a service mesh whose control plane is Python and whose data plane is Envoy."""

__version__ = "0.1.0"
