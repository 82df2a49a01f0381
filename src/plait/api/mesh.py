"""Istio's MeshConfig, as far as the control plane reads it, and the ConfigMap that carries it.

Istio keeps its MeshConfig in the ConfigMap ``istio`` of the root namespace (``istio-system``), as
YAML under the key ``mesh``. plait reads the same object (from the config directory, the HTTP API
or, later, the cluster): ``accessLogFile``, ``accessLogEncoding`` (``TEXT`` or ``JSON``),
``accessLogFormat``, and for traces ``enableTracing`` (Istio's default: on),
``defaultConfig.tracing.sampling`` (percent, Istio's default 1), ``.zipkin.address`` (Istio's
default ``zipkin.istio-system:9411``) and ``.customTags``. Other MeshConfig fields are accepted and
change nothing yet. A ConfigMap has
no ``spec``: ``data`` sits at the top level (the loader hands it to `ConfigMapSpec`); any
ConfigMap's ``mesh`` key is checked as a MeshConfig (`mesh_config_problems`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

MESH_CONFIG_MAP = "istio"  # in the root namespace
MESH_KEY = "mesh"


DEFAULT_ZIPKIN_ADDRESS = "zipkin.istio-system:9411"
DEFAULT_SAMPLING = 1.0  # percent: Istio's pilot.traceSampling


class LiteralTag(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    value: str


class EnvironmentTag(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
    name: str = Field(min_length=1)
    default_value: str = Field(default="", alias="defaultValue")


class HeaderTag(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
    name: str = Field(min_length=1)
    default_value: str = Field(default="", alias="defaultValue")


class CustomTag(BaseModel):
    """One span tag: a ``literal`` value, an ``environment`` variable of the proxy, or a request ``header``
    (Istio's ProxyConfig and Telemetry ``customTags``; exactly one of the three)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    literal: LiteralTag | None = None
    environment: EnvironmentTag | None = None
    header: HeaderTag | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> CustomTag:
        if sum(x is not None for x in (self.literal, self.environment, self.header)) != 1:
            raise ValueError("a custom tag needs exactly one of literal, environment, header")
        return self


class ZipkinAddress(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    address: str = Field(default=DEFAULT_ZIPKIN_ADDRESS, pattern=r"^\[?[^\s:\[\]]+\]?:\d{1,5}$")


class TracingConfig(BaseModel):
    """``defaultConfig.tracing``: how often a request starts a trace and where spans go (Zipkin v2)."""

    model_config = ConfigDict(extra="allow", frozen=True, populate_by_name=True)
    sampling: float = Field(default=DEFAULT_SAMPLING, ge=0, le=100)
    zipkin: ZipkinAddress = ZipkinAddress()
    custom_tags: dict[str, CustomTag] = Field(default={}, alias="customTags")


class DefaultProxyConfig(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)
    tracing: TracingConfig = TracingConfig()


class MeshConfig(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True, populate_by_name=True)

    enable_tracing: bool = Field(default=True, alias="enableTracing")
    default_config: DefaultProxyConfig = Field(default=DefaultProxyConfig(), alias="defaultConfig")
    trust_domain: str = Field(default="cluster.local", alias="trustDomain")
    access_log_file: str = Field(default="", alias="accessLogFile")
    access_log_encoding: Literal["TEXT", "JSON"] = Field(default="TEXT", alias="accessLogEncoding")
    access_log_format: str = Field(default="", alias="accessLogFormat")

    def json_log_format(self) -> dict[str, str] | None:
        """``accessLogFormat`` as a JSON log's fields (JSON encoding), None when it is not set."""
        return json.loads(self.access_log_format) if self.access_log_format else None


class ConfigMapSpec(BaseModel):
    """``data``, ``binaryData`` and ``immutable`` of a core v1 ConfigMap."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    data: dict[str, str] = {}
    binary_data: dict[str, str] = Field(default={}, alias="binaryData")
    immutable: bool | None = None

    def mesh_config(self) -> MeshConfig:
        """The MeshConfig under ``data.mesh`` (checked when loaded: `mesh_config_problems`)."""
        return MeshConfig.model_validate(yaml.safe_load(self.data.get(MESH_KEY) or "") or {})


def mesh_config_problems(spec: ConfigMapSpec) -> Iterator[tuple[str, str]]:
    """(path, message) for a ``data.mesh`` that is not a valid MeshConfig as far as plait reads it."""
    if MESH_KEY not in spec.data:
        return
    path = f"data.{MESH_KEY}"
    try:
        loaded = yaml.safe_load(spec.data[MESH_KEY]) or {}
    except yaml.YAMLError as exc:
        yield path, f"not valid YAML: {getattr(exc, 'problem', exc)}"
        return
    if not isinstance(loaded, dict):
        yield path, "expected a MeshConfig (fields such as accessLogFile, accessLogEncoding)"
        return
    try:
        mesh = MeshConfig.model_validate(loaded)
    except ValidationError as exc:
        for err in exc.errors():
            field = ".".join(str(p) for p in err["loc"])
            yield f"{path}.{field}", f"{err['msg']} (got {err.get('input')!r})"
        return
    if mesh.access_log_encoding == "JSON" and mesh.access_log_format:
        yield from _json_format_problems(mesh.access_log_format, f"{path}.accessLogFormat")


def _json_format_problems(text: str, path: str) -> Iterator[tuple[str, str]]:
    try:
        fields = json.loads(text)
    except ValueError as exc:
        yield path, f"with accessLogEncoding JSON, expected a JSON object of log fields: {exc}"
        return
    if not isinstance(fields, dict) or not all(isinstance(v, str) for v in fields.values()):
        yield path, 'with accessLogEncoding JSON, expected a JSON object of strings, e.g. {"code": "%RESPONSE_CODE%"}'
