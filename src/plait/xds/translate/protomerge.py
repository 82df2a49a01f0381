"""Protobuf merge semantics on Envoy's JSON form, as EnvoyFilter MERGE applies them (pure).

`merge_message(dst, src, type_name)` merges `src` into `dst` (both dicts with proto field names)
the way Istio's ``pkg/proto/merge`` merges two messages: a scalar set in `src` replaces; a repeated
field is appended to (replaced with ``replace_lists``, for MERGE_AND_REPLACE_LIST); a map has its
entries replaced key by key; a message field is merged recursively, except ``Duration`` and
``Any`` (and the other well-known types), which are replaced whole; setting one member of a oneof
clears the others. `merge_any` is Istio's MergeAnyWithAny for a filter's ``typed_config``: two
configs of the same ``@type`` are merged field by field, a config of another type replaces.

`src` must hold only fields that are set (as `plait.api.extensions.envoy_value` gives it); `dst`
is changed in place and returned. Nothing from `src` is shared with `dst`.
"""

from __future__ import annotations

import copy
from typing import Any

from plait.api.extensions import message_class

# Messages that merge as a whole (their JSON form is not an object of their fields, or Istio
# replaces them: Duration), and Struct, whose JSON object is a map.
REPLACED_TYPES = frozenset(
    {
        "google.protobuf.Any",
        "google.protobuf.Duration",
        "google.protobuf.Timestamp",
        "google.protobuf.FieldMask",
        "google.protobuf.Value",
        "google.protobuf.ListValue",
        "google.protobuf.Empty",
        "google.protobuf.DoubleValue",
        "google.protobuf.FloatValue",
        "google.protobuf.Int64Value",
        "google.protobuf.UInt64Value",
        "google.protobuf.Int32Value",
        "google.protobuf.UInt32Value",
        "google.protobuf.BoolValue",
        "google.protobuf.StringValue",
        "google.protobuf.BytesValue",
    }
)
STRUCT = "google.protobuf.Struct"


def _descriptor(type_name: str):
    cls = message_class(type_name)
    return cls.DESCRIPTOR if cls is not None else None


def _is_map(field) -> bool:
    return field.message_type is not None and field.message_type.GetOptions().map_entry


def merge_message(dst: dict, src: dict, type_name: str, *, replace_lists: bool = False) -> dict:
    """Merge `src` into `dst`, both of message type `type_name` (full protobuf name)."""
    descriptor = _descriptor(type_name)
    if descriptor is None:  # a type no module defines: nothing to be guided by, so replace
        dst.clear()
        dst.update(copy.deepcopy(src))
        return dst
    for key, value in src.items():
        field = descriptor.fields_by_name.get(key)
        if field is None:
            dst[key] = copy.deepcopy(value)
            continue
        if field.containing_oneof is not None:
            for other in field.containing_oneof.fields:
                if other.name != key:
                    dst.pop(other.name, None)
        dst[key] = _merge_field(dst.get(key), value, field, replace_lists)
    return dst


def _merge_field(old: Any, new: Any, field, replace_lists: bool) -> Any:
    if _is_map(field):
        merged = dict(old) if isinstance(old, dict) else {}
        merged.update(copy.deepcopy(new))
        return merged
    if field.is_repeated:
        kept = old if isinstance(old, list) and not replace_lists else []
        return kept + copy.deepcopy(new)
    message = field.message_type
    if message is None or message.full_name in REPLACED_TYPES or not isinstance(old, dict):
        return copy.deepcopy(new)
    if message.full_name == STRUCT:
        return {**old, **copy.deepcopy(new)}
    return merge_message(old, new, message.full_name, replace_lists=replace_lists)


def type_name_of(any_json: dict) -> str:
    return str(any_json.get("@type", "")).rpartition("/")[2]


def merge_any(dst: dict | None, src: dict) -> dict:
    """A typed_config merged with another (Istio's MergeAnyWithAny): same @type → merged field by
    field; different @type (or no `dst`) → `src` replaces it."""
    if not dst or type_name_of(dst) != type_name_of(src):
        return copy.deepcopy(src)
    body = {k: v for k, v in dst.items() if k != "@type"}
    merge_message(body, {k: v for k, v in src.items() if k != "@type"}, type_name_of(src))
    return {"@type": dst["@type"], **body}
