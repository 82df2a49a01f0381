"""Istio's own examples (tests/api/testdata/istio, see NOTICE): what Istio accepts loads, what it refuses is refused.

A valid document may only be refused for using Istio API that plait does not
implement yet, and then with "not supported by plait yet"; never as a typo.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from plait.api.kubeyaml import load_documents
from plait.api.loader import parse_document
from plait.api.resources import Source

EXAMPLES = Path(__file__).parent / "testdata" / "istio"
NOT_YET = "not supported by plait yet"
# Valid in Istio's old test data but no longer in Istio's CRD schema (a Kubernetes API server refuses them too).
REMOVED_FROM_ISTIO = {("rule-websocket-route.yaml", 2), ("rule-websocket-route.yaml", 3)}  # http[].websocketUpgrade


def documents(pattern: str) -> list[tuple[str, int, dict]]:
    out = []
    for path in sorted(EXAMPLES.glob(pattern)):
        for index, doc in enumerate(load_documents(path.read_text())):
            if isinstance(doc, dict):
                out.append((path.name, index, doc))
    return out


def errors_of(name: str, index: int, doc: dict) -> list[str]:
    doc = {k: v for k, v in doc.items() if k != "_err"}  # Istio's expected message, not part of the object
    _, problems = parse_document(doc, Source(file=name, document=index))
    return [str(p) for p in problems if p.severity == "error"]


VALID = (
    documents("crds/*-valid.yaml")
    + documents("config/*.yaml")
    + [
        (name, index, doc)
        for name, index, doc in documents("samples/*.yaml")
        if "istio.io/" in str(doc.get("apiVersion"))
    ]
)
INVALID = documents("crds/*-invalid.yaml")


@pytest.mark.parametrize("name, index, doc", VALID, ids=[f"{n}#{i}" for n, i, _ in VALID])
def test_what_istio_accepts_loads_or_is_named_not_supported_yet(name: str, index: int, doc: dict) -> None:
    errors = errors_of(name, index, doc)
    if (name, index) in REMOVED_FROM_ISTIO:
        assert errors and "unknown field" in errors[0]
        return
    assert all(NOT_YET in e for e in errors), errors


@pytest.mark.parametrize("name, index, doc", INVALID, ids=[f"{n}#{i}" for n, i, _ in INVALID])
def test_what_istio_refuses_is_refused(name: str, index: int, doc: dict) -> None:
    assert errors_of(name, index, doc), f"accepted, but Istio refuses it: {doc.get('_err')}"


def test_most_of_istios_valid_examples_load_today() -> None:
    loaded = [(n, i) for n, i, doc in VALID if not errors_of(n, i, doc)]
    assert len(loaded) >= 0.75 * len(VALID), f"{len(loaded)} of {len(VALID)}"
