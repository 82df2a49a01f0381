"""What `plait analyze` reads, turned into `Inputs`: YAML documents from files (every kind:
plait's own through `plait validate`'s loader, the others kept as they are), and objects a cluster
listed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import yaml

from plait.analysis.analyzers import Inputs, KubeObject
from plait.api.errors import Problem
from plait.api.kubeyaml import load_documents
from plait.api.loader import parse_document
from plait.api.resources import SPEC_MODELS, Resource, Source


def _group(api_version: str) -> str:
    return api_version.rpartition("/")[0]


def plait_reads(kind: str, api_version: str) -> bool:
    """Whether plait models this object (an Istio kind of an Istio group, or a core Service); a
    Gateway API ``Gateway`` or a Deployment is kept as a plain Kubernetes object."""
    if kind not in SPEC_MODELS:
        return False
    versions = SPEC_MODELS[kind][0]
    return api_version in versions or _group(api_version) in {_group(v) for v in versions}


@dataclass
class Reading:
    """Inputs being gathered; `unreadable` lists the files that are not YAML (istioctl's exit 65)."""

    resources: list[Resource] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    objects: list[KubeObject] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)

    def add_document(self, doc: Any, file: str, index: int | None = None) -> None:
        if not isinstance(doc, Mapping):
            return
        if doc.get("kind") == "List" and isinstance(doc.get("items"), list):
            for item in doc["items"]:
                self.add_document(item, file, index)
            return
        kind, api_version = doc.get("kind"), doc.get("apiVersion")
        if isinstance(kind, str) and isinstance(api_version, str) and plait_reads(kind, api_version):
            resources, problems = parse_document(dict(doc), Source(file=file, document=index))
            self.resources += resources
            self.problems += problems
        elif isinstance(kind, str):
            self.objects.append(KubeObject(doc, file))

    def add_text(self, text: str, file: str) -> None:
        try:
            documents = load_documents(text)
        except yaml.YAMLError as error:
            self.unreadable.append(f"{file}: {error}")
            return
        for index, doc in enumerate(documents):
            self.add_document(doc, file, index)

    def add_cluster(
        self, resources: Iterable[Resource], problems: Iterable[Problem], objects: Iterable[Mapping]
    ) -> None:
        """What a cluster holds: its objects name no file."""
        self.resources += [replace(r, source=Source(file="")) for r in resources]
        self.problems += [replace(p, file="") for p in problems]
        self.objects += [KubeObject(o) for o in objects]

    def inputs(self) -> Inputs:
        """The inputs; an object given both by the cluster and a file is the file's (istioctl's
        files override the cluster's objects of the same name)."""
        resources = {r.key: r for r in sorted(self.resources, key=lambda r: bool(r.source.file))}
        objects = {(o.kind, o.namespace, o.name): o for o in sorted(self.objects, key=lambda o: bool(o.file))}
        return Inputs(tuple(resources.values()), tuple(self.problems), tuple(objects.values()))
