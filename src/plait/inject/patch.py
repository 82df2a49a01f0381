"""RFC 6902 JSON Patch from the pod the API server sent to the injected pod (the webhook's answer).

`json_patch(original, injected)` walks both documents: a key only in `injected` is an ``add``, a key
only in `original` a ``remove``, a changed scalar a ``replace``. Lists are compared item by item
when their length is the same; a list that only grew gets ``add`` ops at its end (``/-`` is avoided
so each op names its index); any other list change replaces the list. Keys are escaped as RFC 6901
says (``~`` → ``~0``, ``/`` → ``~1``: ``sidecar.istio.io~1status``). Pure.
"""

from __future__ import annotations

from typing import Any

Op = dict[str, Any]


def pointer(path: tuple[str | int, ...]) -> str:
    """The RFC 6901 JSON pointer of `path`."""
    return "".join("/" + str(part).replace("~", "~0").replace("/", "~1") for part in path)


def json_patch(original: Any, injected: Any) -> list[Op]:
    """Operations that turn `original` into `injected` (both JSON values)."""
    ops: list[Op] = []
    _diff(original, injected, (), ops)
    return ops


def _diff(old: Any, new: Any, path: tuple[str | int, ...], ops: list[Op]) -> None:
    if isinstance(old, dict) and isinstance(new, dict):
        for key in old:
            if key not in new:
                ops.append({"op": "remove", "path": pointer((*path, key))})
        for key, value in new.items():
            if key in old:
                _diff(old[key], value, (*path, key), ops)
            else:
                ops.append({"op": "add", "path": pointer((*path, key)), "value": value})
    elif isinstance(old, list) and isinstance(new, list) and _lists_patchable(old, new):
        for index, value in enumerate(new):
            if index < len(old):
                _diff(old[index], value, (*path, index), ops)
            else:
                ops.append({"op": "add", "path": pointer((*path, index)), "value": value})
    elif old != new or type(old) is not type(new):
        ops.append({"op": "replace", "path": pointer(path), "value": new})


def _lists_patchable(old: list, new: list) -> bool:
    """Same length (patch item by item), or `new` starts with `old` (append)."""
    return len(old) == len(new) or (len(new) > len(old) and new[: len(old)] == old)
