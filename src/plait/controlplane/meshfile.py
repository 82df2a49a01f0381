"""istiod's ``--meshConfig`` file, followed while the control plane runs.

On Kubernetes, `plait install` mounts the ConfigMap ``istio[-REV]`` at /etc/istio/config and istiod reads
``/etc/istio/config/mesh``. The kubelet rewrites that file when the ConfigMap changes (within its sync
period, about a minute), and istiod, as Istio's does, takes the new MeshConfig without a restart.

In: the file's text (MeshConfig YAML, or a ConfigMap whose ``data.mesh`` holds it) and the injector's
settings before the mesh's defaults. Out: `MeshConfigUpdate`: the injector's settings with the mesh's
``defaultConfig`` applied, and the MeshConfig as the root namespace's ConfigMap ``istio`` that translation
reads (access logs, tracing). `mesh_config_update` is pure; `MeshConfigFile` is the thin shell that
polls the file and keeps the last good configuration when a new one is wrong (the error is logged with
the file and field, as `plait validate` would say it).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from plait.api.loader import parse_text
from plait.api.mesh import MESH_CONFIG_MAP, MESH_KEY
from plait.api.resources import Resource
from plait.inject.mesh_config import apply_mesh_config, mesh_config_from_text
from plait.inject.settings import InjectError, InjectSettings
from plait.model.snapshot import ROOT_NAMESPACE

log = logging.getLogger("plait.controlplane.meshfile")


@dataclass(frozen=True)
class MeshConfigUpdate:
    inject: InjectSettings
    resources: tuple[Resource, ...]


def mesh_config_update(text: str, where: str, base: InjectSettings) -> MeshConfigUpdate:
    """The injector's settings and the ConfigMap ``istio`` from a MeshConfig text; InjectError saying
    what is wrong, naming `where` and the field."""
    mesh = mesh_config_from_text(text, where)
    inject = apply_mesh_config(base, mesh, where)
    config_map = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": MESH_CONFIG_MAP, "namespace": ROOT_NAMESPACE},
        "data": {MESH_KEY: yaml.safe_dump(mesh, sort_keys=False)},
    }
    loaded = parse_text(yaml.safe_dump(config_map), where)
    if loaded.errors:
        raise InjectError("; ".join(str(p) for p in loaded.problems if p.severity == "error"))
    return MeshConfigUpdate(inject, tuple(loaded.resources))


class MeshConfigFile:
    """The file at `path`, read again every `interval` seconds; `current` is the last good reading."""

    def __init__(self, path: Path, base: InjectSettings, first: MeshConfigUpdate, text: str):
        self.path, self.base, self.current, self._text = path, base, first, text

    @classmethod
    def open(cls, path: Path, base: InjectSettings) -> MeshConfigFile:
        """Read the file once (OSError or InjectError: the control plane does not start on it)."""
        text = path.read_text()
        return cls(path, base, mesh_config_update(text, str(path), base), text)

    def reread(self) -> bool:
        """Read the file; True when it holds a new, valid MeshConfig (now `current`)."""
        try:
            text = self.path.read_text()
        except OSError as error:
            log.warning("mesh config %s: %s; keeping the last good one", self.path, error.strerror or error)
            return False
        if text == self._text:
            return False
        self._text = text
        try:
            self.current = mesh_config_update(text, str(self.path), self.base)
        except InjectError as error:
            log.error("mesh config: %s; keeping the last good one", error)
            return False
        log.info("mesh config %s changed: now in force", self.path)
        return True

    async def follow(self, on_change: Callable[[MeshConfigUpdate], None], interval: float = 2.0) -> None:
        """Call `on_change` with each new valid MeshConfig until cancelled."""
        while True:
            await asyncio.sleep(interval)
            if self.reread():
                on_change(self.current)
