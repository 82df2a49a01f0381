"""Istio's MeshConfig (``--meshConfigFile``) applied to `InjectSettings`: the mesh-wide sidecar defaults.

Read: ``trustDomain``, ``enablePrometheusMerge`` and, from ``defaultConfig`` (a ProxyConfig), ``discoveryAddress`` (the
control plane), ``holdApplicationUntilProxyStarts``, ``concurrency``, ``terminationDrainDuration``
and ``proxyMetadata``. Other MeshConfig and ProxyConfig fields are accepted and change nothing
here. Also takes the ``istio`` ConfigMap itself (its ``data.mesh``). Pure.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import yaml

from plait.inject.options import check_proxy_config_fields, proxy_config_value
from plait.inject.settings import InjectError, InjectSettings


def mesh_config_from_text(text: str, where: str) -> dict[str, Any]:
    """The MeshConfig in a file: plain MeshConfig YAML, or a ConfigMap whose ``data.mesh`` holds it."""
    try:
        loaded = yaml.safe_load(text) or {}
        if isinstance(loaded, dict) and loaded.get("kind") == "ConfigMap":
            loaded = yaml.safe_load((loaded.get("data") or {}).get("mesh") or "") or {}
    except yaml.YAMLError as exc:
        raise InjectError(f"{where}: not valid YAML: {exc}") from None
    if not isinstance(loaded, dict):
        raise InjectError(f"{where}: expected a MeshConfig (fields such as trustDomain, defaultConfig)")
    return loaded


def apply_mesh_config(settings: InjectSettings, mesh: Mapping[str, Any], where: str) -> InjectSettings:
    """`settings` with the mesh's defaults; InjectError naming the file and field on a bad value."""
    default_config = mesh.get("defaultConfig") or {}
    if not isinstance(default_config, dict):
        raise InjectError(f"{where}: defaultConfig: expected a ProxyConfig object")
    context = f"{where}: defaultConfig"
    check_proxy_config_fields(default_config, context)
    changes: dict[str, Any] = {}
    if "trustDomain" in mesh:
        changes["trust_domain"] = str(mesh["trustDomain"])
    if "enablePrometheusMerge" in mesh:
        if not isinstance(mesh["enablePrometheusMerge"], bool):
            raise InjectError(f"{where}: enablePrometheusMerge: expected true or false")
        changes["enable_prometheus_merge"] = mesh["enablePrometheusMerge"]
    if "discoveryAddress" in default_config:
        changes["control_plane"] = str(default_config["discoveryAddress"])
    for field, setting in (
        ("holdApplicationUntilProxyStarts", "hold_application_until_proxy_starts"),
        ("concurrency", "concurrency"),
        ("terminationDrainDuration", "drain_seconds"),
        ("proxyMetadata", "proxy_metadata"),
    ):
        if field in default_config:
            changes[setting] = proxy_config_value(default_config, field, context)
    return dataclasses.replace(settings, **changes)
