"""Istio's validation rules, one refused object each, with the path and words plait's message gives."""

from __future__ import annotations

import pytest

from plait.api import load_text

HEADS = {
    "VirtualService": "networking.istio.io/v1",
    "DestinationRule": "networking.istio.io/v1",
    "Gateway": "networking.istio.io/v1",
    "ServiceEntry": "networking.istio.io/v1",
    "WorkloadEntry": "networking.istio.io/v1",
    "Sidecar": "networking.istio.io/v1",
    "PeerAuthentication": "security.istio.io/v1",
    "AuthorizationPolicy": "security.istio.io/v1",
    "RequestAuthentication": "security.istio.io/v1",
}


def document(kind: str, spec: str) -> str:
    body = "\n".join("  " + line for line in spec.strip("\n").splitlines())
    return f"apiVersion: {HEADS[kind]}\nkind: {kind}\nmetadata: {{name: x, namespace: shop}}\nspec:\n{body}\n"


def errors(kind: str, spec: str):
    result = load_text(document(kind, spec), "rules.yaml")
    assert not result.resources or not result.errors
    return result.errors


ROUTE = "route: [{destination: {host: reviews}}]"

REFUSED = [
    # VirtualService
    ("VirtualService", "hosts: [reviews, reviews]\nhttp: [{%s}]" % ROUTE, "spec.hosts[1]", "duplicate hosts"),
    (
        "VirtualService",
        "hosts: ['*.example.com', 'a.example.com']\ngateways: [gw]\nhttp: [{%s}]" % ROUTE,
        "spec.hosts[1]",
        "overlap",
    ),
    ("VirtualService", "hosts: ['*']\nhttp: [{%s}]" % ROUTE, "spec.hosts[0]", "applies to the mesh"),
    ("VirtualService", "hosts: ['*']\ngateways: [gw, mesh]\nhttp: [{%s}]" % ROUTE, "spec.hosts[0]", "mesh"),
    (
        "VirtualService",
        "hosts: [a]\nhttp: [{route: [{destination: {host: '*'}}]}]",
        "spec.http[0].route[0].destination.host",
        "not a destination host",
    ),
    (
        "VirtualService",
        "hosts: [a]\nhttp: [{route: [{destination: {host: 'bad host!'}}]}]",
        "spec.http[0].route[0].destination.host",
        "not a valid host",
    ),
    (
        "VirtualService",
        "hosts: [a]\nhttp: [{mirror: {host: 'x..y'}, %s}]" % ROUTE,
        "spec.http[0].mirror.host",
        "not a valid host",
    ),
    (
        "VirtualService",
        "hosts: [a]\ntcp: [{route: [{destination: {host: '*'}}]}]",
        "spec.tcp[0].route[0].destination.host",
        "not a destination host",
    ),
    (
        "VirtualService",
        "hosts: [a]\nhttp: [{route: [{destination: {host: r, subset: V_1}}]}]",
        "spec.http[0].route[0].destination.subset",
        "DNS label",
    ),
    (
        "VirtualService",
        "hosts: [a]\nhttp: [{retries: {attempts: 3, retryOn: '5xx,sometimes'}, %s}]" % ROUTE,
        "spec.http[0].retries.retryOn",
        "'sometimes' is not a retryOn policy",
    ),
    (
        "VirtualService",
        "hosts: [a]\nhttp: [{retries: {attempts: 0, perTryTimeout: 2s}, %s}]" % ROUTE,
        "spec.http[0].retries",
        "perTryTimeout set while attempts is 0",
    ),
    (
        "VirtualService",
        "hosts: [a]\nhttp: [{retries: {retryOn: 5xx}, %s}]" % ROUTE,
        "spec.http[0].retries",
        "retryOn set while attempts is 0",
    ),
    (
        "VirtualService",
        "hosts: [a]\ngateways: ['shop/Bad_Name']\nhttp: [{%s}]" % ROUTE,
        "spec.gateways[0]",
        "not valid",
    ),
    (
        "VirtualService",
        "hosts: [a.example.com]\ntls: [{match: [{sniHosts: [b.example.com]}], %s}]" % ROUTE,
        "spec.tls[0].match[0].sniHosts[0]",
        "not within",
    ),
    (
        "VirtualService",
        "hosts: [a]\nhttp: [{redirect: {uri: /b}, fault: {abort: {httpStatus: 500}}}]",
        "spec.http[0].fault",
        "both redirect and fault",
    ),
    (
        "VirtualService",
        "hosts: [a]\nhttp: [{redirect: {redirectCode: 302}}]",
        "spec.http[0].redirect",
        "needs uri, prefixRewrite, authority, scheme or port",
    ),
    (
        "VirtualService",
        "hosts: [a]\nhttp: [{redirect: {uri: /b, scheme: ftp}}]",
        "spec.http[0].redirect.scheme",
        "'http' or 'https'",
    ),
    ("VirtualService", "hosts: [a]\nhttp: [{rewrite: {}, %s}]" % ROUTE, "spec.http[0].rewrite", "needs uri"),
    (
        "VirtualService",
        "hosts: [a]\nhttp: [{headers: {response: {set: {host: x}}}, %s}]" % ROUTE,
        "spec.http[0].headers.response.set",
        "'host' cannot be changed",
    ),
    (
        "VirtualService",
        "hosts: [a]\nhttp: [{route: [{destination: {host: b}, headers: {request: {remove: [':path']}}}]}]",
        "spec.http[0].route[0].headers.request.remove",
        "':path' cannot be changed",
    ),
    (
        "VirtualService",
        "hosts: [a]\nhttp: [{corsPolicy: {allowMethods: [FETCH]}, %s}]" % ROUTE,
        "spec.http[0].corsPolicy.allowMethods[0]",
        "not an HTTP method",
    ),
    (
        "VirtualService",
        "hosts: [a]\nhttp: [{match: [{headers: {x-a: {prefix: ''}}}], %s}]" % ROUTE,
        "spec.http[0].match[0].headers.x-a.prefix",
        "empty prefix",
    ),
    # DestinationRule
    ("DestinationRule", "host: r\ntrafficPolicy: {}", "spec.trafficPolicy", "at least one setting"),
    (
        "DestinationRule",
        "host: r\ntrafficPolicy: {connectionPool: {}}",
        "spec.trafficPolicy.connectionPool",
        "tcp or http",
    ),
    (
        "DestinationRule",
        "host: r\ntrafficPolicy: {portLevelSettings: [{port: {number: 80}}]}",
        "spec.trafficPolicy.portLevelSettings[0]",
        "at least one setting",
    ),
    ("DestinationRule", "host: r\nsubsets: [{name: V1}]", "spec.subsets[0].name", "DNS label"),
    (
        "DestinationRule",
        "host: r\ntrafficPolicy: {tls: {mode: SIMPLE, insecureSkipVerify: true, caCertificates: /ca.pem}}",
        "spec.trafficPolicy.tls",
        "insecureSkipVerify",
    ),
    (
        "DestinationRule",
        "host: r\ntrafficPolicy: {tls: {mode: MUTUAL, credentialName: c, caCertificates: /ca.pem}}",
        "spec.trafficPolicy.tls",
        "credentialName cannot be combined",
    ),
    (
        "DestinationRule",
        "host: r\ntrafficPolicy: {outlierDetection: {consecutiveLocalOriginFailures: 3}}",
        "spec.trafficPolicy.outlierDetection.consecutiveLocalOriginFailures",
        "splitExternalLocalOriginErrors",
    ),
    (
        "DestinationRule",
        "host: r\ntrafficPolicy: {loadBalancer: {consistentHash: {useSourceIp: true, maglev: {tableSize: 100}}}}",
        "spec.trafficPolicy.loadBalancer.consistentHash.maglev.tableSize",
        "prime",
    ),
    (
        "DestinationRule",
        "host: r\nworkloadSelector: {matchLabels: {app: '*'}}",
        "spec.workloadSelector.matchLabels",
        "wildcards",
    ),
    # Gateway
    (
        "Gateway",
        "servers:\n- {port: {number: 80, name: web, protocol: HTTP}, hosts: ['*']}\n"
        "- {port: {number: 8080, name: web, protocol: HTTP}, hosts: ['*']}",
        "spec.servers[1].port.name",
        "unique",
    ),
    (
        "Gateway",
        "servers: [{port: {number: 80, protocol: HTTP}, hosts: ['*']}]",
        "spec.servers[0].port.name",
        "needs a name",
    ),
    (
        "Gateway",
        "servers: [{port: {number: 80, name: w, protocol: QUIC}, hosts: ['*']}]",
        "spec.servers[0].port.protocol",
        "unsupported protocol 'QUIC'",
    ),
    (
        "Gateway",
        "servers: [{port: {number: 80, name: w, protocol: HTTP, targetPort: 8080}, hosts: ['*']}]",
        "spec.servers[0].port.targetPort",
        "no effect",
    ),
    (
        "Gateway",
        "servers: [{port: {number: 443, name: s, protocol: HTTPS}, hosts: ['*'], "
        "tls: {mode: ISTIO_MUTUAL, credentialName: cert}}]",
        "spec.servers[0].tls.credentialName",
        "ISTIO_MUTUAL",
    ),
    (
        "Gateway",
        "servers: [{port: {number: 443, name: s, protocol: HTTPS}, hosts: ['*'], "
        "tls: {mode: MUTUAL, serverCertificate: /c.pem, privateKey: /k.pem}}]",
        "spec.servers[0].tls.caCertificates",
        "needs caCertificates",
    ),
    (
        "Gateway",
        "servers: [{port: {number: 9000, name: t, protocol: TCP}, hosts: ['*'], tls: {mode: SIMPLE, credentialName: c}}]",
        "spec.servers[0].tls",
        "cannot have TLS settings",
    ),
    (
        "Gateway",
        "servers: [{port: {number: 80, name: w, protocol: HTTP}, hosts: ['*'], bind: localhost}]",
        "spec.servers[0].bind",
        "not an IP address",
    ),
    (
        "Gateway",
        "selector: {istio: '*'}\nservers: [{port: {number: 80, name: w, protocol: HTTP}, hosts: ['*']}]",
        "spec.selector",
        "wildcards",
    ),
    # ServiceEntry
    (
        "ServiceEntry",
        "hosts: ['*']\nports: [{number: 80, name: http, protocol: HTTP}]",
        "spec.hosts[0]",
        "not a ServiceEntry host",
    ),
    (
        "ServiceEntry",
        "hosts: [a.example.com]\nports: [{number: 80, name: web, protocol: HTTP}, {number: 81, name: web}]",
        "spec.ports[1].name",
        "already defined",
    ),
    (
        "ServiceEntry",
        "hosts: [a.example.com]\nports: [{number: 80, name: a}, {number: 80, name: b}]",
        "spec.ports[1].number",
        "already defined",
    ),
    (
        "ServiceEntry",
        "hosts: [a.example.com]\nports: [{number: 80, name: http, protocol: HTTP3}]",
        "spec.ports[0].protocol",
        "unsupported protocol",
    ),
    ("ServiceEntry", "hosts: [a.example.com]\nports: [{number: 80, name: Web_1}]", "spec.ports[0].name", "DNS label"),
    ("ServiceEntry", "hosts: [a.example.com]\nports: [{number: 80}]", "spec.ports[0].name", "port name ''"),
    (
        "ServiceEntry",
        "hosts: [a.example.com]\nports: [{number: 0, name: a}]",
        "spec.ports[0].number",
        "greater than or equal to 1",
    ),
    (
        "ServiceEntry",
        "hosts: [a.example.com]\nworkloadSelector: {labels: {app: '*'}}\nresolution: STATIC",
        "spec.workloadSelector.labels",
        "wildcards",
    ),
    (
        "ServiceEntry",
        "hosts: [a.example.com]\naddresses: [10.0.0.0/24]\nresolution: DNS\nports: [{number: 80, name: h, protocol: HTTP}]",
        "spec.addresses",
        "CIDR addresses are allowed only with resolution NONE or STATIC",
    ),
    (
        "ServiceEntry",
        "hosts: [a.example.com]\nresolution: NONE\nendpoints: [{address: 1.2.3.4}]",
        "spec.endpoints",
        "resolution NONE takes no endpoints",
    ),
    (
        "ServiceEntry",
        "hosts: [a.example.com]\nresolution: DNS_ROUND_ROBIN\nendpoints: [{address: a.b}, {address: c.d}]",
        "spec.endpoints",
        "at most one endpoint",
    ),
    (
        "ServiceEntry",
        "hosts: [a.example.com]\nresolution: STATIC\nendpoints: [{address: a.example.com}]",
        "spec.endpoints[0].address",
        "not an IP address",
    ),
    (
        "ServiceEntry",
        "hosts: [a.example.com]\nresolution: STATIC\nports: [{number: 80, name: http}]\n"
        "endpoints: [{address: 1.2.3.4, ports: {web: 8080}}]",
        "spec.endpoints[0].ports.web",
        "not one of",
    ),
    (
        "ServiceEntry",
        "hosts: [a.example.com, b.example.com]\nresolution: DNS\nports: [{number: 5432, name: pg, protocol: TCP}]",
        "spec.hosts",
        "several hosts",
    ),
    # WorkloadEntry
    ("WorkloadEntry", "labels: {app: a}", "spec.address", "address is required"),
    ("WorkloadEntry", "address: 1.2.3.4\nports: {http: 70000}", "spec.ports.http", "not a port number"),
    ("WorkloadEntry", "address: 1.2.3.4\nports: {HTTP: 80}", "spec.ports.HTTP", "DNS label"),
    ("WorkloadEntry", "address: unix://relative/path", "spec.address", "absolute"),
    # Sidecar
    (
        "Sidecar",
        "egress: [{hosts: ['./*']}, {port: {number: 80, name: h, protocol: HTTP}, hosts: ['./*']}]",
        "spec.egress[0]",
        "must be the last",
    ),
    (
        "Sidecar",
        "workloadSelector: {labels: {app: '*'}}\negress: [{hosts: ['./*']}]",
        "spec.workloadSelector.labels",
        "wildcards",
    ),
    # PeerAuthentication
    (
        "PeerAuthentication",
        "selector: {matchLabels: {app: a}}\nportLevelMtls: {}",
        "spec.portLevelMtls",
        "at least one port",
    ),
    ("PeerAuthentication", "selector: {matchLabels: {app: '*'}}", "spec.selector.matchLabels", "wildcards"),
    # AuthorizationPolicy
    ("AuthorizationPolicy", "action: DENY", "spec.rules", "never matches"),
    ("AuthorizationPolicy", "action: DENY\nrules: []", "spec.rules", "never matches"),
    (
        "AuthorizationPolicy",
        "rules: [{from: [{source: {serviceAccounts: [shop/a], namespaces: [shop]}}]}]",
        "spec.rules[0].from[0].source",
        "serviceAccounts cannot be combined",
    ),
    (
        "AuthorizationPolicy",
        "rules: [{from: [{source: {notServiceAccounts: [shop/a], principals: [p]}}]}]",
        "spec.rules[0].from[0].source",
        "serviceAccounts cannot be combined",
    ),
    ("AuthorizationPolicy", "rules: [{from: [{source: {}}]}]", "spec.rules[0].from[0].source", "at least one field"),
    ("AuthorizationPolicy", "rules: [{to: []}]", "spec.rules[0].to", "at least one operation"),
    (
        "AuthorizationPolicy",
        "rules: [{to: [{operation: {paths: ['']}}]}]",
        "spec.rules[0].to[0].operation.paths[0]",
        "empty value",
    ),
    ("AuthorizationPolicy", "selector: {matchLabels: {'*': a}}\nrules: [{}]", "spec.selector.matchLabels", "wildcards"),
    # RequestAuthentication
    (
        "RequestAuthentication",
        "jwtRules: [{issuer: i, jwksUri: 'https://i/keys', audiences: ['']}]",
        "spec.jwtRules[0].audiences[0]",
        "empty value",
    ),
    (
        "RequestAuthentication",
        "jwtRules: [{issuer: i, jwksUri: 'https://i/keys', outputClaimToHeaders: [{header: 'a b', claim: c}]}]",
        "spec.jwtRules[0].outputClaimToHeaders[0].header",
        "not a header name",
    ),
]


