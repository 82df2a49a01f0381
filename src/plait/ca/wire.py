"""Istio's CA API on the wire, without protoc: the messages of istio.io/api
security/v1alpha1/ca.proto (package ``istio.v1.auth``) built at import from a FileDescriptorProto.

    message IstioCertificateRequest  { string csr = 1; int64 validity_duration = 3;   // seconds
                                       google.protobuf.Struct metadata = 4; }
    message IstioCertificateResponse { repeated string cert_chain = 1; }             // leaf first, root last
    service IstioCertificateService  { rpc CreateCertificate(IstioCertificateRequest)
                                           returns (IstioCertificateResponse); }

Field 2 (``subject_id``) was removed from Istio's proto; it is left out here too.
"""

from __future__ import annotations

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, struct_pb2

PACKAGE = "istio.v1.auth"
SERVICE = f"{PACKAGE}.IstioCertificateService"
METHOD = "CreateCertificate"
METHOD_PATH = f"/{SERVICE}/{METHOD}"
_FILE = "security/v1alpha1/ca.proto"

_F = descriptor_pb2.FieldDescriptorProto


def _file() -> descriptor_pb2.FileDescriptorProto:
    def field(name: str, number: int, kind: int, *, repeated: bool = False, type_name: str | None = None):
        return _F(
            name=name,
            number=number,
            type=kind,
            type_name=type_name,
            json_name=_camel(name),
            label=_F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL,
        )

    request = descriptor_pb2.DescriptorProto(
        name="IstioCertificateRequest",
        field=[
            field("csr", 1, _F.TYPE_STRING),
            field("validity_duration", 3, _F.TYPE_INT64),
            field("metadata", 4, _F.TYPE_MESSAGE, type_name=".google.protobuf.Struct"),
        ],
    )
    response = descriptor_pb2.DescriptorProto(
        name="IstioCertificateResponse",
        field=[
            field("cert_chain", 1, _F.TYPE_STRING, repeated=True),
        ],
    )
    service = descriptor_pb2.ServiceDescriptorProto(
        name="IstioCertificateService",
        method=[
            descriptor_pb2.MethodDescriptorProto(
                name=METHOD,
                input_type=f".{PACKAGE}.IstioCertificateRequest",
                output_type=f".{PACKAGE}.IstioCertificateResponse",
            )
        ],
    )
    return descriptor_pb2.FileDescriptorProto(
        name=_FILE,
        package=PACKAGE,
        syntax="proto3",
        dependency=[struct_pb2.DESCRIPTOR.name],
        message_type=[request, response],
        service=[service],
    )


def _camel(name: str) -> str:
    first, *rest = name.split("_")
    return first + "".join(w.title() for w in rest)


def _messages() -> tuple[type, type]:
    pool = descriptor_pool.Default()
    try:
        pool.FindFileByName(_FILE)
    except KeyError:
        pool.AddSerializedFile(_file().SerializeToString())
    return tuple(
        message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{PACKAGE}.{name}"))
        for name in ("IstioCertificateRequest", "IstioCertificateResponse")
    )


IstioCertificateRequest, IstioCertificateResponse = _messages()
