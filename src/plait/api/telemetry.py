"""The Telemetry kind (telemetry.istio.io), as far as plait acts on it: ``accessLogging`` and ``tracing``.

``selector`` (``matchLabels``) picks workloads of the Telemetry's namespace; a Telemetry without
one applies to its namespace, or to the whole mesh in the root namespace. Each ``accessLogging``
rule may name ``providers`` (only Istio's built-in ``envoy``: the file log of
``meshConfig.accessLogFile``, else ``/dev/stdout``), set ``disabled``, keep only the requests its
``filter.expression`` (CEL, Envoy's attributes: ``response.code >= 400``) accepts, and apply to the
client side, the server side or both (``match.mode``). ``metrics`` (`plait.api.telemetry_metrics`)
disables Istio's standard metrics and changes their labels. Each ``tracing`` rule may set
``randomSamplingPercentage``, ``customTags`` (literal, environment, header),
``disableSpanReporting``, ``enableIstioTags`` and ``match.mode``; its only provider is the mesh's Zipkin collector
(``defaultConfig.tracing.zipkin``: no ``providers``). ``targetRefs`` is Istio's and not acted on yet:
loading it says so.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from plait.api.common import IstioModel
from plait.api.extensions import PolicySelector
from plait.api.mesh import CustomTag
from plait.api.telemetry_metrics import Metrics

BUILTIN_PROVIDER = "envoy"


class ProviderRef(IstioModel):
    name: str = Field(min_length=1)

    @field_validator("name")
    @classmethod
    def _builtin_only(cls, name: str) -> str:
        if name != BUILTIN_PROVIDER:
            raise ValueError(f"provider {name!r} is not supported by plait yet; it has Istio's built-in 'envoy'")
        return name


class AccessLogFilter(IstioModel):
    expression: str = Field(min_length=1)


class WorkloadModeSelector(IstioModel):
    mode: Literal["CLIENT_AND_SERVER", "CLIENT", "SERVER"] = "CLIENT_AND_SERVER"


class SideRule(IstioModel):
    """A rule for the client side (outbound, gateways), the server side (inbound) or both."""

    match: WorkloadModeSelector | None = None

    def applies_to(self, side: Literal["CLIENT", "SERVER"]) -> bool:
        mode = self.match.mode if self.match else "CLIENT_AND_SERVER"
        return mode in ("CLIENT_AND_SERVER", side)


class AccessLogging(SideRule):
    providers: list[ProviderRef] = []
    disabled: bool | None = None
    filter: AccessLogFilter | None = None


class TracingProviderRef(IstioModel):
    name: str = Field(min_length=1)

    @field_validator("name")
    @classmethod
    def _none_yet(cls, name: str) -> str:
        raise ValueError(
            f"tracing provider {name!r} is not supported by plait yet: spans go to the mesh's Zipkin "
            "collector (meshConfig defaultConfig.tracing.zipkin.address); leave providers out"
        )


class Tracing(SideRule):
    providers: list[TracingProviderRef] = []
    random_sampling_percentage: float | None = Field(default=None, ge=0, le=100)
    disable_span_reporting: bool | None = None
    enable_istio_tags: bool | None = None
    custom_tags: dict[str, CustomTag] = {}


class TelemetrySpec(IstioModel):
    selector: PolicySelector | None = None
    access_logging: list[AccessLogging] = []
    metrics: list[Metrics] = []
    tracing: list[Tracing] = []
