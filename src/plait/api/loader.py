"""YAML text → typed Resources, or a list of Problems that say exactly what is wrong.

Everything here is pure except `load_paths`, which reads files. A load with any
error yields no resources at all: callers keep their previous configuration.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError
from pydantic.alias_generators import to_camel

from plait.api.checks import check_references
from plait.api.errors import ConfigError, Problem
from plait.api.kubeyaml import load_documents
from plait.api.resources import FLAT_KINDS, SPEC_MODELS, SPEC_RULES, ObjectMeta, Resource, Source, internal_kind
from plait.api.unsupported import (
    NOT_SUPPORTED_GROUPS,
    field_not_supported,
    kind_not_supported,
    value_not_supported,
)

YAML_SUFFIXES = (".yaml", ".yml")
GATEWAY_API_KINDS = frozenset({"GatewayClass", "HTTPRoute", "GRPCRoute", "TCPRoute", "TLSRoute", "ReferenceGrant"})

# Kubernetes kinds that may sit beside Istio configuration; plait's config loader skips them.
KNOWN_IGNORED_KINDS = {"Namespace", "ServiceAccount", "Deployment", "Pod"}


@dataclass
class LoadResult:
    resources: list[Resource] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "warning"]

    def raise_for_errors(self) -> list[Resource]:
        if self.errors:
            raise ConfigError(self.problems)
        return self.resources


def _path(loc: Iterable[Any], prefix: str) -> str:
    """``spec`` + (``http``, 0, ``timeout``) → ``spec.http[0].timeout``."""
    out = prefix
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _field_path(loc: Iterable[Any]) -> str:
    """(``http``, 0, ``retries``, ``backoff``) → ``http.retries.backoff``: the form unsupported.py lists."""
    return ".".join(str(part) for part in loc if isinstance(part, str))


def _unknown_field_message(kind: str, loc: list[Any]) -> str:
    name = str(loc[-1]) if loc else ""
    if field_not_supported(kind, _field_path(loc)) and kind in GATEWAY_API_KINDS:
        return f"{name} is a Gateway API field that is not supported by plait yet; see docs/gateway-api.md"
    if field_not_supported(kind, _field_path(loc)):
        return f"{name} is an Istio field that is not supported by plait yet; remove it or see docs/configuration.md"
    camel = to_camel(name)
    if "_" in name and camel != name:
        return f"unknown field {name!r}: field names are camelCase as in Istio's API and Kubernetes (write {camel!r})"
    return "unknown field; check its spelling against Istio's API reference (field names are camelCase)"


def _message(err: dict[str, Any], kind: str, loc: list[Any]) -> str:
    error_type = err["type"]
    if error_type == "extra_forbidden":
        return _unknown_field_message(kind, loc)
    if error_type == "missing":
        return "required field is missing"
    if error_type == "literal_error" and value_not_supported(kind, _field_path(loc), err.get("input")):
        return f"{err.get('input')!r} is valid in Istio but not supported by plait yet"
    msg = err["msg"].removeprefix("Value error, ")
    if error_type.endswith("_type") or error_type.endswith("_parsing") or error_type == "literal_error":
        msg = f"{msg} (got {err.get('input')!r})"
    return msg


def _problems_from_validation(exc: ValidationError, base: Problem, prefix: str) -> list[Problem]:
    out = []
    for err in exc.errors():
        loc = list(err["loc"])
        # Pydantic reports union members and dict keys as extra loc entries; keep the field path.
        loc = [p for p in loc if not (isinstance(p, str) and ("[" in p or p in ("str", "int")))]
        message = _message(err, base.kind if prefix == "spec" else "", loc)
        out.append(Problem(**{**base.__dict__, "path": _path(loc, prefix), "message": message}))
    return out


def _kind_refusal(kind: str, api_version: str) -> dict[str, str] | None:
    """Why a document of this kind is not loaded (path, message, severity), or None to load it.

    A kind with a model always loads; the not-supported lists only name what has none."""
    if kind in SPEC_MODELS and (
        api_version in SPEC_MODELS[kind][0] or api_version.rpartition("/")[0] not in NOT_SUPPORTED_GROUPS
    ):
        return None  # a wrong apiVersion of a modelled kind is reported by the caller
    not_supported = kind_not_supported(kind, api_version)
    if not_supported:
        return {"path": "kind", "message": not_supported}
    if kind in SPEC_MODELS:
        return None
    if kind in KNOWN_IGNORED_KINDS:
        return {"severity": "warning", "message": f"kind {kind} is not acted on by plait yet; ignored"}
    supported = ", ".join(sorted(SPEC_MODELS))
    return {"path": "kind", "message": f"unsupported kind {kind!r}; plait reads {supported}"}


def parse_document(doc: Any, source: Source) -> tuple[list[Resource], list[Problem]]:
    """One YAML document (already parsed) → resources or problems. `kind: List` is unpacked."""
    base = Problem(message="", file=source.file, document=source.document)
    if not isinstance(doc, dict):
        expected = f"expected a mapping with apiVersion, kind, metadata; got {type(doc).__name__}"
        return [], [Problem(**{**base.__dict__, "message": expected})]
    kind, api_version = doc.get("kind"), doc.get("apiVersion")
    if kind == "List" and isinstance(doc.get("items"), list):
        resources, problems = [], []
        for item in doc["items"]:
            r, p = parse_document(item, source)
            resources += r
            problems += p
        return resources, problems
    if not isinstance(kind, str) or not isinstance(api_version, str):
        return [], [
            Problem(
                **{
                    **base.__dict__,
                    "path": "kind" if not isinstance(kind, str) else "apiVersion",
                    "message": "every document needs apiVersion and kind",
                }
            )
        ]
    meta_raw = doc.get("metadata") or {}
    name = meta_raw.get("name", "") if isinstance(meta_raw, dict) else ""
    namespace = (meta_raw.get("namespace") if isinstance(meta_raw, dict) else None) or "default"
    base = Problem(message="", file=source.file, document=source.document, kind=kind, namespace=namespace, name=name)
    kind = internal_kind(kind, api_version)
    refusal = _kind_refusal(kind, api_version)
    if refusal:
        return [], [Problem(**{**base.__dict__, **refusal})]
    versions, model = SPEC_MODELS[kind]
    if api_version not in versions:
        return [], [
            Problem(
                **{
                    **base.__dict__,
                    "path": "apiVersion",
                    "message": f"{api_version!r} is not an apiVersion of {base.kind}; expected one of {', '.join(versions)}",
                }
            )
        ]
    unknown = sorted(set(doc) - {"apiVersion", "kind", "metadata", "spec", "status"})
    if unknown and kind not in FLAT_KINDS:
        expected = "unknown top-level field; expected apiVersion, kind, metadata, spec"
        return [], [Problem(**{**base.__dict__, "path": unknown[0], "message": expected})]
    try:
        meta = ObjectMeta.model_validate(meta_raw)
    except ValidationError as exc:
        return [], _problems_from_validation(exc, base, "metadata")
    flat = kind in FLAT_KINDS
    body = {k: v for k, v in doc.items() if k not in ("apiVersion", "kind", "metadata")} if flat else doc.get("spec")
    try:
        spec = model.model_validate(body or {}, by_alias=True, by_name=False)
    except ValidationError as exc:
        return [], _problems_from_validation(exc, base, "" if flat else "spec")
    rules = SPEC_RULES.get(kind)
    findings = list(rules(spec)) if rules else []
    if findings:
        return [], [
            Problem(**{**base.__dict__, "path": _path([path], "" if flat else "spec"), "message": message})
            for path, message in findings
        ]
    return [Resource(kind=kind, api_version=api_version, meta=meta, spec=spec, source=source)], []


def parse_text(text: str, file: str = "<input>") -> LoadResult:
    """A (possibly multi-document) YAML text → LoadResult with per-document problems."""
    result = LoadResult()
    try:
        docs = load_documents(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        result.problems.append(Problem(file=file, message=f"not valid YAML{where}: {getattr(exc, 'problem', exc)}"))
        return result
    for index, doc in enumerate(docs):
        if doc is None:
            continue
        resources, problems = parse_document(doc, Source(file=file, document=index))
        result.resources += resources
        result.problems += problems
    return result


def yaml_files(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.suffix in YAML_SUFFIXES and p.is_file())
    return [path]


def load_paths(paths: Iterable[str | Path]) -> LoadResult:
    """Read YAML files and directories (recursively), then check references across objects."""
    result = LoadResult()
    for path in map(Path, paths):
        if not path.exists():
            result.problems.append(Problem(file=str(path), message="no such file or directory"))
            continue
        for file in yaml_files(path):
            part = parse_text(file.read_text(encoding="utf-8"), str(file))
            result.resources += part.resources
            result.problems += part.problems
    result.problems += check_references(result.resources)
    return result


def load_text(text: str, file: str = "<input>") -> LoadResult:
    result = parse_text(text, file)
    result.problems += check_references(result.resources)
    return result
