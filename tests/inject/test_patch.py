"""json_patch: RFC 6902 operations, checked against the independent ``jsonpatch`` package."""

from __future__ import annotations

import json

import jsonpatch
import pytest

from plait.inject import json_patch
from plait.inject.patch import pointer

CASES = [
    ({"a": 1}, {"a": 1}),
    ({"a": 1}, {"a": 2}),
    ({"a": 1}, {"a": 1, "b": {"c": [1]}}),
    ({"a": 1, "b": 2}, {"a": 1}),
    ({"l": [1, 2]}, {"l": [1, 2, 3, 4]}),  # grown: adds at the end
    ({"l": [1, 2]}, {"l": [0, 1, 2]}),  # inserted in front: the list is replaced
    ({"l": [1, 2, 3]}, {"l": [1, 3]}),  # shrunk
    ({"l": [{"x": 1}, {"y": 2}]}, {"l": [{"x": 1, "z": 3}, {"y": 2}]}),  # same length: item by item
    ({"a/b": {"c~d": 1}}, {"a/b": {"c~d": 2, "e/f": 3}}),  # escaped keys
    ({"a": 1}, {"a": "1"}),  # a type change is a replace
    ({"a": 1}, {"a": True}),
    ({"a": None}, {"a": {}}),
    ({}, {"metadata": {"annotations": {"sidecar.istio.io/status": "{}"}}}),
]


@pytest.mark.parametrize(("original", "wanted"), CASES)
def test_patch_turns_original_into_wanted(original, wanted) -> None:
    patch = json_patch(original, wanted)
    result = jsonpatch.apply_patch(original, patch)
    assert json.dumps(result, sort_keys=True) == json.dumps(wanted, sort_keys=True)  # 1 and true differ in JSON
    assert (patch == []) == (json.dumps(original) == json.dumps(wanted))


def test_patch_operations_are_the_smallest_for_common_changes() -> None:
    original = {"metadata": {"labels": {"app": "x"}}, "spec": {"containers": [{"name": "app"}]}}
    wanted = {
        "metadata": {"labels": {"app": "x", "security.istio.io/tlsMode": "istio"}},
        "spec": {"containers": [{"name": "app"}, {"name": "istio-proxy"}]},
    }
    assert json_patch(original, wanted) == [
        {"op": "add", "path": "/metadata/labels/security.istio.io~1tlsMode", "value": "istio"},
        {"op": "add", "path": "/spec/containers/1", "value": {"name": "istio-proxy"}},
    ]


def test_pointer_escapes_tilde_before_slash() -> None:
    assert pointer(("metadata", "annotations", "a~/b", 0)) == "/metadata/annotations/a~0~1b/0"
