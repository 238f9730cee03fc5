"""The CA's error hierarchy: each class carries Fulcio's gRPC code, HTTP status and client message.

The client-facing ``message`` is fixed per class (fulcio.md §1.8) so that a refused token never
tells the caller *why* it was refused; the reason lives in ``detail``, which the raising module
logs at DEBUG and which must never be sent to the client.
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "CABackendError",
    "CAError",
    "CTLogError",
    "IdentityMappingError",
    "InsecurePublicKey",
    "InvalidCSR",
    "InvalidIdentityToken",
    "InvalidProofOfPossession",
    "InvalidPublicKey",
    "MalformedRequest",
    "SigningAlgorithmNotPermitted",
    "UnknownIssuer",
]

# gRPC status codes Fulcio answers with (grpc-gateway maps them to HTTP, fulcio.md §1.8).
GRPC_INVALID_ARGUMENT = 3
GRPC_INTERNAL = 13


class CAError(Exception):
    """Base class of every error the CA raises on purpose.

    ``str(err)`` is the client-facing message; ``err.detail`` is for logs only.
    """

    grpc_code: ClassVar[int] = GRPC_INTERNAL
    status: ClassVar[int] = 500
    default_message: ClassVar[str] = "error communicating with CA backend"

    def __init__(self, detail: str = "", *, message: str | None = None) -> None:
        self.message = message if message is not None else self.default_message
        self.detail = detail
        super().__init__(self.message)


class _ClientError(CAError):
    grpc_code = GRPC_INVALID_ARGUMENT
    status = 400


class MalformedRequest(_ClientError):
    """The request body is not a valid signingCert request (bad JSON, both key forms, ...).

    Unlike the other classes the message is per instance: grpc-gateway reports the parse problem.
    """

    default_message = "The request could not be parsed"


class InvalidIdentityToken(_ClientError):
    """Any token failure: malformed, bad signature, wrong audience, expired, failed claim checks."""

    default_message = "There was an error processing the identity token"


class UnknownIssuer(InvalidIdentityToken):
    """The token's ``iss`` matches no configured issuer; the client sees the generic message."""


class InvalidPublicKey(_ClientError):
    """The public key is missing or cannot be parsed."""

    default_message = "The public key supplied in the request could not be parsed"


class InsecurePublicKey(_ClientError):
    """The public key parses but its type or size is not allowed."""

    default_message = "The public key supplied in the request is insecure"


class InvalidCSR(_ClientError):
    """The CSR is not PEM or cannot be parsed."""

    default_message = "The certificate signing request could not be parsed"


class InvalidProofOfPossession(_ClientError):
    """The proof of possession or the CSR's self-signature does not verify."""

    default_message = "The signature supplied in the request could not be verified"


class SigningAlgorithmNotPermitted(_ClientError):
    """The (key type, hash) pair is not in the client signing algorithm allow-list."""

    def __init__(self, key_description: str, hash_name: str) -> None:
        super().__init__(
            f"{key_description} with {hash_name} is not in the allow-list",
            message=f"signing algorithm not permitted: {key_description}, {hash_name}",
        )


class IdentityMappingError(_ClientError):
    """The verified token could not be turned into certificate content (Fulcio's Embed error).

    Fulcio returns the mapping error's text to the client; so do we (it names claims, not secrets).
    """

    def __init__(self, message: str) -> None:
        super().__init__(message, message=message)


class CABackendError(CAError):
    """Signing failed or the CA material is unusable for this request."""


class CTLogError(CAError):
    """The CT log refused the precertificate or its SCT did not verify."""

    default_message = "Error entering certificate in CTL"
