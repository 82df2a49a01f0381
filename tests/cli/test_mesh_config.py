"""``plait control-plane --mesh-config``: Istio's MeshConfig file, as istiod's --meshConfig (plait install
mounts ConfigMap istio[-REV] at /etc/istio/config/mesh): the injector's proxy defaults and the access-log
settings translation reads; a bad file is refused saying which file and field."""

from __future__ import annotations

import pytest
import typer

from plait.api.mesh import MESH_CONFIG_MAP
from plait.cli.controlplane import check_mesh_config, injector_settings
from plait.controlplane.meshfile import mesh_config_update

MESH = """\
accessLogFile: /dev/stdout
accessLogEncoding: JSON
defaultConfig:
  discoveryAddress: istiod-canary.istio-system.svc:15012
  holdApplicationUntilProxyStarts: true
  proxyMetadata:
    ISTIO_META_DNS_CAPTURE: "true"
"""


def test_the_mesh_config_sets_the_injectors_proxy_defaults_and_the_access_logs(tmp_path):
    path = tmp_path / "mesh"
    path.write_text(MESH)
    check_mesh_config(path, injector_settings(None, None, "canary"))  # valid: no exit
    update = mesh_config_update(path.read_text(), str(path), injector_settings(None, None, "canary"))
    inject, resources = update.inject, update.resources
    assert inject.control_plane == "istiod-canary.istio-system.svc:15012"
    assert inject.hold_application_until_proxy_starts is True
    assert inject.proxy_metadata == {"ISTIO_META_DNS_CAPTURE": "true"}
    [config_map] = resources
    assert config_map.key == ("ConfigMap", "istio-system", MESH_CONFIG_MAP)
    mesh = config_map.spec.mesh_config()
    assert (mesh.access_log_file, mesh.access_log_encoding) == ("/dev/stdout", "JSON")


def test_the_configmap_itself_is_read_too(tmp_path):
    path = tmp_path / "istio.yaml"
    path.write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: istio}\ndata:\n  mesh: |\n    accessLogFile: /dev/stdout\n"
    )
    [config_map] = mesh_config_update(path.read_text(), str(path), injector_settings(None, None, "")).resources
    assert config_map.spec.mesh_config().access_log_file == "/dev/stdout"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("accessLogEncoding: XML\n", "accessLogEncoding"),
        ("defaultConfig: [1]\n", "defaultConfig: expected a ProxyConfig object"),
        ("a: [\n", "not valid YAML"),
    ],
)
def test_a_bad_mesh_config_is_refused_naming_the_file_and_field(tmp_path, capsys, text, expected):
    path = tmp_path / "mesh"
    path.write_text(text)
    with pytest.raises(typer.Exit) as exited:
        check_mesh_config(path, injector_settings(None, None, ""))
    assert exited.value.exit_code == 2
    printed = " ".join(capsys.readouterr().err.split())
    assert str(path) in printed and expected in printed, printed


def test_a_missing_file_is_refused(tmp_path, capsys):
    with pytest.raises(typer.Exit):
        check_mesh_config(tmp_path / "nope", injector_settings(None, None, ""))
    assert "--mesh-config" in capsys.readouterr().err
