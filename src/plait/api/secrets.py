"""The core v1 `Secret` kind, as far as the mesh reads it: TLS credentials that a Gateway server's or a
DestinationRule's ``credentialName`` names.

A Secret has no ``spec``: its ``type``, ``data`` (base64) and ``stringData`` (plain text) sit at the top
level of the document (the loader hands them to `SecretSpec`). The keys Istio reads are Kubernetes'
``tls.crt`` / ``tls.key`` / ``ca.crt`` and Istio's generic ``cert`` / ``key`` / ``cacert``.
"""

from __future__ import annotations

import base64
import binascii

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

TLS_SECRET_TYPE = "kubernetes.io/tls"
CERT_KEYS = (("tls.crt", "tls.key"), ("cert", "key"))  # Kubernetes' TLS keys, then Istio's generic ones
CA_KEYS = ("ca.crt", "cacert")


class SecretSpec(BaseModel):
    """``type``, ``data`` and ``stringData`` of a Secret (``stringData`` wins over ``data``, as in Kubernetes)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    type: str = "Opaque"
    data: dict[str, str] = {}
    string_data: dict[str, str] = Field(default={}, alias="stringData")
    immutable: bool | None = None

    @field_validator("data")
    @classmethod
    def _base64(cls, data: dict[str, str]) -> dict[str, str]:
        for key, value in data.items():
            try:
                base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError):
                raise ValueError(f"data[{key!r}] is not base64; put plain text under stringData instead") from None
        return data

    @model_validator(mode="after")
    def _tls_keys(self) -> "SecretSpec":
        if self.type == TLS_SECRET_TYPE and not {"tls.crt", "tls.key"} <= self.values().keys():
            raise ValueError(f"a Secret of type {TLS_SECRET_TYPE} needs the keys tls.crt and tls.key")
        return self

    def values(self) -> dict[str, bytes]:
        """Every key, decoded."""
        out = {key: base64.b64decode(value) for key, value in self.data.items()}
        out.update((key, value.encode()) for key, value in self.string_data.items())
        return out

    def certificate_and_key(self) -> tuple[bytes, bytes] | None:
        """The certificate chain and private key (``tls.crt``/``tls.key``, else ``cert``/``key``)."""
        values = self.values()
        for cert, key in CERT_KEYS:
            if cert in values and key in values:
                return values[cert], values[key]
        return None

    def ca_certificate(self) -> bytes | None:
        """The CA bundle that verifies peers (``ca.crt``, else ``cacert``)."""
        values = self.values()
        return next((values[k] for k in CA_KEYS if k in values), None)