@pytest.mark.parametrize("kind, spec, path, words", REFUSED, ids=[f"{k}:{p}:{w}" for k, _, p, w in REFUSED])
def test_refused_as_istio_refuses(kind: str, spec: str, path: str, words: str) -> None:
    found = errors(kind, spec)
    assert any(e.path == path and words in e.message for e in found), [str(e) for e in found]
    problem = next(e for e in found if e.path == path)
    assert (problem.file, problem.document, problem.kind, problem.namespace, problem.name) == (
        "rules.yaml",
        0,
        kind,
        "shop",
        "x",
    )


ACCEPTED = [
    ("VirtualService", "hosts: ['*']\ngateways: [gw]\nhttp: [{%s}]" % ROUTE),
    (
        "VirtualService",
        "hosts: [a]\nhttp: [{route: [{destination: {host: b}, weight: 1}, {destination: {host: c}, weight: 3}]}]",
    ),
    (
        "VirtualService",
        "hosts: [a]\nhttp: [{retries: {attempts: 2, retryOn: 'gateway-error,503,cancelled'}, %s}]" % ROUTE,
    ),
    ("VirtualService", "hosts: [a]\nhttp: [{retries: {attempts: 0}, %s}]" % ROUTE),
    (
        "VirtualService",
        "hosts: [a]\nhttp: [{match: [{uri: {prefix: ''}}], headers: {request: {set: {host: b}}}, %s}]" % ROUTE,
    ),
    (
        "DestinationRule",
        "host: '*.example.com'\ntrafficPolicy: {tls: {mode: MUTUAL, clientCertificate: /c, privateKey: /k}}",
    ),
    ("Gateway", "servers: [{port: {number: 80, name: w, protocol: HTTP}, hosts: ['*'], tls: {httpsRedirect: true}}]"),
    (
        "Gateway",
        "servers: [{port: {number: 443, name: s, protocol: HTTPS}, hosts: ['*'], tls: {mode: MUTUAL, credentialName: c}}]",
    ),
    (
        "ServiceEntry",
        "hosts: [a.example.com]\naddresses: [10.0.0.0/24]\nresolution: STATIC\n"
        "ports: [{number: 80, name: http, protocol: http}]\nendpoints: [{address: 10.0.0.1}]",
    ),
    ("ServiceEntry", "hosts: [a.example.com]"),  # port-less, as Istio allows
    ("ServiceEntry", "hosts: ['*x']"),  # partial wildcard (Istio warns, accepts)
    ("WorkloadEntry", "network: n1"),  # address may be left out on another network
    ("WorkloadEntry", "address: unix://@abstract"),
    ("AuthorizationPolicy", "action: DENY\nrules: [{}]"),
    ("AuthorizationPolicy", "rules: [{from: [{source: {serviceAccounts: [shop/a], ipBlocks: [10.0.0.0/8]}}]}]"),
]


@pytest.mark.parametrize("kind, spec", ACCEPTED, ids=[f"{k}:{s.splitlines()[-1][:40]}" for k, s in ACCEPTED])
def test_accepted_as_istio_accepts(kind: str, spec: str) -> None:
    result = load_text(document(kind, spec))
    assert not result.errors, [str(e) for e in result.errors]
    assert [r.kind for r in result.resources] == [kind]
