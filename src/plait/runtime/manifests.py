"""Kubernetes manifests for the local mesh: Deployments (and Namespaces, ServiceAccounts) → pods to run.

The same files run on Kubernetes later, so only the fields a local process needs
are read (replicas, pod template labels and prometheus.io annotations, serviceAccountName, containers' command,
args, env, ports, readinessProbe.httpGet); everything else — the image above all —
is ignored. Services and Istio kinds go to the control plane as they are.

As the kubelet does, ``$(VAR)`` in a container's command, args and env values expands from its
environment (`plait.runtime.expansion`), and ``env[].valueFrom.fieldRef`` gives the pod's name,
namespace, service account, IP or a label (`pod_fields`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from plait.api.errors import Problem
from plait.api.kubeyaml import load_documents
from plait.api.loader import LoadResult, load_paths, yaml_files
from plait.api.resources import ObjectMeta
from plait.runtime.expansion import expand


class _K8s(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)


# Downward-API fields a local pod has (`pod_fields`), besides ``metadata.labels['KEY']``.
FIELD_PATHS = ("metadata.name", "metadata.namespace", "spec.serviceAccountName", "status.podIP", "status.podIPs")
LABEL_FIELD = re.compile(r"^metadata\.labels\['([^']+)'\]$")


class FieldRef(_K8s):
    field_path: str = Field(alias="fieldPath")


class EnvVarSource(_K8s):
    field_ref: FieldRef | None = Field(default=None, alias="fieldRef")
    # Kinds the local mesh has no objects for: refused with a clear error (see `env_problems`).
    config_map_key_ref: dict | None = Field(default=None, alias="configMapKeyRef")
    secret_key_ref: dict | None = Field(default=None, alias="secretKeyRef")
    resource_field_ref: dict | None = Field(default=None, alias="resourceFieldRef")


class EnvVar(_K8s):
    name: str
    value: str = ""
    value_from: EnvVarSource | None = Field(default=None, alias="valueFrom")


class ContainerPort(_K8s):
    container_port: int = Field(alias="containerPort", ge=1, le=65535)
    name: str | None = None


class HttpGet(_K8s):
    path: str = "/"
    port: int | str


class Probe(_K8s):
    http_get: HttpGet | None = Field(default=None, alias="httpGet")


class Container(_K8s):
    name: str
    command: list[str] = []
    args: list[str] = []
    env: list[EnvVar] = []
    ports: list[ContainerPort] = []
    readiness_probe: Probe | None = Field(default=None, alias="readinessProbe")

    def environment(
        self, fields: Mapping[str, str], defaults: Mapping[str, str], provided: Mapping[str, str]
    ) -> dict[str, str]:
        """The process environment, as the kubelet builds it: each ``env`` value in order, its ``$(VAR)``
        references expanded from the variables before it; ``valueFrom.fieldRef`` from the pod's `fields`.
        `defaults` give way to the manifest's variables; the runtime's `provided` ones win over both."""
        env = dict(defaults)
        for var in self.env:
            if var.value_from and var.value_from.field_ref:
                env[var.name] = fields.get(var.value_from.field_ref.field_path, "")
            else:
                env[var.name] = expand(var.value, {**env, **provided})
        return {**env, **provided}

    def argv(self, environment: Mapping[str, str]) -> list[str]:
        """``command`` then ``args``, with their ``$(VAR)`` references expanded from `environment`."""
        return [expand(item, environment) for item in [*self.command, *self.args]]


class PodSpec(_K8s):
    containers: list[Container] = Field(min_length=1)
    service_account_name: str = Field(default="default", alias="serviceAccountName")


class TemplateMeta(_K8s):
    labels: dict[str, str] = {}
    annotations: dict[str, str] = {}


class PodTemplate(_K8s):
    metadata: TemplateMeta = TemplateMeta()
    spec: PodSpec


class DeploymentSpec(_K8s):
    replicas: int = Field(default=1, ge=0)
    template: PodTemplate


@dataclass(frozen=True)
class Deployment:
    name: str
    namespace: str
    replicas: int
    labels: dict[str, str]
    service_account: str
    containers: tuple[Container, ...]
    source: str = ""
    annotations: dict[str, str] = field(default_factory=dict)  # the pod template's (prometheus.io/* are read)

    def pod_names(self) -> list[str]:
        return [f"{self.name}-{i}" for i in range(self.replicas)]


@dataclass
class Manifests:
    deployments: list[Deployment] = field(default_factory=list)
    config: LoadResult = field(default_factory=LoadResult)  # Services + Istio config, validated
    problems: list[Problem] = field(default_factory=list)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems + self.config.problems if p.severity == "error"]


def pod_fields(name: str, namespace: str, service_account: str, ip: str, labels: Mapping[str, str]) -> dict[str, str]:
    """The values of a pod's downward-API ``fieldRef`` paths."""
    fields = {
        "metadata.name": name,
        "metadata.namespace": namespace,
        "spec.serviceAccountName": service_account,
        "status.podIP": ip,
        "status.podIPs": ip,
    }
    fields.update((f"metadata.labels['{key}']", value) for key, value in labels.items())
    return fields


