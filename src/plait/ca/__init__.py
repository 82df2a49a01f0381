"""plait's certificate authority: SPIFFE workload certificates for the mesh.

Flows in: CSRs from agents (`client.request_certificate` → gRPC ``IstioCertificateService/
CreateCertificate`` on port 15012, TLS), each with a pod token (`tokens`) saying which
namespace/service account the caller is. Flows out: certificate chains (leaf with the URI SAN
``spiffe://<trust domain>/ns/<ns>/sa/<sa>``, intermediates, root last), the root
(``<state dir>/ca/root-cert.pem``) for everyone who verifies, and the ADS authenticator used
with ``--xds-auth strict`` (`service.ads_authenticator`).

Modules: `authority` (the CA's key and chain, CSR checks and signing — pure, plus loading and
creating the files), `tokens` (pod tokens: issue and verify, HS256; the `Authenticator`
protocol), `wire` (Istio's CA messages, built without protoc), `service` (the gRPC server),
`client` (key + CSR, the call). On Kubernetes: `kubeauth` (callers proved by TokenReview of
their service-account token) and `kubesecrets` (the CA's key from Secret ``cacerts`` or
``istio-ca-secret``, created once for all replicas).

State: the `CertificateAuthority` (loaded once by the control plane; its key file is 0600 in a
0700 directory, or stays in the plug-in ``--cacerts`` directory) and the token signing key
(``<state dir>/ca/token-signing.key``, shared by the runtime that issues tokens and the control
plane that verifies them). Nothing is written after start-up except the root, once.

Blocking: loading or generating the CA and signing are synchronous and short (milliseconds);
the server and the client are grpc.aio and run on the caller's event loop.
"""
