"""The Fulcio-compatible HTTP API (fulcio.md §1) over the CA core and the CT log.

Every certificate goes through the precertificate flow: the precertificate is appended to the
CT log first, and only its SCT, issued after that entry is committed, is embedded in the final
certificate. Every certificate the CA ever issued is therefore in the CT log.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from services.ca.certificate import build_final_certificate, build_precertificate
from services.ca.config import FulcioConfig
from services.ca.errors import CAError, CTLogError, InvalidIdentityToken, MalformedRequest
from services.ca.identity import principal_from_claims
from services.ca.keys import CAKeyMaterial
from services.ca.oidc import TokenVerifier
from services.ca.pop import (
    LeafPublicKey,
    parse_csr,
    parse_public_key,
    verify_csr,
    verify_proof_of_possession,
)
from services.limits import parse_json_async
from services.log.ct.log import CTError, CTLog
from services.log.ct.rfc6962 import issuer_key_hash

__all__ = ["CA", "CertificateAuthority", "add_routes"]

_logger = logging.getLogger(__name__)


@dataclass
class CertificateAuthority:
    """Everything ``signingCert`` needs, assembled at start-up."""

    config: FulcioConfig
    verifier: TokenVerifier
    ca: CAKeyMaterial
    ct_log: CTLog
    clock: Callable[[], datetime]
    # Told the issuer (``iss``) of each identity certified, once the certificate is built.
    on_issue: Callable[[str], None] | None = None

    @functools.cached_property
    def _chain_ders(self) -> tuple[bytes, ...]:
        return tuple(c.public_bytes(serialization.Encoding.DER) for c in self.ca.chain)

    @functools.cached_property
    def _issuer_key_hash(self) -> bytes:
        return issuer_key_hash(self.ca.chain[0])

    @functools.cached_property
    def chain_pems(self) -> tuple[str, ...]:
        """The CA chain as PEM (with the trailing newline), rendered once, not per response."""
        return tuple(_pem(c) for c in self.ca.chain)

    async def _signed(self, build: Callable[[], x509.Certificate]) -> x509.Certificate:
        """``build()``, which signs with the CA key, in a worker thread if the key is external.

        A PKCS#11 call blocks until the token answers (an HSM round trip): off the event loop,
        so one slow token never stalls the log or the TSA. An in-process key signs on the loop:
        pyca/cryptography (50.0) holds the GIL while it signs (two threads sign P-384 no faster
        than one), so a thread would leave the loop blocked all the same and add two hand-offs
        per signature. Should a release let go of the GIL, threads would pay again: measure.
        """
        if self.ca.in_process:
            return build()
        return await asyncio.to_thread(build)

    async def issue(self, token: str, key_request: Mapping[str, Any]) -> list[x509.Certificate]:
        """Verify the token and the key, log the precertificate, return [leaf, *CA chain]."""
        now = self.clock()
        claims = await self.verifier.verify(token, now)
        principal = principal_from_claims(claims, self.config)
        public_key = _public_key(key_request, principal)
        precert = await self._signed(
            functools.partial(
                build_precertificate,
                ca=self.ca,
                public_key=public_key,
                principal=principal,
                now=now,
            )
        )
        try:
            sct = await self.ct_log.add_issued_precertificate(
                precert, self._issuer_key_hash, self._chain_ders
            )
        except CTError as exc:
            raise CTLogError(exc.message) from None
        final = await self._signed(
            functools.partial(build_final_certificate, precert, ca=self.ca, sct=sct)
        )
        if self.on_issue is not None:
            self.on_issue(claims.iss)
        return [final, *self.ca.chain]


def _public_key(request: Mapping[str, Any], principal: Any) -> LeafPublicKey:
    csr = request.get("certificateSigningRequest") or request.get("certificate_signing_request")
    pkr = request.get("publicKeyRequest") or request.get("public_key_request")
    if csr and pkr:
        raise MalformedRequest(message="only one of publicKeyRequest and certificateSigningRequest")
    if csr:
        if not isinstance(csr, str):
            raise MalformedRequest(message="certificateSigningRequest must be a base64 string")
        return verify_csr(parse_csr(_b64(csr)))
    if not isinstance(pkr, Mapping):
        raise MalformedRequest(message="publicKeyRequest or certificateSigningRequest is required")
    public = pkr.get("publicKey") or pkr.get("public_key") or {}
    content = public.get("content") if isinstance(public, Mapping) else None
    proof = pkr.get("proofOfPossession") or pkr.get("proof_of_possession")
    if not isinstance(content, str) or not isinstance(proof, str):
        raise MalformedRequest(message="publicKey.content and proofOfPossession are required")
    key = parse_public_key(content)
    verify_proof_of_possession(key, _b64(proof), principal)
    return key


def _b64(value: str) -> bytes:
    """grpc-gateway accepts standard or URL-safe base64, padded or not."""
    padded = value + "=" * (-len(value) % 4)
    try:
        return base64.b64decode(padded.replace("-", "+").replace("_", "/"), validate=True)
    except (binascii.Error, ValueError):
        raise MalformedRequest(message="invalid base64 in request") from None


def _pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


# -- HTTP ------------------------------------------------------------------------------------

CA = web.AppKey("ca", CertificateAuthority)


def _error(exc: CAError) -> web.Response:
    body = {"code": exc.grpc_code, "message": str(exc), "details": []}
    return web.Response(text=json.dumps(body), status=exc.status, content_type="application/json")


def _token(body: Mapping[str, Any], request: web.Request) -> str:
    creds = body.get("credentials")
    token = creds.get("oidcIdentityToken") if isinstance(creds, Mapping) else None
    if not token:
        # grpc-gateway: the Authorization header with the first "Bearer " removed.
        token = request.headers.get("Authorization", "").replace("Bearer ", "", 1)
    return str(token or "")


async def _json_body(request: web.Request) -> Mapping[str, Any]:
    try:
        body = await parse_json_async(await request.read())
    except (ValueError, UnicodeDecodeError):
        raise MalformedRequest(message="request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise MalformedRequest(message="request body must be a JSON object")
    return body


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _guard(handler: Handler) -> Handler:
    """Answer ``CAError`` in Fulcio's grpc-gateway shape (the paths share the log's app)."""

    async def guarded(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except CAError as exc:
            # The client gets Fulcio's fixed message; why stays in the log. A refused identity
            # token is what an operator looks for when signing fails (wrong audience, expired,
            # unknown issuer), so it is a warning; the reason quotes claims the caller chose,
            # hence repr (no line breaks) and a length cap.
            if isinstance(exc, InvalidIdentityToken):
                _logger.warning("identity token refused: %r", exc.detail[:300])
            else:
                _logger.debug("signing request refused: %s (%s)", exc, exc.detail)
            return _error(exc)

    return guarded


async def signing_cert_v2(request: web.Request) -> web.Response:
    """POST /api/v2/signingCert: 200 with the embedded-SCT chain [leaf, ..., root]."""
    body = await _json_body(request)
    ca = request.app[CA]
    leaf, *_ = await ca.issue(_token(body, request), body)
    certs = [_pem(leaf).strip(), *(p.strip() for p in ca.chain_pems)]
    return web.json_response({"signedCertificateEmbeddedSct": {"chain": {"certificates": certs}}})


async def signing_cert_v1(request: web.Request) -> web.Response:
    """POST /api/v1/signingCert (legacy): 201 with the PEM chain."""
    body = await _json_body(request)
    legacy: dict[str, Any] = dict(body)
    public = body.get("publicKey")
    if isinstance(public, Mapping):
        content = public.get("content")
        if not isinstance(content, str):
            raise MalformedRequest(message="publicKey.content is required")
        legacy = {
            "publicKeyRequest": {
                "publicKey": {"content": _b64(content).decode(errors="replace")},
                "proofOfPossession": body.get("signedEmailAddress", ""),
            }
        }
    token = request.headers.get("Authorization", "").replace("Bearer ", "", 1)
    ca = request.app[CA]
    leaf, *_ = await ca.issue(token, legacy)
    text = "".join((_pem(leaf), *ca.chain_pems)).strip()
    return web.Response(text=text, status=201, content_type="application/pem-certificate-chain")


async def trust_bundle(request: web.Request) -> web.Response:
    """GET /api/v2/trustBundle: the issuing chain (no leaf), PEMs with their newline."""
    pems = list(request.app[CA].chain_pems)
    return web.json_response({"chains": [{"certificates": pems}]})


async def configuration(request: web.Request) -> web.Response:
    """GET /api/v2/configuration: the accepted issuers (exact first, then wildcards)."""
    config = request.app[CA].config
    issuers: list[dict[str, Any]] = []
    for issuer in config.oidc_issuers.values():
        issuers.append(
            {
                "issuerUrl": issuer.issuer_url,
                "audience": issuer.client_id,
                "challengeClaim": issuer.effective_challenge_claim,
                "spiffeTrustDomain": issuer.spiffe_trust_domain or "",
                "issuerType": str(issuer.type),
                "subjectDomain": issuer.subject_domain or "",
                "skipEmailVerification": bool(issuer.skip_email_verification),
            }
        )
    for meta in config.meta_issuers:
        t = meta.template
        issuers.append(
            {
                "wildcardIssuerUrl": meta.pattern,
                "audience": t.client_id,
                "challengeClaim": t.effective_challenge_claim,
                "spiffeTrustDomain": t.spiffe_trust_domain or "",
                "issuerType": str(t.type),
                "subjectDomain": t.subject_domain or "",
                "skipEmailVerification": bool(t.skip_email_verification),
            }
        )
    return web.json_response({"issuers": issuers})


def add_routes(app: web.Application) -> None:
    """Mount the Fulcio API on ``app``; ``app[CA]`` is set at start-up."""
    app.router.add_post("/api/v2/signingCert", _guard(signing_cert_v2))
    app.router.add_get("/api/v2/trustBundle", _guard(trust_bundle))
    app.router.add_get("/api/v2/configuration", _guard(configuration))
    app.router.add_post("/api/v1/signingCert", _guard(signing_cert_v1))
