"""Independent checks of TSA tokens, shared by the TSA tests.

Three verifiers that share no ASN.1 code with each other or with services/tsa:

- ``openssl ts -verify`` (Debian OpenSSL 3.0, C): CMS signature, chain to the root at a
  fixed time, imprint or data, nonce, ESS signingCertificateV2 certHash, TSA name, EKU.
- ``rfc3161-client`` (Rust DER parser + OpenSSL PKCS#7), what sigstore-python uses: status,
  signature at genTime, issuerAndSerialNumber, critical timeStamping EKU, nonce, policy.
- ``rfc3161ng`` (pyasn1): imprint, nonce, content type, messageDigest, and the signed
  attributes re-encoded by pyasn1's DER encoder (so our SET OF ordering must be right).

Plus sigstore-python's own ``Verifier._verify_signed_timestamp`` (trusted-root chain and
validFor window), and ``asn1crypto_rebuild``: a from-scratch asn1crypto encoding of a token's
values that must equal our hand-framed bytes.
"""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import rfc3161_client
import rfc3161ng
from asn1crypto import algos, cms, core, tsp
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sigstore.models import TrustedRoot
from sigstore.verify.verifier import Verifier
from sigstore_models.trustroot import v1 as trustroot_v1

SIGSTORE_POLICY = "1.3.6.1.4.1.57264.2"


def der_request(
    data: bytes,
    hash_name: str = "sha256",
    *,
    nonce: int | None = None,
    cert_req: bool = True,
    policy: str | None = None,
    digest: bytes | None = None,
    extensions: list[dict[str, Any]] | None = None,
) -> bytes:
    """A DER TimeStampReq built with asn1crypto."""
    req: dict[str, Any] = {
        "version": "v1",
        "message_imprint": {
            "hash_algorithm": {"algorithm": hash_name},
            "hashed_message": digest
            if digest is not None
            else hashlib.new(hash_name, data).digest(),
        },
        "cert_req": cert_req,
    }
    if nonce is not None:
        req["nonce"] = nonce
    if policy is not None:
        req["req_policy"] = policy
    if extensions is not None:
        req["extensions"] = extensions
    der: bytes = tsp.TimeStampReq(req).dump()
    return der


def json_request(data: bytes, hash_name: str = "sha256", **fields: Any) -> bytes:
    """The JSON request form, as sigstore-js sends it (plus any extra ``fields``)."""
    doc = {
        "artifactHash": base64.b64encode(hashlib.new(hash_name, data).digest()).decode(),
        "hashAlgorithm": hash_name,
        **fields,
    }
    return json.dumps(doc).encode()


def asn1crypto_parse_request(der: bytes) -> tuple[str, bytes, int | None, bool, str | None, int]:
    """The reference reading of a TimeStampReq, by asn1crypto's generic parser:
    (hash OID, digest, nonce, certReq, policy, number of extensions). Raises ValueError (or
    another exception from asn1crypto) when it cannot parse ``der``.
    """
    req = tsp.TimeStampReq.load(der, strict=True)
    imprint = req["message_imprint"]
    policy = req["req_policy"]
    nonce = req["nonce"]
    extensions = req["extensions"]
    digest = imprint["hashed_message"].native
    assert isinstance(digest, bytes)
    return (
        imprint["hash_algorithm"]["algorithm"].dotted,
        digest,
        None if isinstance(nonce, core.Void) else int(nonce.native),
        bool(req["cert_req"].native),
        None if isinstance(policy, core.Void) else policy.dotted,
        0 if isinstance(extensions, core.Void) else len(extensions),
    )


def _pem(certs: list[x509.Certificate]) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def openssl_verify(
    tmp: Path,
    resp: bytes,
    chain: list[x509.Certificate],
    at: datetime,
    *,
    data: bytes | None = None,
    digest: bytes | None = None,
) -> None:
    """``openssl ts -verify`` with the root as the only trust anchor, at time ``at``."""
    (tmp / "resp.der").write_bytes(resp)
    (tmp / "root.pem").write_bytes(_pem(chain[-1:]))
    (tmp / "untrusted.pem").write_bytes(_pem(chain[:-1]))
    args = ["openssl", "ts", "-verify", "-in", str(tmp / "resp.der")]
    if data is not None:
        (tmp / "data").write_bytes(data)
        args += ["-data", str(tmp / "data")]
    if digest is not None:
        args += ["-digest", digest.hex()]
    args += [
        "-CAfile",
        str(tmp / "root.pem"),
        "-untrusted",
        str(tmp / "untrusted.pem"),
        "-attime",
        str(int(at.timestamp())),
        "-x509_strict",
    ]
    out = subprocess.run(args, capture_output=True, text=True, check=False)
    if out.returncode != 0 or "Verification: OK" not in out.stdout:
        raise AssertionError(f"openssl ts -verify failed: {out.stdout}{out.stderr}")


