"""RequestAuthentication → jwt_authn: the translation, its simulation, and a real Envoy judging real tokens.

Tokens are minted here with `cryptography` (RS256 and ES256) and checked three ways: the
filter config as generated, the simulation's verdict, and Envoy's answer (200/401/403) on an
inbound listener generated for a workload in explicit-proxy mode, with inline keys and with a
jwksUri served over loopback.
"""

from __future__ import annotations

import base64
import contextlib
import json
import time
from dataclasses import replace

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from plait.api import load_text
from plait.model import MeshSnapshot, Proxy
from plait.testing.backends import FixedHttpServer, HttpBackend, loopback_subnet, service_yaml
from plait.testing.envoy import run_envoy
from plait.testing.http import http_request
from plait.xds.generator import generate
from plait.xds.resources import ResourceSet
from plait.xds.simulate import Request, simulate_mesh
from plait.xds.simulate.jwt import authenticate
from plait.xds.static import envoy_validate, static_bootstrap
from plait.xds.translate import jwt

ISSUER = "https://issuer.example.com"


# ------------------------------------------------------------------ tokens


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def int_b64(number: int, length: int | None = None) -> str:
    return b64(number.to_bytes(length or (number.bit_length() + 7) // 8, "big"))


class Signer:
    """A key pair that signs compact JWTs and publishes its public key as a JWKS."""

    def __init__(self, alg: str = "RS256", kid: str = "key-1"):
        self.alg, self.kid = alg, kid
        self.key = rsa.generate_private_key(65537, 2048) if alg == "RS256" else ec.generate_private_key(ec.SECP256R1())

    def jwk(self) -> dict:
        numbers = self.key.public_key().public_numbers()
        if self.alg == "RS256":
            return {"kty": "RSA", "alg": "RS256", "kid": self.kid, "n": int_b64(numbers.n), "e": int_b64(numbers.e)}
        return {
            "kty": "EC",
            "alg": "ES256",
            "crv": "P-256",
            "kid": self.kid,
            "x": int_b64(numbers.x, 32),
            "y": int_b64(numbers.y, 32),
        }

    def jwks(self) -> str:
        return json.dumps({"keys": [self.jwk()]})

    def token(self, **claims) -> str:
        now = int(time.time())
        payload = {"iss": ISSUER, "sub": "alice", "iat": now, "exp": now + 600, **claims}
        header = {"alg": self.alg, "kid": self.kid, "typ": "JWT"}
        message = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}".encode()
        if self.alg == "RS256":
            signature = self.key.sign(message, padding.PKCS1v15(), hashes.SHA256())
        else:
            r, s = decode_dss_signature(self.key.sign(message, ec.ECDSA(hashes.SHA256())))
            signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")
        return f"{message.decode()}.{b64(signature)}"


@pytest.fixture(scope="module")
def signer() -> Signer:
    return Signer()


@pytest.fixture(scope="module")
def other_signer() -> Signer:
    return Signer(kid="key-1")  # same kid, another key: its tokens carry a bad signature


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


# ------------------------------------------------------------------ configuration


WORKLOAD = """
apiVersion: v1
kind: Service
metadata: {{name: api, namespace: default}}
spec:
  selector: {{app: api}}
  ports: [{{name: http, port: 8080}}]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: api-v1, namespace: default}}
spec: {{address: {address}, labels: {{app: api}}, serviceAccount: api, ports: {{http: 8080}}}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: client, namespace: default}}
spec: {{address: {client}, labels: {{app: client}}, serviceAccount: client}}
"""


def request_authentication(rules: list[dict], name: str = "jwt", selector: dict | None = None) -> str:
    spec: dict = {"jwtRules": rules}
    if selector is not None:
        spec["selector"] = {"matchLabels": selector}
    return json.dumps(
        {
            "apiVersion": "security.istio.io/v1",
            "kind": "RequestAuthentication",
            "metadata": {"name": name, "namespace": "default"},
            "spec": spec,
        }
    )


REQUIRE_TOKEN = json.dumps(
    {
        "apiVersion": "security.istio.io/v1",
        "kind": "AuthorizationPolicy",
        "metadata": {"name": "require-jwt", "namespace": "default"},
        "spec": {
            "selector": {"matchLabels": {"app": "api"}},
            "rules": [{"from": [{"source": {"requestPrincipals": ["*"]}}]}],
        },
    }
)


REQUIRED_RULE = "ns[default]-policy[require-jwt]-rule[0]"


def snapshot_of(*documents: str, address: str = "10.0.0.2", client: str = "10.0.0.9") -> MeshSnapshot:
    text = "\n---\n".join([WORKLOAD.format(address=address, client=client), *documents])
    return MeshSnapshot(load_text(text).raise_for_errors())


def workload(snapshot: MeshSnapshot, name: str = "api-v1", mode: str = "capture") -> Proxy:
    return Proxy.from_workload_entry(snapshot.workload(name), mode=mode)  # type: ignore[arg-type]


def jwt_filter(snapshot: MeshSnapshot) -> dict:
    found = jwt.jwt_authn_filter(snapshot, workload(snapshot))
    assert found is not None
    return found["typed_config"]


# ------------------------------------------------------------------ translation


def test_one_rule_is_one_provider_and_a_missing_token_is_allowed(signer: Signer) -> None:
    config = jwt_filter(snapshot_of(request_authentication([{"issuer": ISSUER, "jwks": signer.jwks()}])))
    name = "ns[default]-requestauthentication[jwt]-rule[0]"
    provider = config["providers"][name]
    assert provider["issuer"] == ISSUER and provider["local_jwks"] == {"inline_string": signer.jwks()}
    assert provider["payload_in_metadata"] == "payload"
    assert provider["normalize_payload_in_metadata"] == {"space_delimited_claims": ["permission", "scope"]}
    assert "from_headers" not in provider and "forward" not in provider  # Envoy's default: Authorization: Bearer
    assert config["rules"] == [
        {
            "match": {"prefix": "/"},
            "requires": {"requires_any": {"requirements": [{"provider_name": name}, {"allow_missing": {}}]}},
        }
    ]
    assert config["bypass_cors_preflight"] is True


def test_several_rules_accept_any_provider_or_no_token(signer: Signer) -> None:
    config = jwt_filter(
        snapshot_of(
            request_authentication(
                [{"issuer": ISSUER, "jwks": signer.jwks()}, {"issuer": "other", "jwks": signer.jwks()}]
            )
        )
    )
    first, second = config["providers"]
    requirements = config["rules"][0]["requires"]["requires_any"]["requirements"]
    assert requirements[:2] == [{"provider_name": first}, {"provider_name": second}]
    assert requirements[2] == {
        "requires_all": {
            "requirements": [
                {"requires_any": {"requirements": [{"provider_name": first}, {"allow_missing": {}}]}},
                {"requires_any": {"requirements": [{"provider_name": second}, {"allow_missing": {}}]}},
            ]
        }
    }


def test_token_locations_and_outputs(signer: Signer) -> None:
    config = jwt_filter(
        snapshot_of(
            request_authentication(
                [
                    {
                        "issuer": ISSUER,
                        "jwks": signer.jwks(),
                        "audiences": ["api", "web"],
                        "fromHeaders": [{"name": "x-jwt", "prefix": "Token "}, {"name": "x-raw"}],
                        "fromParams": ["token"],
                        "fromCookies": ["session"],
                        "forwardOriginalToken": True,
                        "outputPayloadToHeader": "x-jwt-payload",
                        "outputClaimToHeaders": [{"header": "x-sub", "claim": "sub"}],
                    }
                ]
            )
        )
    )
    provider = next(iter(config["providers"].values()))
    assert provider["audiences"] == ["api", "web"]
    assert provider["from_headers"] == [{"name": "x-jwt", "value_prefix": "Token "}, {"name": "x-raw"}]
    assert provider["from_params"] == ["token"] and provider["from_cookies"] == ["session"]
    assert provider["forward"] is True and provider["forward_payload_header"] == "x-jwt-payload"
    assert provider["claim_to_headers"] == [{"header_name": "x-sub", "claim_name": "sub"}]


def test_space_delimited_claims_add_to_istios_defaults_and_are_split_in_metadata(signer: Signer) -> None:
    snapshot = snapshot_of(
        request_authentication([{"issuer": ISSUER, "jwks": signer.jwks(), "spaceDelimitedClaims": ["roles", "scope"]}])
    )
    config = jwt_filter(snapshot)
    provider = next(iter(config["providers"].values()))
    assert provider["normalize_payload_in_metadata"] == {"space_delimited_claims": ["permission", "roles", "scope"]}
    assert "clear_route_cache" not in provider  # a sidecar's jwt_authn is inbound: no claim routes to re-match
    request = Request.from_url("http://api:8080/", headers=bearer(signer.token(roles="a b", team="x y")))
    payload = authenticate(config, request, time.time()).metadata["payload"]
    assert (payload["roles"], payload["team"]) == (["a", "b"], "x y")


def test_jwks_uri_is_fetched_by_envoy_through_its_own_cluster() -> None:
    snapshot = snapshot_of(
        request_authentication(
            [
                {"issuer": ISSUER, "jwksUri": "https://login.example.com/keys.json", "timeout": "2s"},
                {"issuer": "b", "jwksUri": "https://login.example.com/other.json"},
                {"issuer": "c", "jwksUri": "http://127.0.0.1:8081/jwks"},
            ]
        )
    )
    provider = jwt_filter(snapshot)["providers"]["ns[default]-requestauthentication[jwt]-rule[0]"]
    assert provider["remote_jwks"] == {
        "http_uri": {
            "uri": "https://login.example.com/keys.json",
            "cluster": "outbound|443||login.example.com",
            "timeout": "2s",
        },
        "cache_duration": "300s",
    }
    clusters = {c["name"]: c for c in jwt.jwks_clusters(snapshot, workload(snapshot))}
    assert sorted(clusters) == ["outbound|443||login.example.com", "outbound|8081||127.0.0.1"]
    https = clusters["outbound|443||login.example.com"]
    assert https["type"] == "STRICT_DNS"
    tls = https["transport_socket"]["typed_config"]
    assert tls["sni"] == "login.example.com"
    assert tls["common_tls_context"]["validation_context"] == {
        "trusted_ca": {"filename": "/etc/ssl/certs/ca-certificates.crt"},
        "match_typed_subject_alt_names": [{"san_type": "DNS", "matcher": {"exact": "login.example.com"}}],
    }
    plain = clusters["outbound|8081||127.0.0.1"]
    assert plain["type"] == "STATIC" and "transport_socket" not in plain


def test_a_jwks_uri_on_a_mesh_service_uses_its_outbound_cluster() -> None:
    snapshot = snapshot_of(
        request_authentication([{"issuer": ISSUER, "jwksUri": "http://api.default.svc.cluster.local:8080/jwks"}])
    )
    proxy = workload(snapshot, "client")
    assert jwt.jwks_clusters(snapshot, proxy) == []
    assert "outbound|8080||api.default.svc.cluster.local" in generate(snapshot, proxy).clusters


def test_only_the_selected_workloads_get_the_filter(signer: Signer) -> None:
    snapshot = snapshot_of(request_authentication([{"issuer": ISSUER, "jwks": signer.jwks()}], selector={"app": "api"}))
    assert jwt.jwt_authn_filter(snapshot, workload(snapshot)) is not None
    assert jwt.jwt_authn_filter(snapshot, workload(snapshot, "client")) is None
    assert jwt.jwks_clusters(snapshot, workload(snapshot, "client")) == []


def test_generated_jwt_config_is_valid_envoy_config(signer: Signer) -> None:
    es = Signer("ES256")
    snapshot = snapshot_of(
        request_authentication(
            [
                {
                    "issuer": ISSUER,
                    "jwks": signer.jwks(),
                    "audiences": ["api"],
                    "fromHeaders": [{"name": "x-jwt"}],
                    "fromParams": ["t"],
                    "fromCookies": ["c"],
                    "outputClaimToHeaders": [{"header": "x-sub", "claim": "sub"}],
                    "outputPayloadToHeader": "x-payload",
                    "forwardOriginalToken": True,
                },
                {"issuer": "es", "jwks": es.jwks()},
                {"issuer": "remote", "jwksUri": "https://login.example.com/keys.json"},
            ]
        ),
        REQUIRE_TOKEN,
    )
    resources = generate(snapshot, workload(snapshot))
    listener = resources.listeners["virtualInbound"]
    names = [
        f["name"]
        for c in listener["filter_chains"]
        if "http_filters" in c["filters"][0]["typed_config"]
        for f in c["filters"][0]["typed_config"]["http_filters"]
    ]
    assert names[:2] == ["envoy.filters.http.jwt_authn", "envoy.filters.http.rbac"]
    verdict = envoy_validate(static_bootstrap(resources))
    assert verdict.ok, verdict.output


# ------------------------------------------------------------------ simulation of the filter


def provider_config(signer: Signer, **rule) -> dict:
    return jwt_filter(snapshot_of(request_authentication([{"issuer": ISSUER, "jwks": signer.jwks(), **rule}])))


def judge(config: dict, headers=(), url: str = "http://api:8080/", now: float | None = None):
    return authenticate(config, Request.from_url(url, headers=headers), time.time() if now is None else now)


def test_a_valid_token_is_accepted_and_its_payload_goes_to_metadata(signer: Signer) -> None:
    outcome = judge(provider_config(signer), bearer(signer.token(scope="read write", aud="api")))
    assert outcome.status is None and outcome.reason == f"token from issuer {ISSUER} accepted"
    assert outcome.metadata["payload"]["sub"] == "alice"
    assert outcome.metadata["payload"]["scope"] == ["read", "write"]  # space-delimited claims become lists
    assert "verified against the inline jwks" in outcome.checks[0].notes[0]


@pytest.mark.parametrize(
    ("claims", "error"),
    [
        ({"exp": int(time.time()) - 3600}, "Jwt is expired"),
        ({"nbf": int(time.time()) + 3600}, "Jwt not yet valid"),
        ({"iss": "https://somebody.else"}, "Jwt issuer is not configured"),
    ],
)
def test_invalid_tokens_get_401(signer: Signer, claims: dict, error: str) -> None:
    outcome = judge(provider_config(signer), bearer(signer.token(**claims)))
    assert (outcome.status, outcome.reason) == (401, error)


def test_a_bad_signature_or_a_malformed_token_gets_401(signer: Signer, other_signer: Signer) -> None:
    config = provider_config(signer)
    assert judge(config, bearer(other_signer.token())).reason == "Jwt verification fails"
    assert judge(config, bearer("not-a-token")).status == 401


def test_audiences_must_match_when_listed(signer: Signer) -> None:
    config = provider_config(signer, audiences=["api"])
    assert judge(config, bearer(signer.token(aud=["web", "api"]))).status is None
    assert judge(config, bearer(signer.token(aud="web"))).reason == "Audiences in Jwt are not allowed"


def test_a_missing_token_goes_on_unauthenticated(signer: Signer) -> None:
    outcome = judge(provider_config(signer))
    assert outcome.status is None and outcome.metadata == {} and outcome.checks[0].missing


def test_tokens_are_found_where_the_rule_says(signer: Signer) -> None:
    config = provider_config(
        signer, fromHeaders=[{"name": "x-jwt", "prefix": "Token "}], fromParams=["t"], fromCookies=["session"]
    )
    token = signer.token()
    assert judge(config, [("x-jwt", f"Token {token}")]).checks[0].token.where == "header x-jwt"
    assert judge(config, url=f"http://api:8080/?t={token}").checks[0].token.where == "query parameter t"
    assert judge(config, [("cookie", f"a=b; session={token}")]).checks[0].token.where == "cookie session"
    assert judge(config, bearer(token)).checks[0].missing  # Authorization is no longer looked at


def test_es256_tokens_are_verified() -> None:
    es = Signer("ES256")
    assert judge(provider_config(es), bearer(es.token())).status is None
    assert judge(provider_config(es), bearer(Signer("ES256").token())).reason == "Jwt verification fails"


def test_remote_keys_are_not_fetched_by_the_simulation(signer: Signer) -> None:
    config = jwt_filter(snapshot_of(request_authentication([{"issuer": ISSUER, "jwksUri": "https://k.example/jwks"}])))
    outcome = judge(config, bearer(signer.token()))
    assert outcome.status is None
    assert not outcome.checks[0].signature_checked
    assert outcome.checks[0].notes == [
        "its signature is not checked here: Envoy verifies it against the keys at https://k.example/jwks"
    ]


# ------------------------------------------------------------------ simulation through the mesh


def simulate_from_client(snapshot: MeshSnapshot, headers=()):
    client = workload(snapshot, "client")
    return simulate_mesh(snapshot, client, Request.from_url("http://api:8080/data", headers=headers), now=time.time())


def test_simulation_missing_token_is_403_only_when_a_policy_requires_one(signer: Signer) -> None:
    ra = request_authentication([{"issuer": ISSUER, "jwks": signer.jwks()}], selector={"app": "api"})
    free = simulate_from_client(snapshot_of(ra))
    assert not free.failed
    assert (
        free.authorization[0]
        .jwt_lines[0]
        .startswith("no token: allowed by RequestAuthentication default/jwt (allow missing")
    )
    required = simulate_from_client(snapshot_of(ra, REQUIRE_TOKEN))
    assert required.status == 403
    auth = required.authorization[0]
    assert auth.summary == "DENIED: no ALLOW policy matched (policies in force: default/require-jwt)"
    assert auth.details == [
        "default/require-jwt rules[0]: from[0].source.requestPrincipals did not match no verified token"
    ]


def test_simulation_valid_token_matches_request_principals(signer: Signer) -> None:
    ra = request_authentication([{"issuer": ISSUER, "jwks": signer.jwks()}])
    outcome = simulate_from_client(snapshot_of(ra, REQUIRE_TOKEN), bearer(signer.token()))
    assert not outcome.failed
    auth = outcome.authorization[0]
    assert auth.summary == (
        f"ALLOWED by default/require-jwt rules[0] (from[0].source.requestPrincipals matched {ISSUER}/alice)"
    )
    assert auth.jwt_lines[0].startswith(
        "RequestAuthentication default/jwt jwtRules[0]: token from issuer "
        f"{ISSUER} ({ISSUER}/alice) in the header authorization, accepted"
    )


def test_simulation_bad_token_is_401_at_the_destination(signer: Signer, other_signer: Signer) -> None:
    ra = request_authentication([{"issuer": ISSUER, "jwks": signer.jwks()}])
    outcome = simulate_from_client(snapshot_of(ra), bearer(other_signer.token()))
    assert outcome.status == 401
    assert outcome.authorization[0].summary == "UNAUTHENTICATED: 401 Jwt verification fails"


def test_simulation_checks_claims_in_when_conditions(signer: Signer) -> None:
    policy = json.dumps(
        {
            "apiVersion": "security.istio.io/v1",
            "kind": "AuthorizationPolicy",
            "metadata": {"name": "admins", "namespace": "default"},
            "spec": {
                "rules": [
                    {
                        "when": [
                            {"key": "request.auth.claims[groups]", "values": ["admin"]},
                            {"key": "request.auth.claims[org][team]", "values": ["core"]},
                        ]
                    }
                ]
            },
        }
    )
    snapshot = snapshot_of(request_authentication([{"issuer": ISSUER, "jwks": signer.jwks()}]), policy)
    admin = simulate_from_client(snapshot, bearer(signer.token(groups=["dev", "admin"], org={"team": "core"})))
    assert not admin.failed
    assert "when[0] request.auth.claims[groups] matched ['dev', 'admin']" in admin.authorization[0].summary
    other = simulate_from_client(snapshot, bearer(signer.token(groups=["dev"], org={"team": "core"})))
    assert other.status == 403
    assert other.authorization[0].details == [
        "default/admins rules[0]: when[0] request.auth.claims[groups] did not match ['dev']"
    ]


# ------------------------------------------------------------------ a real Envoy


@contextlib.contextmanager
def inbound_envoy(net: str, tmp_path, *documents: str):
    """The workload api-v1 at <net>.2:8080 in explicit-proxy mode, its app a backend at <net>.3:8080."""
    snapshot = snapshot_of(*documents, address=f"{net}.2", client=f"{net}.9")
    proxy = replace(workload(snapshot, mode="proxy"), app_address=f"{net}.3")
    resources: ResourceSet = generate(snapshot, proxy)
    with (
        HttpBackend("api", f"{net}.3", 8080) as backend,
        run_envoy(static_bootstrap(resources), workdir=tmp_path) as envoy,
    ):
        yield snapshot, backend, envoy


def get(net: str, headers: dict[str, str] | None = None, path: str = "/data") -> int:
    return http_request(f"{net}.2", 8080, path, headers).status


def simulated_status(snapshot: MeshSnapshot, headers: dict[str, str]) -> int:
    client = workload(snapshot, "client", mode="proxy")
    outcome = simulate_mesh(
        snapshot, client, Request.from_url("http://api:8080/data", headers=list(headers.items())), now=time.time()
    )
    return outcome.status or 200


def test_envoy_judges_tokens_as_the_translation_and_the_simulation_say(
    tmp_path, signer: Signer, other_signer: Signer
) -> None:
    ra = request_authentication(
        [{"issuer": ISSUER, "jwks": signer.jwks(), "outputClaimToHeaders": [{"header": "x-jwt-sub", "claim": "sub"}]}]
    )
    two = request_authentication(
        [{"issuer": "https://other.example", "jwks": other_signer.jwks()}, {"issuer": ISSUER, "jwks": signer.jwks()}],
        name="two",
    )
    valid = {"authorization": f"Bearer {signer.token()}"}
    cases = [  # (policies, headers, status)
        ((ra,), valid, 200),
        ((ra,), {"authorization": f"Bearer {other_signer.token()}"}, 401),
        ((ra,), {"authorization": f"Bearer {signer.token(exp=int(time.time()) - 3600)}"}, 401),
        ((ra,), {"authorization": f"Bearer {signer.token(iss='https://somebody.else')}"}, 401),
        ((ra,), {"authorization": "Bearer not-a-token"}, 401),
        ((ra,), {}, 200),  # no token, no policy asking for one
        ((ra, REQUIRE_TOKEN), {}, 403),
        ((ra, REQUIRE_TOKEN), valid, 200),
        ((two,), valid, 200),  # two providers reading the same header: either issuer's token passes
        ((two,), {"authorization": f"Bearer {other_signer.token(iss='https://other.example')}"}, 200),
        ((two,), {"authorization": f"Bearer {other_signer.token()}"}, 401),
        ((two,), {}, 200),
    ]
    for index, documents in enumerate(dict.fromkeys(c[0] for c in cases)):
        with (
            loopback_subnet() as net,
            inbound_envoy(net, tmp_path / f"envoy-{index}", *documents) as (snapshot, backend, envoy),
        ):
            for headers, expected in [(h, s) for d, h, s in cases if d == documents]:
                assert (get(net, headers), simulated_status(snapshot, headers)) == (expected, expected), headers
            assert "authorization" not in backend.requests[0].headers  # forwardOriginalToken is off
            if ra in documents:
                assert backend.requests[0].headers["x-jwt-sub"] == "alice"  # the claim, as a header
            if REQUIRE_TOKEN in documents:
                stats = envoy.stats(r"\.rbac\.allow\.")  # per filter, and per rule under the policy's name
                assert stats["http.inbound_0.0.0.0_8080.rbac.allow.denied"] == 1
                assert stats[f"http.inbound_0.0.0.0_8080.rbac.allow.policy.{REQUIRED_RULE}.allowed"] == 1


def test_envoy_fetches_a_jwks_uri_through_the_generated_cluster(tmp_path, signer: Signer, other_signer: Signer) -> None:
    with loopback_subnet() as net, FixedHttpServer(signer.jwks(), "application/json", f"{net}.4") as keys:
        ra = request_authentication([{"issuer": ISSUER, "jwksUri": f"http://{keys.address}:{keys.port}/jwks.json"}])
        with inbound_envoy(net, tmp_path, ra, REQUIRE_TOKEN):
            assert get(net, {"authorization": f"Bearer {signer.token()}"}) == 200
            assert get(net, {"authorization": f"Bearer {other_signer.token()}"}) == 401
            assert get(net) == 403
        assert keys.paths and set(keys.paths) == {"/jwks.json"}


# ------------------------------------------------------------------ routing on claims (gateways)


CLAIM_ROUTING = """
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: httpbin-gateway, namespace: default}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: 80, name: http, protocol: HTTP}}
    bind: {net}.1
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: httpbin, namespace: default}}
spec:
  host: httpbin
  subsets: [{{name: v1, labels: {{version: v1}}}}, {{name: v2, labels: {{version: v2}}}},
            {{name: v3, labels: {{version: v3}}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: httpbin, namespace: default}}
spec:
  hosts: ["*"]
  gateways: [httpbin-gateway]
  http:
  - match:
    - uri: {{prefix: /headers}}
      headers: {{"@request.auth.claims.groups": {{exact: group1}}}}
    route: [{{destination: {{host: httpbin, port: {{number: 8000}}, subset: v2}}}}]
  - match:
    - headers: {{"@request.auth.claims[nested][key]": {{prefix: val}}}}
      withoutHeaders: {{"@request.auth.claims.blocked": {{}}}}
    route: [{{destination: {{host: httpbin, port: {{number: 8000}}, subset: v3}}}}]
  - route: [{{destination: {{host: httpbin, port: {{number: 8000}}, subset: v1}}}}]
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {{name: ingress-jwt, namespace: istio-system}}
spec:
  selector: {{matchLabels: {{istio: ingressgateway}}}}
  jwtRules: [{{issuer: "{issuer}", jwks: '{jwks}'}}]
"""


def claim_routing_mesh(net: str, signer: Signer, backends: dict[str, HttpBackend]) -> MeshSnapshot:
    text = "\n---\n".join(
        [CLAIM_ROUTING.format(net=net, issuer=ISSUER, jwks=signer.jwks()), service_yaml("httpbin", 8000, backends)]
    )
    return MeshSnapshot(load_text(text).raise_for_errors())


def ingress_gateway(net: str) -> Proxy:
    return Proxy(
        kind="router",
        ip=f"{net}.1",
        name="istio-ingressgateway",
        namespace="istio-system",
        labels={"istio": "ingressgateway"},
    )


def test_claim_matches_are_metadata_matchers_on_the_verified_payload(signer: Signer) -> None:
    snapshot = claim_routing_mesh("127.0.0", signer, {})
    gateway = ingress_gateway("127.0.0")
    providers = jwt.jwt_authn_filter(snapshot, gateway)["typed_config"]["providers"]
    assert [p["clear_route_cache"] for p in providers.values()] == [True]  # the route is chosen again
    route = generate(snapshot, gateway).routes["http.80"]["virtual_hosts"][0]["routes"][0]
    value = {"string_match": {"exact": "group1"}}
    assert route["match"]["dynamic_metadata"] == [
        {
            "filter": "envoy.filters.http.jwt_authn",
            "path": [{"key": "payload"}, {"key": "groups"}],
            "value": {"or_match": {"value_matchers": [{"list_match": {"one_of": value}}, value]}},
        }
    ]
    assert "headers" not in route["match"]


def test_envoy_routes_on_claims_at_the_gateway_as_simulated(tmp_path, signer: Signer, other_signer: Signer) -> None:
    cases = [  # (claims, token signer, expected backend or status)
        ({"groups": ["group2", "group1"]}, signer, "v2"),  # a list holding the value
        ({"groups": "group1"}, signer, "v2"),  # the value itself
        ({"groups": ["group2"]}, signer, "v1"),
        ({"nested": {"key": "value"}}, signer, "v3"),  # a nested claim, by prefix
        ({"nested": {"key": "value"}, "blocked": True}, signer, "v1"),  # withoutHeaders: the claim is present
        ({"nested": {"key": "other"}}, signer, "v1"),
        (None, signer, "v1"),  # no token: no claims
        ({"groups": "group1"}, other_signer, 401),  # a bad signature is refused before routing
    ]
    with loopback_subnet() as net, contextlib.ExitStack() as stack:
        backends = {
            v: stack.enter_context(HttpBackend(f"httpbin-{v}", f"{net}.{i}", 8000))
            for i, v in ((11, "v1"), (12, "v2"), (13, "v3"))
        }
        snapshot, gateway = claim_routing_mesh(net, signer, backends), ingress_gateway(net)
        stack.enter_context(run_envoy(static_bootstrap(generate(snapshot, gateway)), workdir=tmp_path))
        for claims, issuer_key, expected in cases:
            headers = {"host": "httpbin.example.com"}
            if claims is not None:
                headers["authorization"] = f"Bearer {issuer_key.token(**claims)}"
            reply = http_request(f"{net}.1", 80, "/headers", headers)
            outcome = simulate_mesh(
                snapshot,
                gateway,
                Request.from_url("http://httpbin.example.com/headers", headers=list(headers.items())),
                now=time.time(),
            )
            got = reply.status if isinstance(expected, int) else (reply.backend or "").removeprefix("httpbin-")
            simulated = outcome.status if isinstance(expected, int) else outcome.cluster_names[0].split("|")[2]
            assert (got, simulated) == (expected, expected), claims


@pytest.mark.parametrize("gateways", [[], ["httpbin-gateway", "mesh"]])
def test_claim_routing_on_sidecars_is_refused_as_istio_refuses_it(gateways: list[str]) -> None:
    vs = {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "httpbin"},
        "spec": {
            "hosts": ["httpbin"],
            "gateways": gateways,
            "http": [
                {
                    "match": [{"headers": {"@request.auth.claims.groups": {"exact": "group1"}}}],
                    "route": [{"destination": {"host": "httpbin"}}],
                }
            ],
        },
    }
    errors = load_text(json.dumps(vs)).errors
    assert len(errors) == 1 and "only supported for gateways" in str(errors[0])
