"""Authenticating callers on Kubernetes: the pod's service-account token, reviewed by the API server.

An agent in a pod sends the projected token the kubelet mounts for it (audience ``istio-ca``,
at ``/var/run/secrets/tokens/istio-token``). `TokenReviewAuthenticator` asks the API server
(``POST /apis/authentication.k8s.io/v1/tokenreviews`` with ``spec.audiences: [istio-ca]``)
whether the token is good; the answer names the service account
(``system:serviceaccount:NS:SA``) and, for a token bound to a pod, the pod. As Istio's
``KubeJWTAuthenticator``:

* the audience is required: a token for another audience, and a legacy service-account token
  from a Secret (whose audience is the API server's), are refused (Istio's ``TOKEN_AUDIENCES``,
  default ``istio-ca``, is `audiences` here);
* the user must be in the group ``system:serviceaccounts`` and named
  ``system:serviceaccount:NS:SA``;
* nothing is cached: each CSR and each TLS xDS stream costs one TokenReview.

If the API server does not answer (or the control plane may not create TokenReviews), the
result is `AuthenticatorUnavailable`, which the CA turns into UNAVAILABLE so that agents retry,
rather than a refusal. The control plane needs RBAC ``create`` on ``tokenreviews`` (the
ClusterRole ``system:auth-delegator``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping

import aiohttp
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from plait.ca.tokens import AUDIENCE, AuthenticatorUnavailable, InvalidToken, TokenIdentity

SERVICE_ACCOUNTS_GROUP = "system:serviceaccounts"
POD_NAME_EXTRA = "authentication.kubernetes.io/pod-name"
REVIEW_TIMEOUT = 10.0  # seconds


class TokenReviewAuthenticator:
    """`plait.ca.tokens.Authenticator` that asks the Kubernetes API server."""

    def __init__(
        self, api: client.ApiClient, *, audiences: Iterable[str] = (AUDIENCE,), timeout: float = REVIEW_TIMEOUT
    ):
        self.reviews = client.AuthenticationV1Api(api)
        self.audiences, self.timeout = list(audiences), timeout
        if not self.audiences:
            raise ValueError("a TokenReview authenticator needs at least one audience")

    async def authenticate(self, token: str) -> TokenIdentity:
        body = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "spec": {"token": token, "audiences": self.audiences},
        }
        try:
            review = await asyncio.wait_for(self.reviews.create_token_review(body), self.timeout)
        except ApiException as error:
            if error.status == 403:
                raise AuthenticatorUnavailable(
                    "the control plane may not create TokenReviews; give its service "
                    "account the ClusterRole system:auth-delegator"
                ) from None
            raise AuthenticatorUnavailable(f"TokenReview failed: {error.status} {error.reason}") from None
        except (aiohttp.ClientError, OSError, TimeoutError) as error:
            raise AuthenticatorUnavailable(
                f"the Kubernetes API server did not answer the TokenReview ({type(error).__name__}: {error})"
            ) from None
        status = review.status
        return identity_of_review(
            authenticated=bool(status and status.authenticated),
            error=(status and status.error) or "",
            username=(status and status.user and status.user.username) or "",
            groups=(status and status.user and status.user.groups) or [],
            extra=(status and status.user and status.user.extra) or {},
            audiences=(status and status.audiences) or [],
            wanted=self.audiences,
        )


def identity_of_review(
    *,
    authenticated: bool,
    error: str,
    username: str,
    groups: Iterable[str],
    extra: Mapping[str, list[str]],
    audiences: Iterable[str],
    wanted: Iterable[str],
) -> TokenIdentity:
    """The caller a TokenReview's status describes; InvalidToken saying why if it is not a service
    account the review authenticated for one of the `wanted` audiences."""
    if error:
        raise InvalidToken(f"the Kubernetes API server refused it: {error}")
    if not authenticated:
        raise InvalidToken("the Kubernetes API server did not authenticate it")
    audiences = list(audiences)
    if audiences and not set(audiences) & set(wanted):
        raise InvalidToken(f"its audiences {', '.join(audiences)} are not {', '.join(wanted)}")
    if SERVICE_ACCOUNTS_GROUP not in groups:
        raise InvalidToken(f"{username or 'the user'} is not a service account (not in group {SERVICE_ACCOUNTS_GROUP})")
    parts = username.split(":")
    if len(parts) != 4 or parts[:2] != ["system", "serviceaccount"] or not all(parts[2:]):
        raise InvalidToken(f"user name {username!r} is not system:serviceaccount:NAMESPACE:NAME")
    pods = extra.get(POD_NAME_EXTRA) or [""]
    return TokenIdentity(namespace=parts[2], service_account=parts[3], pod=pods[0])
