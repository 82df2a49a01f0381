"""How a TokenReview's answer becomes a caller (plait.ca.kubeauth.identity_of_review), without a
cluster. The real API server is asked in tests/ca/test_kube_ca.py."""

from __future__ import annotations

import pytest

from plait.ca.kubeauth import identity_of_review
from plait.ca.tokens import InvalidToken, TokenIdentity

GROUPS = ["system:serviceaccounts", "system:serviceaccounts:shop", "system:authenticated"]


def review(**status):
    fields = {
        "authenticated": True,
        "error": "",
        "username": "system:serviceaccount:shop:reviews",
        "groups": GROUPS,
        "extra": {},
        "audiences": ["istio-ca"],
        "wanted": ["istio-ca"],
    }
    return identity_of_review(**{**fields, **status})


def test_a_service_account_token():
    assert review() == TokenIdentity("shop", "reviews", "")
    bound = review(
        extra={"authentication.kubernetes.io/pod-name": ["reviews-v1-0"], "authentication.kubernetes.io/pod-uid": ["u"]}
    )
    assert bound == TokenIdentity("shop", "reviews", "reviews-v1-0") and str(bound) == "shop/reviews (pod reviews-v1-0)"


@pytest.mark.parametrize(
    ("status", "message"),
    [
        (
            {
                "error": 'token audiences ["api"] is invalid for the target audiences ["istio-ca"]',
                "authenticated": False,
            },
            "the Kubernetes API server refused it: token audiences",
        ),
        ({"authenticated": False}, "did not authenticate it"),
        ({"audiences": ["api"]}, "its audiences api are not istio-ca"),
        ({"username": "alice", "groups": ["system:authenticated"]}, "alice is not a service account"),
        ({"username": "system:serviceaccount:shop"}, "is not system:serviceaccount:NAMESPACE:NAME"),
        ({"username": "system:node:shop:x"}, "is not system:serviceaccount:NAMESPACE:NAME"),
    ],
)
def test_refusals_say_why(status, message):
    with pytest.raises(InvalidToken, match=message.replace("[", r"\[")):
        review(**status)
