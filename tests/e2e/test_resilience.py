"""Resilience features through a real Envoy: faults, timeouts, retries, mirroring, outlier detection,
circuit breaking. Each test sends real requests and checks what the client and the backends saw."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

from plait.testing.backends import service_yaml

REVIEWS_CLUSTER = "outbound|9080||reviews.default.svc.cluster.local"

FAULT_ABORT = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: ratings
spec:
  hosts:
  - ratings
  http:
  - match:
    - headers:
        end-user:
          exact: jason
    fault:
      abort:
        percentage:
          value: 100.0
        httpStatus: 500
    route:
    - destination:
        host: ratings
  - route:
    - destination:
        host: ratings
"""

FAULT_DELAY = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: ratings
spec:
  hosts:
  - ratings
  http:
  - fault:
      delay:
        percentage:
          value: 100.0
        fixedDelay: 1s
    route:
    - destination:
        host: ratings
"""

FAULT_NEVER = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: ratings
spec:
  hosts:
  - ratings
  http:
  - fault:
      abort:
        percentage:
          value: 0.0
        httpStatus: 503
    route:
    - destination:
        host: ratings
"""

TIMEOUT = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts:
  - reviews
  http:
  - timeout: 0.5s
    route:
    - destination:
        host: reviews
"""

RETRIES = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts:
  - reviews
  http:
  - retries:
      attempts: 3
      retryOn: 5xx
    route:
    - destination:
        host: reviews
"""

NO_RETRIES = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts:
  - reviews
  http:
  - retries:
      attempts: 0
    route:
    - destination:
        host: reviews
"""

MIRROR = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts:
  - reviews
  http:
  - route:
    - destination:
        host: reviews
    mirror:
      host: audit
    mirrorPercentage:
      value: 100.0
"""

OUTLIER_DETECTION = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: reviews
spec:
  host: reviews
  trafficPolicy:
    outlierDetection:
      consecutive5xxErrors: 1
      interval: 1s
      baseEjectionTime: 30s
      maxEjectionPercent: 100
"""

CIRCUIT_BREAKER = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: reviews
spec:
  host: reviews
  trafficPolicy:
    connectionPool:
      tcp:
        maxConnections: 1
      http:
        http1MaxPendingRequests: 1
"""


