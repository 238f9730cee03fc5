"""Fulcio's gRPC codes, HTTP statuses and client messages (fulcio.md §1.8), detail kept apart."""

from __future__ import annotations

import pytest

from services.ca import errors


@pytest.mark.parametrize(
    ("error", "code", "status", "message"),
    [
        (
            errors.InvalidIdentityToken("exp"),
            3,
            400,
            "There was an error processing the identity token",
        ),
        (errors.UnknownIssuer("iss"), 3, 400, "There was an error processing the identity token"),
        (
            errors.InvalidPublicKey("x"),
            3,
            400,
            "The public key supplied in the request could not be parsed",
        ),
        (
            errors.InsecurePublicKey("x"),
            3,
            400,
            "The public key supplied in the request is insecure",
        ),
        (errors.InvalidCSR("x"), 3, 400, "The certificate signing request could not be parsed"),
        (
            errors.InvalidProofOfPossession("x"),
            3,
            400,
            "The signature supplied in the request could not be verified",
        ),
        (
            errors.SigningAlgorithmNotPermitted("ECDSA P-256", "sha384"),
            3,
            400,
            "signing algorithm not permitted: ECDSA P-256, sha384",
        ),
        (errors.IdentityMappingError("value <x> not present"), 3, 400, "value <x> not present"),
        (
            errors.MalformedRequest("bad json", message="invalid character"),
            3,
            400,
            "invalid character",
        ),
        (errors.CABackendError("HSM down"), 13, 500, "error communicating with CA backend"),
        (errors.CTLogError("HTTP 404"), 13, 500, "Error entering certificate in CTL"),
    ],
)
def test_codes_and_messages(error: errors.CAError, code: int, status: int, message: str) -> None:
    assert isinstance(error, errors.CAError)
    assert (error.grpc_code, error.status) == (code, status)
    assert str(error) == error.message == message


def test_detail_never_reaches_the_message() -> None:
    err = errors.InvalidIdentityToken("signature by kid 'k1' failed for alice@example.com")
    assert "alice" not in str(err)
    assert "alice" in err.detail
