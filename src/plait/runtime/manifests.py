"""Kubernetes manifests for the local mesh: Deployments (and Namespaces, ServiceAccounts) → pods to run.

The same files run on Kubernetes later, so only the fields a local process needs
are read (replicas, pod template labels, serviceAccountName, containers' command,
args, env, ports, readinessProbe.httpGet); everything else — the image above all —
is ignored. Services and Istio kinds go to the control plane as they are.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from plait.api.errors import Problem
from plait.api.loader import LoadResult, SafeLoader, load_paths, yaml_files
from plait.api.resources import ObjectMeta


class _K8s(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)


class EnvVar(_K8s):
    name: str
    value: str = ""


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


class PodSpec(_K8s):
    containers: list[Container] = Field(min_length=1)
    service_account_name: str = Field(default="default", alias="serviceAccountName")


class TemplateMeta(_K8s):
    labels: dict[str, str] = {}


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


def _deployment(doc: dict, file: str, index: int) -> tuple[Deployment | None, list[Problem]]:
    meta_raw = doc.get("metadata") or {}
    base = dict(file=file, document=index, kind="Deployment", name=meta_raw.get("name", ""),
                namespace=meta_raw.get("namespace") or "default")
    try:
        meta = ObjectMeta.model_validate(meta_raw)
        spec = DeploymentSpec.model_validate(doc.get("spec") or {})
    except ValidationError as exc:
        return None, [Problem(message=e["msg"], path=".".join(str(p) for p in e["loc"]), **base)
                      for e in exc.errors()]
    problems = [Problem(message="container has no command; locally plait runs the container's command "
                                "(the image is not used)", path=f"spec.template.spec.containers[{i}].command", **base)
                for i, c in enumerate(spec.template.spec.containers) if not c.command]
    if problems:
        return None, problems
    return Deployment(name=meta.name, namespace=meta.namespace, replicas=spec.replicas,
                      labels=dict(spec.template.metadata.labels), service_account=spec.template.spec.service_account_name,
                      containers=tuple(spec.template.spec.containers), source=file), []


def load_manifests(paths: list[str | Path]) -> Manifests:
    """Deployments for the runtime; everything plait's API knows (Services, Istio config) validated."""
    out = Manifests(config=load_paths(paths))
    out.config.problems = [p for p in out.config.problems if "not acted on by plait" not in p.message]
    for path in map(Path, paths):
        for file in yaml_files(path) if path.exists() else []:
            try:
                docs = list(yaml.load_all(file.read_text(), Loader=SafeLoader))
            except yaml.YAMLError:
                continue  # already reported by load_paths
            for index, doc in enumerate(docs):
                if isinstance(doc, dict) and doc.get("kind") == "Deployment":
                    deployment, problems = _deployment(doc, str(file), index)
                    out.problems += problems
                    if deployment:
                        out.deployments.append(deployment)
    return out