def env_problems(containers: list[Container]) -> list[tuple[str, str]]:
    """(field path, message) for each ``env`` entry the local mesh cannot give a value, as Kubernetes' API
    refuses an entry with both ``value`` and ``valueFrom``."""
    problems = []
    for i, container in enumerate(containers):
        for j, var in enumerate(container.env):
            path = f"spec.template.spec.containers[{i}].env[{j}]"
            source = var.value_from
            if source is None:
                continue
            if var.value:
                problems.append((path, f"{var.name}: may not have both 'value' and 'valueFrom'"))
            elif source.field_ref is None:
                kinds = [
                    alias
                    for alias, value in (
                        ("configMapKeyRef", source.config_map_key_ref),
                        ("secretKeyRef", source.secret_key_ref),
                        ("resourceFieldRef", source.resource_field_ref),
                    )
                    if value is not None
                ]
                what = f"valueFrom.{kinds[0]}" if kinds else "valueFrom without fieldRef"
                problems.append(
                    (
                        f"{path}.valueFrom",
                        f"{var.name}: {what} is not supported by plait's local "
                        "mesh yet; use 'value' or valueFrom.fieldRef",
                    )
                )
            elif not known_field(source.field_ref.field_path):
                problems.append(
                    (
                        f"{path}.valueFrom.fieldRef.fieldPath",
                        f"{var.name}: {source.field_ref.field_path!r} is not a field a local pod has; "
                        f"expected one of {', '.join(FIELD_PATHS)} or metadata.labels['KEY']",
                    )
                )
    return problems


def known_field(path: str) -> bool:
    """A downward-API path a local pod has a value for (a label the pod lacks is empty, as in Kubernetes)."""
    return path in FIELD_PATHS or LABEL_FIELD.match(path) is not None


def _deployment(doc: dict, file: str, index: int) -> tuple[Deployment | None, list[Problem]]:
    meta_raw = doc.get("metadata") or {}
    base = dict(
        file=file,
        document=index,
        kind="Deployment",
        name=meta_raw.get("name", ""),
        namespace=meta_raw.get("namespace") or "default",
    )
    try:
        meta = ObjectMeta.model_validate(meta_raw)
        spec = DeploymentSpec.model_validate(doc.get("spec") or {})
    except ValidationError as exc:
        return None, [Problem(message=e["msg"], path=".".join(str(p) for p in e["loc"]), **base) for e in exc.errors()]
    problems = [
        Problem(
            message="container has no command; locally plait runs the container's command (the image is not used)",
            path=f"spec.template.spec.containers[{i}].command",
            **base,
        )
        for i, c in enumerate(spec.template.spec.containers)
        if not c.command
    ]
    problems += [
        Problem(message=message, path=path, **base) for path, message in env_problems(spec.template.spec.containers)
    ]
    if problems:
        return None, problems
    return Deployment(
        name=meta.name,
        namespace=meta.namespace,
        replicas=spec.replicas,
        labels=dict(spec.template.metadata.labels),
        service_account=spec.template.spec.service_account_name,
        containers=tuple(spec.template.spec.containers),
        source=file,
        annotations=dict(spec.template.metadata.annotations),
    ), []


def load_manifests(paths: list[str | Path]) -> Manifests:
    """Deployments for the runtime; everything plait's API knows (Services, Istio config) validated."""
    out = Manifests(config=load_paths(paths))
    out.config.problems = [p for p in out.config.problems if "not acted on by plait" not in p.message]
    for path in map(Path, paths):
        for file in yaml_files(path) if path.exists() else []:
            try:
                docs = load_documents(file.read_text())
            except yaml.YAMLError:
                continue  # already reported by load_paths
            for index, doc in enumerate(docs):
                if isinstance(doc, dict) and doc.get("kind") == "Deployment":
                    deployment, problems = _deployment(doc, str(file), index)
                    out.problems += problems
                    if deployment:
                        out.deployments.append(deployment)
    return out
