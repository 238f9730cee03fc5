"""The OpenAPI 3.0 document of the HTTP APIs one process serves, at ``GET /api/openapi.json``.

It describes the wire formats the real clients use (Rekor v1 and v2, Fulcio v1 and v2, RFC
3161, RFC 6962) closely enough for a fuzzer to reach the handlers: the test suite runs
schemathesis against ``sigstead up`` and requires that no generated request gets a 5xx. Error
replies are documented by their shape: Rekor, Fulcio and rekor-tiles ``{code, message}``.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from aiohttp import web

__all__ = ["document", "serve"]

Schema = dict[str, Any]

_ERROR: Schema = {
    "type": "object",
    "properties": {"code": {"type": "integer"}, "message": {"type": "string"}},
}
_B64: Schema = {"type": "string", "format": "byte"}
_HEX64: Schema = {"type": "string", "pattern": "^[0-9a-fA-F]{64}$"}


def _json(schema: Schema) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": schema}}}


def _op(
    summary: str,
    ok: str,
    *,
    body: Schema | None = None,
    params: list[dict[str, Any]] | None = None,
    errors: Collection[int] = (400,),
    media: str = "application/json",
    reply: str = "application/json",
) -> dict[str, Any]:
    responses: dict[str, Any] = {ok: {"description": "success", "content": {reply: {}}}}
    for status in errors:
        responses[str(status)] = {"description": "refused", **_json(_ERROR)}
    op: dict[str, Any] = {"summary": summary, "responses": responses}
    if body is not None:
        op["requestBody"] = {"required": True, "content": {media: {"schema": body}}}
    if params:
        op["parameters"] = params
    return op


def _query(name: str, schema: Schema, *, required: bool = True) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": required, "schema": schema}


def _path(name: str, schema: Schema) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": schema}


_PROPOSED_ENTRY: Schema = {
    "type": "object",
    "required": ["kind", "apiVersion", "spec"],
    "properties": {
        "kind": {"type": "string", "enum": ["hashedrekord", "dsse", "intoto", "rekord"]},
        "apiVersion": {"type": "string", "enum": ["0.0.1", "0.0.2"]},
        "spec": {
            "type": "object",
            "properties": {
                "data": {
                    "type": "object",
                    "properties": {
                        "hash": {
                            "type": "object",
                            "properties": {
                                "algorithm": {"type": "string", "enum": ["sha256", "sha384"]},
                                "value": {"type": "string"},
                            },
                        }
                    },
                },
                "signature": {
                    "type": "object",
                    "properties": {
                        "content": _B64,
                        "publicKey": {"type": "object", "properties": {"content": _B64}},
                    },
                },
                "proposedContent": {
                    "type": "object",
                    "properties": {
                        "envelope": {"type": "string"},
                        "verifiers": {"type": "array", "items": _B64},
                    },
                },
                "content": {"type": "object"},
            },
        },
    },
}

_REKOR_V1: dict[str, Any] = {
    "/api/v1/log": {"get": _op("Rekor v1 log info (signed tree head)", "200", errors=(500,))},
    "/api/v1/log/publicKey": {"get": _op("the log's public key (PEM)", "200", errors=())},
    "/api/v1/log/checkpoint/witnessed": {
        "get": _op(
            "the newest checkpoint cosigned by a quorum of the witness policy",
            "200",
            errors=(404,),
            reply="text/plain",
        )
    },
    "/api/v1/log/proof": {
        "get": _op(
            "consistency proof between two tree sizes",
            "200",
            params=[
                _query("firstSize", {"type": "integer", "minimum": 0}, required=False),
                _query("lastSize", {"type": "integer", "minimum": 1}),
            ],
        )
    },
    "/api/v1/log/entries": {
        "post": _op("add an entry", "201", body=_PROPOSED_ENTRY, errors=(400, 409, 413, 422, 503)),
        "get": _op(
            "an entry by index",
            "200",
            params=[_query("logIndex", {"type": "integer", "minimum": 0})],
            errors=(400, 404),
        ),
    },
    "/api/v1/log/entries/{entryUUID}": {
        "get": _op(
            "an entry by UUID",
            "200",
            params=[_path("entryUUID", {"type": "string"})],
            errors=(400, 404),
        )
    },
    "/api/v1/log/entries/retrieve": {
        "post": _op(
            "entries by UUID, index or content",
            "200",
            body={
                "type": "object",
                "properties": {
                    "entryUUIDs": {"type": "array", "items": {"type": "string"}},
                    "logIndexes": {"type": "array", "items": {"type": "integer"}},
                    "entries": {"type": "array", "items": _PROPOSED_ENTRY},
                },
            },
            errors=(400, 422),
        )
    },
    "/api/v1/index/retrieve": {
        "post": _op(
            "entry UUIDs by artifact hash, email or public key",
            "200",
            body={
                "type": "object",
                "properties": {
                    "hash": {"type": "string"},
                    "email": {"type": "string"},
                    "operator": {"type": "string", "enum": ["and", "or"]},
                    "publicKey": {
                        "type": "object",
                        "properties": {
                            "format": {"type": "string", "enum": ["x509", "ssh", "pgp"]},
                            "content": _B64,
                        },
                    },
                },
            },
            errors=(400, 422),
        )
    },
}

_VERIFIER: Schema = {
    "type": "object",
    "properties": {
        "publicKey": {"type": "object", "properties": {"rawBytes": _B64}},
        "x509Certificate": {"type": "object", "properties": {"rawBytes": _B64}},
        "keyDetails": {"type": "string"},
    },
}

_REKOR_V2: dict[str, Any] = {
    "/api/v2/log/entries": {
        "post": _op(
            "add an entry (rekor-tiles CreateEntryRequest)",
            "201",
            body={
                "type": "object",
                "properties": {
                    "hashedRekordRequestV002": {
                        "type": "object",
                        "properties": {
                            "digest": _B64,
                            "signature": {
                                "type": "object",
                                "properties": {"content": _B64, "verifier": _VERIFIER},
                            },
                        },
                    },
                    "dsseRequestV002": {
                        "type": "object",
                        "properties": {
                            "envelope": {"type": "object"},
                            "verifiers": {"type": "array", "items": _VERIFIER},
                        },
                    },
                },
            },
            errors=(400, 405, 409, 413, 503),
        )
    },
    "/api/v2/checkpoint": {"get": _op("the C2SP checkpoint", "200", errors=(), reply="text/plain")},
    "/api/v2/checkpoint.witnessed": {
        "get": _op(
            "the newest checkpoint cosigned by a quorum of the witness policy",
            "200",
            errors=(404,),
            reply="text/plain",
        )
    },
    "/api/v2/tile/{level}/{index}": {
        "get": _op(
            "a C2SP tlog-tiles tile or entry bundle",
            "200",
            params=[_path("level", {"type": "string"}), _path("index", {"type": "string"})],
            errors=(404,),
            reply="application/octet-stream",
        )
    },
    "/api/v2/index/retrieve": {
        "post": _op(
            "entries of the v2 log by hash, email or key (a sigstead extension)",
            "200",
            body={"type": "object", "properties": {"hash": {"type": "string"}}},
            errors=(400, 422),
        )
    },
}

_CT: dict[str, Any] = {
    "/ct/v1/add-chain": {
        "post": _op(
            "log a certificate chain",
            "200",
            body={"type": "object", "properties": {"chain": {"type": "array", "items": _B64}}},
            errors=(400, 503),
        )
    },
    "/ct/v1/add-pre-chain": {
        "post": _op(
            "log a precertificate chain",
            "200",
            body={"type": "object", "properties": {"chain": {"type": "array", "items": _B64}}},
            errors=(400, 503),
        )
    },
    "/ct/v1/get-sth": {"get": _op("the signed tree head", "200", errors=())},
    "/ct/v1/get-sth-consistency": {
        "get": _op(
            "a consistency proof",
            "200",
            params=[
                _query("first", {"type": "integer"}),
                _query("second", {"type": "integer"}),
            ],
        )
    },
    "/ct/v1/get-proof-by-hash": {
        "get": _op(
            "an inclusion proof by leaf hash",
            "200",
            params=[_query("hash", _B64), _query("tree_size", {"type": "integer"})],
            errors=(400, 404),
        )
    },
    "/ct/v1/get-entries": {
        "get": _op(
            "entries by index range",
            "200",
            params=[_query("start", {"type": "integer"}), _query("end", {"type": "integer"})],
        )
    },
    "/ct/v1/get-roots": {"get": _op("the accepted roots", "200", errors=())},
}

_SIGNING_CERT_V2: Schema = {
    "type": "object",
    "properties": {
        "credentials": {
            "type": "object",
            "properties": {"oidcIdentityToken": {"type": "string"}},
        },
        "publicKeyRequest": {
            "type": "object",
            "properties": {
                "publicKey": {
                    "type": "object",
                    "properties": {"algorithm": {"type": "string"}, "content": {"type": "string"}},
                },
                "proofOfPossession": _B64,
            },
        },
        "certificateSigningRequest": _B64,
    },
}

_CA: dict[str, Any] = {
    "/api/v2/signingCert": {
        "post": _op(
            "a short-lived certificate for an OIDC identity (Fulcio v2)",
            "200",
            body=_SIGNING_CERT_V2,
            errors=(400, 401, 403, 503),
        )
    },
    "/api/v1/signingCert": {
        "post": _op(
            "a short-lived certificate for an OIDC identity (Fulcio v1)",
            "201",
            body={
                "type": "object",
                "properties": {
                    "publicKey": {
                        "type": "object",
                        "properties": {"algorithm": {"type": "string"}, "content": _B64},
                    },
                    "signedEmailAddress": _B64,
                },
            },
            errors=(400, 401, 403, 503),
        )
    },
    "/api/v2/trustBundle": {"get": _op("the CA chains", "200", errors=())},
    "/api/v2/configuration": {"get": _op("the accepted OIDC issuers", "200", errors=())},
}

_TSA: dict[str, Any] = {
    "/api/v1/timestamp": {
        "post": _op(
            "an RFC 3161 timestamp",
            "200",
            body={"type": "string", "format": "binary"},
            media="application/timestamp-query",
            errors=(400, 413, 415),
            reply="application/timestamp-reply",
        )
    },
    "/api/v1/timestamp/certchain": {
        "get": _op(
            "the TSA chain (PEM)", "200", errors=(), reply="application/pem-certificate-chain"
        )
    },
}

_COMMON: dict[str, Any] = {
    "/healthz": {"get": _op("alive", "200", errors=(503,), reply="text/plain")},
    "/readyz": {"get": _op("ready for load", "200", errors=(503,), reply="text/plain")},
}


def document(components: Collection[str], public_url: str) -> dict[str, Any]:
    """The OpenAPI document for a process serving ``components`` (log, ca, tsa, trust)."""
    paths: dict[str, Any] = dict(_COMMON)
    if "log" in components:
        paths |= _REKOR_V1 | _REKOR_V2
    if "ca" in components:
        paths |= _CA | _CT
    if "tsa" in components:
        paths |= _TSA
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "sigstead",
            "version": "1",
            "description": "Rekor v1 and v2, Fulcio, RFC 6962 CT, RFC 3161: the wire formats the "
            "sigstore clients use, as this sigstead serves them.",
        },
        "servers": [{"url": public_url}],
        "paths": paths,
    }


def serve(app: web.Application, components: Collection[str], public_url: str) -> None:
    """Add ``GET /api/openapi.json`` to ``app``."""
    body = document(components, public_url)

    async def handler(_request: web.Request) -> web.Response:
        return web.json_response(body)

    app.router.add_get("/api/openapi.json", handler)
