"""Problems found in user configuration, phrased for the person who wrote it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class Problem:
    """One thing wrong with one document: where it is and what was expected."""

    message: str
    file: str = "<input>"
    document: int | None = None  # 0-based index of the YAML document in its file
    kind: str = ""
    namespace: str = ""
    name: str = ""
    path: str = ""  # field path inside the document, e.g. spec.http[0].route[1].weight
    severity: Severity = "error"

    def where(self) -> str:
        parts = [self.file]
        if self.document is not None:
            parts.append(f"document {self.document}")
        if self.kind:
            ref = f"{self.kind} {self.namespace}/{self.name}" if self.name else self.kind
            parts.append(ref)
        return ", ".join(parts)

    def __str__(self) -> str:
        field = f" field {self.path}:" if self.path else ""
        return f"{self.severity}: {self.where()}:{field} {self.message}"


class ConfigError(Exception):
    """Raised when configuration has errors; nothing from it may be used."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        errors = [p for p in problems if p.severity == "error"]
        super().__init__("\n".join(str(p) for p in errors) or "invalid configuration")
