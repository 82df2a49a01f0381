"""Istio's analysis messages (``istioctl analyze``): their codes, names, levels and texts, and how
istioctl prints them.

The message types are Istio's (``pkg/config/analysis/msg/messages.yaml`` of istio/istio): the
same code, name, level and template, so that scripts and habits built on istioctl's output keep
working. A `Message` names the object it is about (kind, namespace, name, and the file it came
from when it came from one) as istioctl's origin does.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Level(str, Enum):
    ERROR = "Error"
    WARNING = "Warning"
    INFO = "Info"

    @property
    def rank(self) -> int:
        """Istio's sort order: errors first."""
        return {"Error": 0, "Warning": 1, "Info": 2}[self.value]

    def at_least(self, threshold: Level) -> bool:
        return self.rank <= threshold.rank


@dataclass(frozen=True)
class MessageType:
    code: str
    name: str
    level: Level
    template: str  # Python %-style, as Istio's Go template (%q is rendered as a quoted string)


REFERENCED_RESOURCE_NOT_FOUND = MessageType(
    "IST0101", "ReferencedResourceNotFound", Level.ERROR, "Referenced %s not found: %q"
)
NAMESPACE_NOT_INJECTED = MessageType(
    "IST0102",
    "NamespaceNotInjected",
    Level.INFO,
    "The namespace is not enabled for Istio injection. Run 'kubectl label namespace %s istio-injection=enabled' "
    "to enable it, or 'kubectl label namespace %s istio-injection=disabled' to explicitly mark it as not needing "
    "injection.",
)
POD_MISSING_PROXY = MessageType(
    "IST0103",
    "PodMissingProxy",
    Level.WARNING,
    "The pod %s is missing the Istio proxy. This can often be resolved by restarting or redeploying the workload.",
)
SCHEMA_VALIDATION_ERROR = MessageType("IST0106", "SchemaValidationError", Level.ERROR, "Schema validation error: %s")
UNKNOWN_ANNOTATION = MessageType("IST0108", "UnknownAnnotation", Level.WARNING, "Unknown annotation: %s")
PORT_NAME_NOT_UNDER_NAMING_CONVENTION = MessageType(
    "IST0118",
    "PortNameIsNotUnderNamingConvention",
    Level.INFO,
    "Port name %s (port: %d, targetPort: %s) doesn't follow the naming convention of Istio port.",
)
NAMESPACE_MULTIPLE_INJECTION_LABELS = MessageType(
    "IST0123",
    "NamespaceMultipleInjectionLabels",
    Level.WARNING,
    "The namespace has more than one type of injection labels %s, which may lead to undefined behavior. Make sure "
    "only one injection label exists.",
)
DESTINATION_RULE_SUBSET_NOT_SELECT_PODS = MessageType(
    "IST0173",
    "DestinationRuleSubsetNotSelectPods",
    Level.ERROR,
    "The Subset %s defined in the DestinationRule does not select any pods. Which may lead to 503 UH "
    "(NoHealthyUpstream).",
)
MESSAGE_TYPES = (
    REFERENCED_RESOURCE_NOT_FOUND,
    NAMESPACE_NOT_INJECTED,
    POD_MISSING_PROXY,
    SCHEMA_VALIDATION_ERROR,
    UNKNOWN_ANNOTATION,
    PORT_NAME_NOT_UNDER_NAMING_CONVENTION,
    NAMESPACE_MULTIPLE_INJECTION_LABELS,
    DESTINATION_RULE_SUBSET_NOT_SELECT_PODS,
)
DOCS = "https://istio.io/latest/docs/reference/config/analysis"


def _go_quote(value: object) -> str:
    """Go's %q of a string: double quotes, backslash and double quote escaped."""
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass(frozen=True)
class Message:
    type: MessageType
    kind: str
    namespace: str  # "" for cluster-scoped objects (a Namespace)
    name: str
    args: tuple[object, ...] = ()
    file: str = ""  # where the object came from, when from a file

    @property
    def text(self) -> str:
        template = self.type.template.replace("%q", "%s")
        args = tuple(_go_quote(a) if spec == "%q" else a for a, spec in zip(self.args, _specs(self.type.template)))
        return template % args

    @property
    def origin(self) -> str:
        """istioctl's ``<Kind> [<namespace>/]<name>``."""
        return f"{self.kind} {self.namespace}/{self.name}" if self.namespace else f"{self.kind} {self.name}"

    @property
    def scope(self) -> str:
        """The namespace the message belongs to (a Namespace's own name for a Namespace)."""
        return self.name if self.kind == "Namespace" else self.namespace

    def __str__(self) -> str:
        where = f" {self.file}" if self.file else ""
        return f"{self.type.level.value} [{self.type.code}] ({self.origin}{where}) {self.text}"

    def as_dict(self) -> dict:
        """istioctl's ``-o json``/``-o yaml`` entry."""
        out = {"code": self.type.code, "level": self.type.level.value, "origin": self.origin}
        if self.file:
            out["reference"] = self.file
        out["message"] = self.text
        out["documentationUrl"] = f"{DOCS}/{self.type.code.lower()}/?ref=plait-analyze"
        return out

    def sort_key(self) -> tuple:
        """Istio's order: level, code, object (kind/name/namespace), then text."""
        return (self.type.level.rank, self.type.code, f"{self.kind}/{self.name}/{self.namespace}", str(self))


def _specs(template: str) -> list[str]:
    """The conversion specifiers of `template`, in order (%% excluded)."""
    out, i = [], 0
    while i < len(template) - 1:
        if template[i] == "%":
            if template[i + 1] != "%":
                out.append(template[i : i + 2])
            i += 2
        else:
            i += 1
    return out


def sorted_unique(messages: list[Message]) -> list[Message]:
    """Sorted as istioctl sorts them, duplicates (same printed line) dropped."""
    out: list[Message] = []
    for m in sorted(messages, key=Message.sort_key):
        if not out or str(out[-1]) != str(m):
            out.append(m)
    return out