def wait_until(condition, timeout: float = 5.0, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return condition()


def test_fault_abort_answers_the_configured_status_without_calling_the_backend(mesh):
    ratings = mesh.http_backend("ratings-v1", 11)
    sidecar = mesh.sidecar(service_yaml("ratings", 9080, {"v1": ratings}), FAULT_ABORT)

    for _ in range(10):
        assert sidecar.get("http://ratings:9080/ratings/0", {"end-user": "jason"}).status == 500
    assert ratings.count == 0
    assert sidecar.get("http://ratings:9080/ratings/0").backend == "ratings-v1"  # others are not faulted


def test_fault_delay_holds_the_request(mesh):
    ratings = mesh.http_backend("ratings-v1", 11)
    sidecar = mesh.sidecar(service_yaml("ratings", 9080, {"v1": ratings}), FAULT_DELAY)

    reply = sidecar.get("http://ratings:9080/ratings/0")
    assert reply.backend == "ratings-v1"
    assert 0.98 <= reply.elapsed < 3.0  # Envoy's timers may fire a millisecond or so early


def test_fault_with_percentage_zero_never_fires(mesh):
    ratings = mesh.http_backend("ratings-v1", 11)
    sidecar = mesh.sidecar(service_yaml("ratings", 9080, {"v1": ratings}), FAULT_NEVER)

    statuses = [sidecar.get("http://ratings:9080/").status for _ in range(50)]
    assert statuses == [200] * 50
    assert ratings.count == 50


def test_timeout_gives_504_before_the_slow_backend_answers(mesh):
    reviews = mesh.http_backend("reviews-v1", 11, delay=2.0)
    sidecar = mesh.sidecar(service_yaml("reviews", 9080, {"v1": reviews}), TIMEOUT)

    reply = sidecar.get("http://reviews:9080/")
    assert reply.status == 504
    assert b"upstream request timeout" in reply.body
    assert 0.45 <= reply.elapsed < 1.5  # Envoy timers may fire a millisecond early


def test_retries_hide_failures_from_the_client(mesh):
    reviews = mesh.http_backend("reviews-v1", 11, fail_first=2, fail_status=500)
    sidecar = mesh.sidecar(service_yaml("reviews", 9080, {"v1": reviews}), RETRIES)

    reply = sidecar.get("http://reviews:9080/")
    assert (reply.status, reply.backend) == (200, "reviews-v1")
    assert [r.headers["x-envoy-attempt-count"] for r in reviews.requests] == ["1", "2", "3"]


def test_zero_attempts_disables_retries(mesh):
    reviews = mesh.http_backend("reviews-v1", 11, fail_first=1, fail_status=503)
    sidecar = mesh.sidecar(service_yaml("reviews", 9080, {"v1": reviews}), NO_RETRIES)

    assert sidecar.get("http://reviews:9080/").status == 503
    assert reviews.count == 1


def test_default_retry_policy_retries_a_503_like_istio(mesh):
    reviews = mesh.http_backend("reviews-v1", 11, fail_first=2, fail_status=503)
    sidecar = mesh.sidecar(service_yaml("reviews", 9080, {"v1": reviews}))  # no VirtualService at all

    assert sidecar.get("http://reviews:9080/").status == 200
    assert reviews.count == 3  # the first try and Istio's default 2 retries


def test_mirror_sends_a_copy_with_a_shadow_host(mesh):
    reviews, audit = mesh.http_backend("reviews-v1", 11), mesh.http_backend("audit-v1", 21)
    sidecar = mesh.sidecar(
        service_yaml("reviews", 9080, {"v1": reviews}), service_yaml("audit", 9080, {"v1": audit}), MIRROR
    )

    reply = sidecar.get("http://reviews:9080/reviews/3", {"end-user": "jason"})
    assert reply.backend == "reviews-v1"
    assert wait_until(lambda: audit.count == 1)
    copy = audit.requests[0]
    assert (copy.path, copy.headers["host"], copy.headers["end-user"]) == ("/reviews/3", "reviews-shadow:9080", "jason")
    assert reviews.requests[0].headers["host"] == "reviews:9080"


def test_outlier_detection_ejects_the_failing_endpoint(mesh):
    good = mesh.http_backend("reviews-good", 11)
    bad = mesh.http_backend("reviews-bad", 12, status=500)
    sidecar = mesh.sidecar(service_yaml("reviews", 9080, {"good": good, "bad": bad}), OUTLIER_DETECTION)

    first: list[int] = []  # until the load balancer (random choices) picks the bad endpoint once
    while 500 not in first and len(first) < 30:
        first.append(sidecar.get("http://reviews:9080/").status)
    assert 500 in first, first
    assert wait_until(lambda: any(h.outlier_ejected for h in sidecar.envoy.cluster_hosts(REVIEWS_CLUSTER)))
    ejected = [h.address for h in sidecar.envoy.cluster_hosts(REVIEWS_CLUSTER) if h.outlier_ejected]
    assert ejected == [bad.address]
    failures_before = bad.count

    later = [sidecar.get("http://reviews:9080/").backend for _ in range(20)]
    assert later == ["reviews-good"] * 20
    assert bad.count == failures_before
    assert sidecar.envoy.stat(f"cluster.{REVIEWS_CLUSTER}.outlier_detection.ejections_enforced_total") >= 1


def test_circuit_breaker_overflow_answers_503_overloaded(mesh):
    reviews = mesh.http_backend("reviews-v1", 11, delay=0.5)
    sidecar = mesh.sidecar(service_yaml("reviews", 9080, {"v1": reviews}), CIRCUIT_BREAKER)

    with ThreadPoolExecutor(max_workers=6) as pool:
        replies = list(pool.map(lambda _: sidecar.get("http://reviews:9080/"), range(6)))
    served = [r for r in replies if r.status == 200]
    overflowed = [r for r in replies if r.status == 503]
    assert served and overflowed and len(served) + len(overflowed) == 6
    assert all(r.headers.get("x-envoy-overloaded") == "true" for r in overflowed)
    assert reviews.count == len(served)
    assert sidecar.envoy.stat(f"cluster.{REVIEWS_CLUSTER}.upstream_rq_pending_overflow") == len(overflowed)


def test_outlier_detection_ejects_most_endpoints_without_panic_like_istio(mesh):
    good = mesh.http_backend("reviews-good", 11)
    bad = [mesh.http_backend(f"reviews-bad{i}", 12 + i, status=500) for i in range(2)]
    sidecar = mesh.sidecar(
        service_yaml("reviews", 9080, {"good": good, "bad0": bad[0], "bad1": bad[1]}), OUTLIER_DETECTION
    )

    for _ in range(40):  # until the load balancer (random choices) has picked each bad endpoint once
        if all(b.count for b in bad):
            break
        sidecar.get("http://reviews:9080/")
    assert all(b.count for b in bad)
    assert wait_until(lambda: sum(h.outlier_ejected for h in sidecar.envoy.cluster_hosts(REVIEWS_CLUSTER)) == 2)
    time.sleep(1.1)  # Envoy delivers a second health change within common_lb_config.update_merge_window (1s) late

    later = [sidecar.get("http://reviews:9080/").backend for _ in range(20)]
    assert later == ["reviews-good"] * 20