def rfc3161_client_verify(
    resp: bytes,
    data: bytes,
    chain: list[x509.Certificate],
    *,
    nonce: int | None = None,
    policy: str = SIGSTORE_POLICY,
) -> rfc3161_client.TimeStampResponse:
    """rfc3161-client's verifier, configured as sigstore-python configures it plus nonce/policy."""
    decoded = rfc3161_client.decode_timestamp_response(resp)
    builder = (
        rfc3161_client.VerifierBuilder()
        .add_root_certificate(chain[-1])
        .tsa_certificate(chain[0])
        .policy_id(x509.ObjectIdentifier(policy))
    )
    for intermediate in chain[1:-1]:
        builder = builder.add_intermediate_certificate(intermediate)
    if nonce is not None:
        builder = builder.nonce(nonce)
    builder.build().verify_message(decoded, data)
    return decoded


class _EcdsaAsRsa:
    """rfc3161ng's ``check_timestamp`` knows only RSA: its last step is
    ``certificate.public_key().verify(sig, data, PKCS1v15(), hash)``. This stands in for the
    certificate so that every other step of its pipeline runs unchanged (token decoding,
    imprint, nonce, content type, messageDigest, the pyasn1 re-encoding of the signed
    attributes) and only that call becomes an ECDSA verification.
    """

    def __init__(self, cert: x509.Certificate) -> None:
        self._cert = cert

    def public_key(self) -> _EcdsaAsRsa:
        return self

    def verify(self, signature: bytes, data: bytes, _padding: object, algorithm: Any) -> None:
        key = self._cert.public_key()
        assert isinstance(key, ec.EllipticCurvePublicKey)
        key.verify(signature, data, ec.ECDSA(algorithm))


def rfc3161ng_verify(
    resp: bytes,
    data: bytes,
    leaf: x509.Certificate,
    hash_name: str,
    nonce: int | None,
    monkeypatch: pytest.MonkeyPatch,
) -> datetime:
    """rfc3161ng's ``check_timestamp`` (ECDSA adapter above); returns its reading of genTime."""
    token = tsp.TimeStampResp.load(resp)["time_stamp_token"].dump()
    monkeypatch.setattr(rfc3161ng.api, "load_certificate", lambda *_: _EcdsaAsRsa(leaf))
    assert rfc3161ng.check_timestamp(token, data=data, hashname=hash_name, nonce=nonce)
    # The same pipeline must refuse other data, or the check above proves nothing.
    with pytest.raises(ValueError, match="Message imprint mismatch"):
        rfc3161ng.check_timestamp(token, data=data + b"!", hashname=hash_name, nonce=nonce)
    gen_time: datetime = rfc3161ng.get_timestamp(token, naive=False)
    return gen_time


def sigstore_python_verify(
    resp: bytes, message: bytes, chain: list[x509.Certificate], valid_from: datetime
) -> datetime | None:
    """sigstore-python's ``Verifier._verify_signed_timestamp`` with a trusted root whose
    timestampAuthorities hold ``chain`` valid from ``valid_from``: the time it establishes, or
    None if it drops the token. The tlog and CA entries are inert placeholders that
    ``Verifier`` insists on; nothing here touches the network.
    """

    def b64(b: bytes) -> str:
        return base64.b64encode(b).decode()

    def der(c: x509.Certificate) -> str:
        return b64(c.public_bytes(serialization.Encoding.DER))

    start = valid_from.strftime("%Y-%m-%dT%H:%M:%SZ")
    log_key = ec.generate_private_key(ec.SECP256R1()).public_key()
    spki = log_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    root = {
        "mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1",
        "tlogs": [
            {
                "baseUrl": "http://127.0.0.1:9",
                "hashAlgorithm": "SHA2_256",
                "publicKey": {
                    "rawBytes": b64(spki),
                    "keyDetails": "PKIX_ECDSA_P256_SHA_256",
                    "validFor": {"start": "2020-01-01T00:00:00Z"},
                },
                "logId": {"keyId": b64(hashlib.sha256(spki).digest())},
            }
        ],
        "certificateAuthorities": [
            {
                "subject": {"organization": "placeholder", "commonName": "placeholder"},
                "uri": "http://127.0.0.1:9",
                "certChain": {"certificates": [{"rawBytes": der(chain[-1])}]},
                "validFor": {"start": "2020-01-01T00:00:00Z"},
            }
        ],
        "ctlogs": [],
        "timestampAuthorities": [
            {
                "subject": {"organization": "sigstead", "commonName": "sigstead TSA"},
                "uri": "http://127.0.0.1:9/api/v1/timestamp",
                "certChain": {"certificates": [{"rawBytes": der(c)} for c in chain]},
                "validFor": {"start": start},
            }
        ],
    }
    trusted_root = TrustedRoot(trustroot_v1.TrustedRoot.from_json(json.dumps(root)))
    verifier = Verifier(trusted_root=trusted_root)
    result = verifier._verify_signed_timestamp(
        rfc3161_client.decode_timestamp_response(resp), message
    )
    return None if result is None else result.time


