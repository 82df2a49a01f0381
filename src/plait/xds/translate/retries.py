"""Route retry policies: Istio's ``retry.ConvertPolicy`` (the default policy and VirtualService ``retries``).

Defaults: 2 retries on connection failures and 503, each on another host (``previous_hosts``)
unless the route hashes to a host; ``retryOn`` numbers become retriable status codes,
``retryRemoteLocalities`` the ``previous_priorities`` priority, ``backoff`` the base interval. Pure.
"""

from __future__ import annotations

from plait.api import networking as net
from plait.xds.translate.common import TYPE, duration

DEFAULT_RETRY_ON = "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"


def _previous_hosts() -> dict:
    return {
        "name": "envoy.retry_host_predicates.previous_hosts",
        "typed_config": {"@type": TYPE + "envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"},
    }


def _previous_priorities() -> dict:
    """``retryRemoteLocalities``: each retry goes to the next priority (locality), as Istio sets it."""
    return {
        "name": "envoy.retry_priorities.previous_priorities",
        "typed_config": {
            "@type": TYPE + "envoy.extensions.retry.priority.previous_priorities.v3.PreviousPrioritiesConfig",
            "update_frequency": 2,
        },
    }


def default_retry_policy(consistent_hash: bool = False) -> dict:
    """Istio's default: 2 retries on connection failures and 503, each on another host unless the
    route hashes to a host (consistent hashing keeps retries on it)."""
    policy: dict = {"retry_on": DEFAULT_RETRY_ON, "num_retries": 2}
    if not consistent_hash:
        policy["retry_host_predicate"] = [_previous_hosts()]
    policy["host_selection_retry_max_attempts"] = "5"
    policy["retriable_status_codes"] = [503]
    return policy


def _retry_on(text: str) -> tuple[str, list[int]]:
    """Istio's retryOn: numbers are status codes (adding ``retriable-status-codes``), the rest Envoy's words."""
    tokens = [t.strip() for t in text.split(",") if t.strip()]
    codes = [int(t) for t in tokens if t.isdigit()]
    on = [t for t in tokens if not t.isdigit()]
    if codes and "retriable-status-codes" not in on:
        on.append("retriable-status-codes")
    return ",".join(on), codes


def retry_policy(retries: net.HTTPRetry | None, consistent_hash: bool = False) -> dict | None:
    """Envoy's retry policy for a route's ``retries`` (Istio's ``retry.ConvertPolicy``)."""
    if retries is None:
        return default_retry_policy(consistent_hash)
    if retries.attempts == 0:
        return None
    policy = default_retry_policy(consistent_hash)
    policy["num_retries"] = retries.attempts
    if retries.retry_on:
        policy["retry_on"], codes = _retry_on(retries.retry_on)
        policy["retriable_status_codes"] = codes
        if not codes:
            del policy["retriable_status_codes"]
    if retries.per_try_timeout:
        policy["per_try_timeout"] = duration(retries.per_try_timeout)
    if retries.retry_ignore_previous_hosts is not None:
        policy.pop("retry_host_predicate", None)
        if retries.retry_ignore_previous_hosts:
            policy["retry_host_predicate"] = [_previous_hosts()]
    if retries.retry_remote_localities:
        policy["retry_priority"] = _previous_priorities()
    if retries.backoff:
        policy["retry_back_off"] = {"base_interval": duration(retries.backoff)}
    return policy
