"""The core v1 Secret kind: its top-level fields, base64 data, Istio's and Kubernetes' key names."""

from __future__ import annotations

import base64

from plait.api import load_text


def secret(body: str) -> str:
    return f"apiVersion: v1\nkind: Secret\nmetadata: {{name: cred, namespace: istio-system}}\n{body}"


def test_data_and_string_data_are_read_with_either_key_naming():
    encoded = base64.b64encode(b"CERT").decode()
    (tls,) = load_text(
        secret(f"type: kubernetes.io/tls\ndata: {{tls.crt: {encoded}}}\nstringData: {{tls.key: KEY, ca.crt: CA}}\n")
    ).raise_for_errors()
    assert tls.spec.certificate_and_key() == (b"CERT", b"KEY") and tls.spec.ca_certificate() == b"CA"
    (generic,) = load_text(secret("stringData: {cert: C, key: K, cacert: A}\n")).raise_for_errors()
    assert generic.spec.certificate_and_key() == (b"C", b"K") and generic.spec.ca_certificate() == b"A"
    assert generic.to_dict()["stringData"] == {"cert": "C", "key": "K", "cacert": "A"}  # written back flat
    assert "spec" not in generic.to_dict()


def test_bad_secrets_are_refused_with_the_field_path():
    result = load_text(secret("data: {tls.crt: 'not base64!'}\n"))
    (problem,) = result.errors
    assert problem.path == "data" and "is not base64" in problem.message
    result = load_text(secret("type: kubernetes.io/tls\nstringData: {tls.crt: C}\n"))
    assert "needs the keys tls.crt and tls.key" in result.errors[0].message
    result = load_text(secret("strngData: {cert: C}\n"))
    assert result.errors[0].path == "strngData"