def asn1crypto_rebuild(resp: bytes, chain: list[x509.Certificate], *, certs: int) -> bytes:
    """Encode a TimeStampResp from scratch with asn1crypto, from the values in ``resp``.

    Only what cannot be recomputed is read back from ``resp``: the serial, genTime, nonce,
    policy, imprint and the ECDSA signature. Everything else comes from the chain and the
    expected constants, so equal bytes mean our framing is exactly asn1crypto's DER.
    """
    token = tsp.TimeStampResp.load(resp)["time_stamp_token"]
    signed = token["content"]
    info = signed["encap_content_info"]["content"].parsed
    signer = signed["signer_infos"][0]
    ders = [c.public_bytes(serialization.Encoding.DER) for c in chain]
    leaf = asn1_x509.Certificate.load(ders[0])
    gen_time = info["gen_time"].native
    tst_values: dict[str, Any] = {
        "version": "v1",
        "policy": info["policy"].dotted,
        "message_imprint": {
            "hash_algorithm": {
                "algorithm": info["message_imprint"]["hash_algorithm"]["algorithm"].native,
                "parameters": core.Null(),
            },
            "hashed_message": info["message_imprint"]["hashed_message"].native,
        },
        "serial_number": info["serial_number"].native,
        "gen_time": gen_time,
        "accuracy": {"seconds": 1},
        "tsa": asn1_x509.GeneralName(name="directory_name", value=leaf.subject),
    }
    if info["nonce"].native is not None:
        tst_values["nonce"] = info["nonce"].native
    tst_der = tsp.TSTInfo(tst_values).dump()
    signer_hash = signer["digest_algorithm"]["algorithm"].native
    signing_time = (
        cms.Time(name="utc_time", value=gen_time)
        if gen_time.year < 2050
        else cms.Time(name="generalized_time", value=gen_time)
    )
    attrs = [
        cms.CMSAttribute({"type": "content_type", "values": ["tst_info"]}),
        cms.CMSAttribute(
            {"type": "message_digest", "values": [hashlib.new(signer_hash, tst_der).digest()]}
        ),
        cms.CMSAttribute({"type": "signing_time", "values": [signing_time]}),
        cms.CMSAttribute(
            {
                "type": "signing_certificate_v2",
                "values": [
                    {
                        "certs": [
                            {
                                "cert_hash": hashlib.sha256(ders[0]).digest(),
                                "issuer_serial": {
                                    "issuer": [
                                        asn1_x509.GeneralName(
                                            name="directory_name", value=leaf.issuer
                                        )
                                    ],
                                    "serial_number": leaf.serial_number,
                                },
                            }
                        ]
                    }
                ],
            }
        ),
    ]
    # asn1crypto keeps a SET OF in the given order, so DER order is imposed here.
    attrs.sort(key=lambda a: bytes(a.dump()))
    # RFC 5754 §2: generate SHA-2 AlgorithmIdentifiers in CMS with *absent* parameters.
    # asn1crypto forces NULL when it builds one, but keeps a loaded encoding as it is.
    oid = core.ObjectIdentifier(algos.DigestAlgorithmId(signer_hash).dotted).dump()
    digest_alg = algos.DigestAlgorithm.load(b"\x30" + bytes([len(oid)]) + oid)
    signed_data: dict[str, Any] = {
        "version": "v3",
        "digest_algorithms": [digest_alg],
        "encap_content_info": {
            "content_type": "tst_info",
            "content": core.ParsableOctetString(tst_der),
        },
        "signer_infos": [
            {
                "version": "v1",
                "sid": cms.SignerIdentifier(
                    name="issuer_and_serial_number",
                    value={"issuer": leaf.issuer, "serial_number": leaf.serial_number},
                ),
                "digest_algorithm": digest_alg,
                "signed_attrs": attrs,
                "signature_algorithm": {"algorithm": f"{signer_hash}_ecdsa"},
                "signature": signer["signature"].native,
            }
        ],
    }
    if certs:
        signed_data["certificates"] = [asn1_x509.Certificate.load(d) for d in sorted(ders[:certs])]
    rebuilt: bytes = tsp.TimeStampResp(
        {
            "status": {"status": "granted"},
            "time_stamp_token": {"content_type": "signed_data", "content": signed_data},
        }
    ).dump()
    return rebuilt
