"""Field types shared by the Istio kinds: durations, string matches, percentages."""

from __future__ import annotations

import re
from typing import Annotated

import re2
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel


class IstioModel(BaseModel):
    """Strict model with Istio's camelCase field names; unknown fields are errors."""

    model_config = ConfigDict(
        extra="forbid",
        alias_generator=to_camel,
        populate_by_name=True,
        frozen=True,
        strict=False,
    )


_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """Seconds in a Go/protobuf duration string such as ``1.5s``, ``100ms`` or ``1h30m``."""
    if not isinstance(text, str) or not text:
        raise ValueError("expected a duration such as '10s', '250ms' or '1m'")
    pos, total = 0, 0.0
    for m in _DURATION_PART.finditer(text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
        pos = m.end()
    if pos != len(text):
        raise ValueError(f"{text!r} is not a duration; expected a number with a unit, e.g. '10s', '250ms', '1m'")
    return total


def _check_duration(text: object) -> str:
    if not isinstance(text, str):
        raise ValueError(f"expected a duration string such as '5s' or '250ms' (got {text!r})")
    seconds = parse_duration(text)
    if 0 < seconds < 0.001:
        raise ValueError(f"duration {text!r} is shorter than the 1ms minimum")
    return text


Duration = Annotated[str, BeforeValidator(_check_duration)]

_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False


def check_re2(pattern: str) -> str:
    """Reject a regex that Envoy's RE2 engine would reject (look-arounds, backreferences…)."""
    try:
        re2.compile(pattern, _RE2_OPTIONS)
    except re2.error as exc:
        detail = exc.args[0].decode() if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        raise ValueError(f"regex {pattern!r} is not valid RE2 syntax: {detail}") from None
    return pattern


Regex = Annotated[str, AfterValidator(check_re2)]


class StringMatch(IstioModel):
    exact: str | None = None
    prefix: str | None = None
    regex: Regex | None = None

    @model_validator(mode="after")
    def _one_of(self) -> "StringMatch":
        set_ = [k for k in ("exact", "prefix", "regex") if getattr(self, k) is not None]
        if len(set_) > 1:
            raise ValueError(f"set only one of exact, prefix, regex (got {', '.join(set_)})")
        return self

    @property
    def kind(self) -> str:
        for k in ("exact", "prefix", "regex"):
            if getattr(self, k) is not None:
                return k
        return "present"

    @property
    def value(self) -> str:
        return getattr(self, self.kind, "") or ""


class Percent(IstioModel):
    value: float = Field(ge=0, le=100)


class PortSelector(IstioModel):
    number: int = Field(ge=1, le=65535)


Labels = dict[str, str]
