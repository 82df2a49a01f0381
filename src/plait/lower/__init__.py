"""Lowering: configuration APIs other than Istio's → Istio's own kinds, which translation reads.

In: the loaded Resources (Gateway API objects among Istio's). Out: the same Resources plus generated
Istio Gateways, VirtualServices and Services, and the status each Gateway API object would get.
Pure: no I/O, no clock; called wherever a MeshSnapshot is made from loaded configuration.
"""

from plait.lower.gatewayapi import GATEWAY_NAME_LABEL, Lowered, deployed_gateways, lower, with_gateway_api

__all__ = ["GATEWAY_NAME_LABEL", "Lowered", "deployed_gateways", "lower", "with_gateway_api"]
