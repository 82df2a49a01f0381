"""Golden tests of the injector: tests/inject/testdata/NN-name.input.yaml → NN-name.golden.yaml.

Each input is a set of manifests, injected as ``plait kube-inject`` does (`kube_inject`); the golden
holds the injected documents, preceded by one ``# skipped: …`` line per workload left alone. An
optional ``# settings: KEY=VALUE …`` line in the input sets `InjectSettings` fields. Regenerate
with ``REFRESH_GOLDEN=1 pytest tests/inject/test_injected_goldens.py``; a failure prints a unified diff.
Beside each golden: the webhook's JSON patch applied to the original (by the independent
``jsonpatch`` package) gives the same pod, and injecting the golden again changes nothing.
"""

from __future__ import annotations

import difflib
import os
import re
from pathlib import Path

import jsonpatch
import pytest
import yaml

from plait.inject import InjectSettings, inject, json_patch, kube_inject
from plait.inject.workload import pod_template

TESTDATA = Path(__file__).parent / "testdata"
CASES = sorted(p.name.removesuffix(".input.yaml") for p in TESTDATA.glob("*.input.yaml"))
_SETTINGS_LINE = re.compile(r"^# settings: (.*)$", re.M)


def settings_for(text: str) -> InjectSettings:
    found = _SETTINGS_LINE.search(text)
    fields = dict(item.split("=", 1) for item in found.group(1).split()) if found else {}
    return InjectSettings(**fields)


def render(case: str) -> str:
    text = (TESTDATA / f"{case}.input.yaml").read_text()
    result = kube_inject(yaml.safe_load_all(text), settings_for(text))
    skipped = "".join(f"# skipped: {warning}\n" for warning in result.warnings)
    return skipped + yaml.safe_dump_all(result.documents, sort_keys=False, width=120)


@pytest.mark.parametrize("case", CASES)
def test_golden(case: str) -> None:
    actual = render(case)
    golden = TESTDATA / f"{case}.golden.yaml"
    if os.environ.get("REFRESH_GOLDEN"):
        golden.write_text(actual)
    assert golden.exists(), f"{case}: golden missing; run with REFRESH_GOLDEN=1 and review it"
    expected = golden.read_text()
    if actual != expected:
        diff = "".join(
            difflib.unified_diff(expected.splitlines(True), actual.splitlines(True), f"{case}.golden.yaml", "injected")
        )
        pytest.fail(f"injection of {case} changed (REFRESH_GOLDEN=1 to accept):\n{diff}")


def pods_of(documents) -> list[dict]:
    """Every Pod and pod template in the documents (List items too)."""
    pods = []
    for doc in documents:
        if not isinstance(doc, dict):
            continue
        if doc.get("kind") == "List":
            pods += pods_of(doc.get("items") or [])
        elif doc.get("kind") == "Pod":
            pods.append(doc)
        elif (template := pod_template(doc)) is not None:
            pods.append(template)
    return pods


@pytest.mark.parametrize("case", CASES)
def test_json_patch_gives_the_injected_pod(case: str) -> None:
    text = (TESTDATA / f"{case}.input.yaml").read_text()
    pods = pods_of(yaml.safe_load_all(text))
    assert pods, f"{case} holds no pod"
    for pod in pods:
        injected = inject(pod, settings_for(text))
        patch = json_patch(pod, injected)
        assert jsonpatch.apply_patch(pod, patch) == injected
        assert (patch == []) == (injected == pod)


@pytest.mark.parametrize("case", CASES)
def test_injecting_the_golden_again_changes_nothing(case: str) -> None:
    golden = (TESTDATA / f"{case}.golden.yaml").read_text()
    documents = list(yaml.safe_load_all(golden))
    settings = settings_for((TESTDATA / f"{case}.input.yaml").read_text())
    assert kube_inject(documents, settings).documents == documents
    for pod in pods_of(documents):
        if "sidecar.istio.io/status" in (pod.get("metadata") or {}).get("annotations", {}):
            assert json_patch(pod, inject(pod, settings)) == []
