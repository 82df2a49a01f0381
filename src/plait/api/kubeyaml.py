"""YAML read the way Kubernetes reads it (sigs.k8s.io/yaml, i.e. go-yaml v2), not as YAML 1.1.

Three differences from PyYAML's SafeLoader matter for Istio configuration:

* scalars: go-yaml keeps ``10:30`` (sexagesimal in YAML 1.1) and ``2001-12-14``
  (a timestamp) as strings, and reads ``1e3`` as a number; booleans stay
  YAML 1.1's (``yes``/``no``/``on``/``off``), as in go-yaml v2;
* flow collections: a ``:`` not followed by a blank does not end a plain
  scalar, so ``addresses: [2001:db8::1, fe80::]`` is a list of two strings;
* a key repeated in one mapping is an error (kubectl's strict field
  validation), not a silent "last one wins".

`load_documents` uses libyaml when PyYAML has it (`FastLoader`, which has the
scalar rules only) and falls back to the pure-Python scanner below for texts
libyaml refuses.
"""

from __future__ import annotations

import re
from typing import Any

import yaml
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.nodes import MappingNode, ScalarNode
from yaml.resolver import BaseResolver
from yaml.scanner import ScannerError
from yaml.tokens import ScalarToken

_BLANK_OR_END = "\0 \t\r\n\x85\u2028\u2029"
_FLOW_INDICATORS = ",?[]{}"

_IMPLICIT = (
    (
        "tag:yaml.org,2002:bool",
        r"yes|Yes|YES|no|No|NO|true|True|TRUE|false|False|FALSE|on|On|ON|off|Off|OFF",
        "yYnNtTfFoO",
    ),
    ("tag:yaml.org,2002:int", r"[-+]?(?:0b[01_]+|0[0-7_]+|0x[0-9a-fA-F_]+|0|[1-9][0-9_]*)", "-+0123456789"),
    (
        "tag:yaml.org,2002:float",
        r"[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?(?:[eE][-+]?[0-9]+)?|\.[0-9_]+(?:[eE][-+]?[0-9]+)?)"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN)",
        "-+0123456789.",
    ),
    ("tag:yaml.org,2002:null", r"~|null|Null|NULL|", ["~", "n", "N", ""]),
    ("tag:yaml.org,2002:merge", r"<<", "<"),
)


class KubeResolver(BaseResolver):
    """go-yaml v2's implicit types: no timestamps, no sexagesimal numbers, exponents without a dot."""


for _tag, _pattern, _first in _IMPLICIT:
    KubeResolver.add_implicit_resolver(_tag, re.compile(f"^(?:{_pattern})$"), list(_first))


class KubeConstructor(SafeConstructor):
    """SafeConstructor that refuses a key written twice in one mapping (``<<`` merges may still be overridden)."""

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, MappingNode):
            seen: set[tuple[str, str]] = set()
            for key_node, _ in node.value:
                if not isinstance(key_node, ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = (key_node.tag, key_node.value)
                if key in seen:
                    raise ConstructorError(
                        "while constructing a mapping",
                        node.start_mark,
                        f"found duplicate key {key_node.value!r}",
                        key_node.start_mark,
                    )
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


class KubeScanner(yaml.scanner.Scanner):
    """PyYAML's scanner, except that in flow context ``:`` ends a plain scalar only before a blank."""

    def _plain_length(self) -> int:
        length = 0
        while True:
            ch = self.peek(length)
            if ch in _BLANK_OR_END or (ch == ":" and self.peek(length + 1) in _BLANK_OR_END):
                return length
            if self.flow_level and ch in _FLOW_INDICATORS:
                return length
            length += 1

    def scan_plain(self) -> ScalarToken:
        chunks: list[str] = []
        start_mark = end_mark = self.get_mark()
        indent = self.indent + 1
        spaces: list[str] = []
        while self.peek() != "#":
            length = self._plain_length()
            if length == 0:
                break
            self.allow_simple_key = False
            chunks.extend(spaces)
            chunks.append(self.prefix(length))
            self.forward(length)
            end_mark = self.get_mark()
            spaces = self.scan_plain_spaces(indent, start_mark)
            if not spaces or self.peek() == "#" or (not self.flow_level and self.column < indent):
                break
        return ScalarToken("".join(chunks), True, start_mark, end_mark)


class _PureLoader(
    yaml.reader.Reader, KubeScanner, yaml.parser.Parser, yaml.composer.Composer, KubeConstructor, KubeResolver
):
    def __init__(self, stream: str):
        yaml.reader.Reader.__init__(self, stream)
        KubeScanner.__init__(self)
        yaml.parser.Parser.__init__(self)
        yaml.composer.Composer.__init__(self)
        KubeConstructor.__init__(self)
        KubeResolver.__init__(self)


if hasattr(yaml, "CParser"):

    class FastLoader(yaml.CParser, KubeConstructor, KubeResolver):  # libyaml: ~10x faster
        def __init__(self, stream: str):
            yaml.CParser.__init__(self, stream)
            KubeConstructor.__init__(self)
            KubeResolver.__init__(self)
else:  # pragma: no cover - PyYAML built without libyaml
    FastLoader = _PureLoader  # type: ignore[misc, assignment]


def load_documents(text: str) -> list[Any]:
    """Every document of a YAML text, as Kubernetes would read it; raises yaml.YAMLError."""
    try:
        return list(yaml.load_all(text, Loader=FastLoader))
    except ScannerError as exc:
        if "found unexpected ':'" not in str(exc.problem):
            raise
    return list(yaml.load_all(text, Loader=_PureLoader))
