"""docs/traffic-management.md shows only YAML that these end-to-end tests really apply."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import yaml

from plait.testing.backends import HttpBackend, service_yaml

HERE = Path(__file__).parent
DOC = HERE.parents[1] / "docs" / "traffic-management.md"
DOC_GATEWAY_IP = "127.0.150.1"  # the examples' stand-in for the test's own subnet


def yaml_used_by_tests() -> list[str]:
    """Every module-level YAML constant of the e2e tests, as the docs show it."""
    texts = []
    for path in sorted(HERE.glob("test_*.py")):
        for node in ast.parse(path.read_text()).body:
            if (
                isinstance(node, ast.Assign)
                and isinstance(node.value, ast.Constant)
                and isinstance(node.value.value, str)
                and "apiVersion:" in node.value.value
                and "{{" not in node.value.value
            ):  # str.format templates are filled in by their tests
                texts.append(node.value.value.replace("{gateway_ip}", DOC_GATEWAY_IP))
    backends = {v: HttpBackend(f"reviews-{v}", f"127.0.150.{10 + i}", 8080) for i, v in enumerate(("v1", "v2"), 1)}
    texts.append(service_yaml("reviews", 9080, backends))
    return texts


def test_every_yaml_example_in_the_docs_is_used_by_a_test():
    examples = re.findall(r"```yaml\n(.*?)```", DOC.read_text(), flags=re.DOTALL)
    known = [list(yaml.safe_load_all(text)) for text in yaml_used_by_tests()]
    assert len(examples) >= 15
    for example in examples:
        assert list(yaml.safe_load_all(example)) in known, f"not used by any e2e test:\n{example}"
