"""Ready-to-edit client configuration for one sigstead, derived only from its trust documents.

``snippets`` turns a trusted root and a signing config into the files an operator hands to
consumers: PEM files, a cosign v3 shell helper, a Kyverno ``ClusterPolicy``, a sigstore
policy-controller ``TrustRoot`` + ``ClusterImagePolicy``, a Tekton Chains ``chains-config`` and a
README. Field names were checked against each project's API types (cited in each file's header).

Invariants:

- Every key and certificate comes from the trusted root's ``rawBytes`` and is re-encoded through
  pyca/cryptography, so a snippet can never carry material the root does not (a malformed entry
  raises ``ValueError`` instead of producing a file). A log's ``logId`` must be SHA-256 of its
  key, because Kyverno and policy-controller recompute the ID from the PEM and would otherwise
  silently fail to match any entry.
- The service URLs come from the documents too (trusted-root ``baseUrl``/``uri`` for verifiers,
  signing-config URLs for signers); ``Endpoints`` only supplies the TUF mirror, which neither
  document names.
- Which entries are offered: an entry whose ``validFor.end`` is set is retired. Signing and every
  single-valued field (a PEM file, Kyverno's one ``pubkey``, cosign's ``SIGSTORE_*`` variables,
  Tekton Chains) use the *current* entry only: those consumers read one key or one chain, so an
  appended retired key would be ignored or rejected, and new signatures must never be made
  against retired material. Where a verifier can hold several entries (policy-controller's
  lists, Kyverno's ``roots`` pool) retired entries are kept after the current ones, because a
  rotation does not invalidate what the old key signed and the trusted root itself still lists
  them. Retired keys and chains are also written to ``pem/retired/`` for single-key consumers
  that must verify old signatures.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import hashlib
import shlex
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from services.trust.documents import Endpoints

__all__ = [
    "IDENTITY_PLACEHOLDER",
    "IMAGE_PATTERN_PLACEHOLDER",
    "ISSUER_PLACEHOLDER",
    "SLSA_PROVENANCE_V1",
    "TRUST_ROOT_NAME",
    "snippets",
]

IDENTITY_PLACEHOLDER = "REPLACE-WITH-SIGNER-IDENTITY"
ISSUER_PLACEHOLDER = "REPLACE-WITH-OIDC-ISSUER"
# Lower case and a syntactically valid image pattern, so a policy applied unedited matches
# nothing real instead of being rejected or, worse, matching every image in the cluster.
IMAGE_PATTERN_PLACEHOLDER = "registry.example.com/replace-with-your-repository/*"
SLSA_PROVENANCE_V1 = "https://slsa.dev/provenance/v1"
TRUST_ROOT_NAME = "sigstead"
# Where cosign's "filesystem" OIDC provider (and so Tekton Chains' default) looks for a token.
CHAINS_TOKEN_FILE = "/var/run/sigstore/cosign/oidc-token"  # noqa: S105 (a path, no secret)

_RETIRED_DIR = "pem/retired"
_COMMENT_WIDTH = 98


# --- reading the documents ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Log:
    """A Rekor or CT log entry of the trusted root."""

    url: str
    spki: bytes
    log_id: bytes
    start: datetime.datetime
    retired: bool

    @property
    def pem(self) -> str:
        key = serialization.load_der_public_key(self.spki)
        return key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode()

    @property
    def tag(self) -> str:
        return self.log_id[:4].hex()


@dataclass(frozen=True, slots=True)
class _Authority:
    """A CA or TSA entry of the trusted root: its chain in document order (leaf/issuer → root)."""

    uri: str
    organization: str
    common_name: str
    chain: tuple[bytes, ...]
    start: datetime.datetime
    retired: bool

    @property
    def pem(self) -> str:
        return "".join(
            x509.load_der_x509_certificate(der).public_bytes(serialization.Encoding.PEM).decode()
            for der in self.chain
        )

    @property
    def tag(self) -> str:
        return hashlib.sha256(self.chain[0]).digest()[:4].hex()


_Entry = TypeVar("_Entry", _Log, _Authority)


def _bytes(value: Any, what: str) -> bytes:
    try:
        return base64.b64decode(str(value), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"{what} is not base64") from exc


def _start(validity: Mapping[str, Any], what: str) -> datetime.datetime:
    try:
        return datetime.datetime.fromisoformat(str(validity["start"]))
    except (KeyError, ValueError) as exc:
        raise ValueError(f"{what} has no valid validFor.start") from exc


def _current_first(entries: list[_Entry]) -> tuple[_Entry, ...]:
    # Current entries before retired ones, newest first within each group: index 0 is then the
    # one a single-valued consumer gets, and lists keep a stable, meaningful order.
    return tuple(sorted(entries, key=lambda e: (e.retired, -e.start.timestamp())))


def _logs(root: Mapping[str, Any], section: str) -> tuple[_Log, ...]:
    logs = []
    for i, entry in enumerate(root.get(section) or ()):
        what = f"{section}[{i}]"
        key = entry["publicKey"]
        spki = _bytes(key["rawBytes"], f"{what}.publicKey.rawBytes")
        log_id = _bytes(entry["logId"]["keyId"], f"{what}.logId.keyId")
        if hashlib.sha256(spki).digest() != log_id:
            raise ValueError(f"{what}.logId.keyId is not SHA-256 of its public key")
        validity = key.get("validFor") or {}
        logs.append(
            _Log(str(entry["baseUrl"]), spki, log_id, _start(validity, what), "end" in validity)
        )
    return _current_first(logs)


def _authorities(root: Mapping[str, Any], section: str) -> tuple[_Authority, ...]:
    authorities = []
    for i, entry in enumerate(root.get(section) or ()):
        what = f"{section}[{i}]"
        chain = tuple(
            _bytes(cert["rawBytes"], f"{what}.certChain.certificates[{j}].rawBytes")
            for j, cert in enumerate(entry["certChain"]["certificates"])
        )
        if not chain:
            raise ValueError(f"{what} has an empty certificate chain")
        subject = entry.get("subject") or {}
        validity = entry.get("validFor") or {}
        authorities.append(
            _Authority(
                uri=str(entry["uri"]),
                organization=str(subject.get("organization", "")),
                common_name=str(subject.get("commonName", "")),
                chain=chain,
                start=_start(validity, what),
                retired="end" in validity,
            )
        )
    return _current_first(authorities)


def _current(entries: Sequence[_Entry], what: str) -> _Entry:
    if not entries or entries[0].retired:
        raise ValueError(f"the trusted root has no current {what}")
    return entries[0]


def _service_url(config: Mapping[str, Any], section: str) -> str | None:
    """The current v1 service of a signing-config section (sigstead signs on Rekor v1)."""
    for service in config.get(section) or ():
        if service.get("majorApiVersion") == 1 and "end" not in (service.get("validFor") or {}):
            return str(service["url"])
    return None


@dataclass(frozen=True, slots=True)
class _Trust:
    tlogs: tuple[_Log, ...]
    ctlogs: tuple[_Log, ...]
    cas: tuple[_Authority, ...]
    tsas: tuple[_Authority, ...]
    rekor: _Log
    ct: _Log
    ca: _Authority
    tsa: _Authority | None
    ca_url: str
    rekor_url: str
    tsa_url: str | None


def _read(root: Mapping[str, Any], config: Mapping[str, Any]) -> _Trust:
    tlogs, ctlogs = _logs(root, "tlogs"), _logs(root, "ctlogs")
    cas = _authorities(root, "certificateAuthorities")
    tsas = _authorities(root, "timestampAuthorities")
    rekor, ct, ca = _current(tlogs, "tlog"), _current(ctlogs, "ctlog"), _current(cas, "CA")
    tsa = tsas[0] if tsas and not tsas[0].retired else None
    return _Trust(
        tlogs=tlogs,
        ctlogs=ctlogs,
        cas=cas,
        tsas=tsas,
        rekor=rekor,
        ct=ct,
        ca=ca,
        tsa=tsa,
        ca_url=_service_url(config, "caUrls") or ca.uri,
        rekor_url=_service_url(config, "rekorTlogUrls") or rekor.url,
        tsa_url=_service_url(config, "tsaUrls") or (tsa.uri if tsa else None),
    )


# --- YAML -------------------------------------------------------------------------------------


class _Dumper(yaml.SafeDumper):
    """Safe YAML with PEM (any multi-line string) as a literal block, as people paste it."""

    def ignore_aliases(self, data: Any) -> bool:
        # A structure used twice (the attestors) is written out twice: anchors and aliases are
        # valid YAML but surprise readers and some Kubernetes tooling.
        return True


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _represent_str)


def _yaml(document: Mapping[str, Any]) -> str:
    # A huge width keeps base64 on one line: folded it is still valid YAML but hard to diff.
    return yaml.dump(document, Dumper=_Dumper, sort_keys=False, width=1 << 20)


def _comment(text: str, *, wrap: bool = True) -> str:
    """``text`` as YAML/shell comment lines. With ``wrap``, a paragraph (lines continuing at its
    indent, up to a blank line or a bullet) is refilled to the width, bullets hanging."""
    paragraphs: list[tuple[str, str]] = []  # (text, indent of its continuation lines)
    for line in text.strip("\n").splitlines():
        stripped = line.lstrip()
        indent = len(line) - len(stripped)
        if (
            wrap
            and paragraphs
            and stripped
            and not stripped.startswith("- ")
            and paragraphs[-1][0].strip()
            and indent == len(paragraphs[-1][1])
        ):
            joined, hanging = paragraphs[-1]
            paragraphs[-1] = (f"{joined} {stripped}", hanging)
            continue
        paragraphs.append((line, " " * (indent + 2 if stripped.startswith("- ") else indent)))
    out = []
    for paragraph, hanging in paragraphs:
        lines = [paragraph]
        if wrap and len(paragraph) > _COMMENT_WIDTH:
            lines = textwrap.wrap(
                paragraph, _COMMENT_WIDTH, subsequent_indent=hanging, break_on_hyphens=False
            )
        out += [f"# {part}".rstrip() + "\n" for part in lines]
    return "".join(out)


def _b64_text(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


# --- the snippets -----------------------------------------------------------------------------


def _placeholders(identity: str | None, issuer: str | None) -> str:
    notes = []
    if identity is None:
        notes.append(
            f"{IDENTITY_PLACEHOLDER}: the signer identity exactly as it appears in the signing "
            "certificate's SAN (an e-mail address or a URI such as a CI workflow or a "
            "Kubernetes service account)."
        )
    if issuer is None:
        notes.append(
            f"{ISSUER_PLACEHOLDER}: the OIDC issuer URL of that identity's token (its `iss` claim)."
        )
    notes.append(
        f"{IMAGE_PATTERN_PLACEHOLDER}: the images this policy applies to (never `*` unless "
        "every image in the cluster, system ones included, is signed this way)."
    )
    return _comment("Replace before use:\n" + "\n".join(f"- {n}" for n in notes))


def _kyverno(trust: _Trust, identity: str, issuer: str, placeholders: str) -> str:
    # A pool, not a chain: Kyverno loads `roots` into an x509.CertPool, so retired CA chains can
    # sit beside the current one and certificates they issued before a rotation still verify.
    roots = "".join(ca.pem for ca in trust.cas)
    ctlog: dict[str, Any] = {"pubkey": trust.ct.pem}
    if trust.tsa is not None:
        ctlog["tsaCertChain"] = trust.tsa.pem
    keyless = {
        "subject": identity,
        "issuer": issuer,
        "roots": roots,
        "rekor": {"url": trust.rekor.url, "pubkey": trust.rekor.pem},
        "ctlog": ctlog,
    }
    attestors = [{"entries": [{"keyless": keyless}]}]
    policy = {
        "apiVersion": "kyverno.io/v1",
        "kind": "ClusterPolicy",
        "metadata": {"name": "sigstead-verify-images"},
        "spec": {
            # Verification may search Rekor online; the 10 s default is tight for that.
            "webhookTimeoutSeconds": 30,
            "background": False,
            "rules": [
                {
                    "name": "sigstead-signature-and-slsa-provenance",
                    "match": {"any": [{"resources": {"kinds": ["Pod"]}}]},
                    "verifyImages": [
                        {
                            "imageReferences": [IMAGE_PATTERN_PLACEHOLDER],
                            "failureAction": "Enforce",
                            "attestors": attestors,
                            "attestations": [{"type": SLSA_PROVENANCE_V1, "attestors": attestors}],
                        }
                    ],
                }
            ],
        },
    }
    header = f"""
Kyverno ClusterPolicy: admit Pods only when their images carry a keyless signature and an SLSA v1
provenance attestation (predicate type {SLSA_PROVENANCE_V1}) made through the sigstead at
{trust.rekor.url}.

Field names: kyverno/kyverno api/kyverno/v1/image_verification_types.go (KeylessAttestor
subject/issuer/roots/rekor/ctlog; Rekor url/pubkey; CTLog pubkey/tsaCertChain; Attestation type,
which replaced the deprecated predicateType). `failureAction` per verifyImages entry is Kyverno
1.13+; older releases take `spec.validationFailureAction: Enforce` instead.

- roots: the Fulcio-compatible CA chain(s), PEM; retired chains included so that images signed
  before a CA rotation still verify.
- rekor.pubkey / ctlog.pubkey: one key each, so only the current key; after a rotation, add a
  second attestor entry with the key from pem/retired/ (and `count: 1`) for older signatures.
- ctlog.tsaCertChain: newer Kyverno then requires an RFC 3161 timestamp on each signature; cosign
  v3 signing with signing_config.v0.2.json adds one. Remove it if you sign without the TSA.
- cosign v3 stores signatures as Sigstore bundles (OCI referrers) by default; see
  docs/consumers.md for the signing flags this Kyverno version needs.
"""
    return _comment(header) + placeholders + _yaml(policy)


def _trust_root_keys(trust: _Trust) -> dict[str, Any]:
    def authority(entry: _Authority) -> dict[str, Any]:
        return {
            "subject": {"organization": entry.organization, "commonName": entry.common_name},
            "uri": entry.uri,
            "certChain": _b64_text(entry.pem),
        }

    def log(entry: _Log) -> dict[str, Any]:
        return {"baseURL": entry.url, "hashAlgorithm": "sha256", "publicKey": _b64_text(entry.pem)}

    keys: dict[str, Any] = {
        "certificateAuthorities": [authority(ca) for ca in trust.cas],
        "tLogs": [log(t) for t in trust.tlogs],
        "ctLogs": [log(c) for c in trust.ctlogs],
    }
    if trust.tsas:
        keys["timestampAuthorities"] = [authority(t) for t in trust.tsas]
    return keys


def _policy_controller(
    trust: _Trust,
    endpoints: Endpoints,
    identity: str,
    issuer: str,
    placeholders: str,
    tuf_root: bytes | None,
) -> str:
    trust_root = {
        "apiVersion": "policy.sigstore.dev/v1alpha1",
        "kind": "TrustRoot",
        "metadata": {"name": TRUST_ROOT_NAME},
        "spec": {"sigstoreKeys": _trust_root_keys(trust)},
    }
    authority: dict[str, Any] = {
        "name": "sigstead",
        "keyless": {
            "url": trust.ca.uri,
            "identities": [{"issuer": issuer, "subject": identity}],
            "trustRootRef": TRUST_ROOT_NAME,
        },
        # Despite its name this is the Rekor (transparency log) URL (clients.md §6.4).
        "ctlog": {"url": trust.rekor.url, "trustRootRef": TRUST_ROOT_NAME},
    }
    if trust.tsas:
        authority["rfc3161timestamp"] = {"trustRootRef": TRUST_ROOT_NAME}
    authority["attestations"] = [
        {
            "name": "slsa-provenance",
            "predicateType": SLSA_PROVENANCE_V1,
            "policy": {"type": "cue", "data": f'predicateType: "{SLSA_PROVENANCE_V1}"\n'},
        }
    ]
    policy = {
        "apiVersion": "policy.sigstore.dev/v1beta1",
        "kind": "ClusterImagePolicy",
        "metadata": {"name": "sigstead-keyless"},
        "spec": {"images": [{"glob": IMAGE_PATTERN_PLACEHOLDER}], "authorities": [authority]},
    }
    header = """
sigstore policy-controller: a TrustRoot holding this sigstead's keys and a ClusterImagePolicy that
requires a keyless signature and an SLSA v1 provenance attestation made through it.

Verified in sigstore/policy-controller:
- pkg/apis/policy/v1alpha1/trustroot_types.go: CertificateAuthority.CertChain and
  TransparencyLogInstance.PublicKey are []byte, so the YAML carries base64 of the PEM text (not
  the PEM itself); Remote.Root is []byte too (base64 of root.json).
- pkg/apis/config/sigstore_keys.go (ConvertTransparencyLogInstance): hashAlgorithm is "sha256";
  the log ID is recomputed from the key; validFor is not carried over, so a retired entry listed
  here is trusted without its end date. Retired entries are kept because signatures made before
  a rotation stay valid; delete an entry outright if its key was compromised.
- pkg/apis/policy/v1beta1/clusterimagepolicy_types.go: Authority keyless{url, identities,
  trustRootRef, insecureIgnoreSCT}, ctlog{url, trustRootRef}, rfc3161timestamp{trustRootRef},
  attestations[{name, predicateType, policy}].
"""
    out = _comment(header) + placeholders + _yaml(trust_root) + "---\n" + _yaml(policy)
    if tuf_root is not None:
        remote = {
            "apiVersion": "policy.sigstore.dev/v1alpha1",
            "kind": "TrustRoot",
            "metadata": {"name": TRUST_ROOT_NAME},
            "spec": {
                "remote": {
                    "mirror": endpoints.tuf,
                    "root": base64.b64encode(tuf_root).decode(),
                }
            },
        }
        note = f"""
Alternative TrustRoot (use it instead of the one above, same name): follow the TUF mirror, so
key rotations arrive without editing this resource. `root` is base64 of tuf/root.json, the
repository's initial root of trust; the controller must reach {endpoints.tuf}.
---
"""
        # Unwrapped: uncommenting these lines must give back exactly the YAML document.
        out += "\n" + _comment(note) + _comment(_yaml(remote), wrap=False)
    return out


def _tekton_chains(trust: _Trust, endpoints: Endpoints, issuer: str) -> str:
    # ConfigMap values must be strings; safe_dump quotes "true" so it stays one.
    data = {
        "artifacts.taskrun.format": "slsa/v1",
        "artifacts.taskrun.signer": "x509",
        "artifacts.pipelinerun.format": "slsa/v1",
        "artifacts.pipelinerun.signer": "x509",
        "artifacts.oci.signer": "x509",
        "transparency.enabled": "true",
        "transparency.url": trust.rekor_url,
        "signers.x509.fulcio.enabled": "true",
        "signers.x509.fulcio.address": trust.ca_url,
        "signers.x509.fulcio.issuer": issuer,
        "signers.x509.fulcio.provider": "filesystem",
        "signers.x509.identity.token.file": CHAINS_TOKEN_FILE,
        "signers.x509.tuf.mirror.url": endpoints.tuf,
    }
    config_map = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "chains-config", "namespace": "tekton-chains"},
        "data": data,
    }
    header = f"""
Tekton Chains: sign TaskRun/PipelineRun provenance (slsa/v1, an alias of in-toto) and OCI images
keylessly through this sigstead, and record them in its Rekor v1 log.

Keys checked against tektoncd/chains docs/config.md. Merge it into the installed chains-config,
keeping its other keys:
  kubectl -n tekton-chains patch configmap chains-config --type merge \\
      --patch-file tekton-chains.yaml
- signers.x509.identity.token.file: mount a projected ServiceAccount token with audience
  "sigstore" in the chains controller at {CHAINS_TOKEN_FILE}.
  Its issuer is the cluster's service-account issuer, which the sigstead CA must accept (its
  OIDC config).
- signers.x509.fulcio.issuer: that token's `iss`.
- signers.x509.tuf.mirror.url: Chains fetches <url>/root.json as its initial root of trust, over
  plain HTTP if the URL is http://: serve it over TLS or on a trusted network.
"""
    notes = ""
    if issuer == ISSUER_PLACEHOLDER:
        notes = _comment(f"Replace before use:\n- {ISSUER_PLACEHOLDER}: the token's issuer URL.")
    return _comment(header) + notes + _yaml(config_map)


def _cosign_sh(trust: _Trust, endpoints: Endpoints, identity: str, issuer: str) -> str:
    q = shlex.quote
    tsa_env = (
        '  export SIGSTORE_TSA_CERTIFICATE_FILE="$SIGSTEAD_SNIPPETS_DIR/pem/tsa-chain.pem"\n'
        if trust.tsa is not None
        else ""
    )
    tsa_flag = (
        f"      --timestamp-server-url {q(trust.tsa_url)} \\\n" if trust.tsa_url is not None else ""
    )
    placeholder_note = ""
    if identity == IDENTITY_PLACEHOLDER or issuer == ISSUER_PLACEHOLDER:
        placeholder_note = f"""
# {IDENTITY_PLACEHOLDER} / {ISSUER_PLACEHOLDER}: placeholders that match nothing.
# Before verifying, set SIGSTEAD_IDENTITY (the signer's SAN: an e-mail address or a URI) and
# SIGSTEAD_ISSUER (the `iss` of the signer's OIDC token).
"""
    return f"""#!/usr/bin/env bash
# cosign v3 against the sigstead at {trust.rekor.url}
# (Rekor v1 transparency log, Fulcio-compatible CA with CT log, RFC 3161 TSA).
#
# Running or sourcing this file only defines shell functions; nothing is signed, uploaded or
# changed until you call one. Use:
#   . snippets/cosign.sh
#   export SIGSTEAD_ID_TOKEN=/path/to/token   # for signing: a file holding an OIDC token
#                                              # (a token given by value shows in `ps`)
#   sigstead_sign_blob ./artifact.tgz && sigstead_verify_blob ./artifact.tgz
#
# Paths are relative to the export directory (trusted_root.json, signing_config.v0.2.json,
# tuf/), by default the parent of this file's directory; override with SIGSTEAD_EXPORT_DIR.
#
# Rekor v1: verification uses the log's signed entry timestamp (integrated time), so no
# --use-signed-timestamps is needed (that flag is for Rekor v2). Signing with the signing config
# also adds an RFC 3161 timestamp from the sigstead TSA.
{placeholder_note}
SIGSTEAD_SNIPPETS_DIR="$(cd -- "$(dirname -- "${{BASH_SOURCE[0]}}")" && pwd)"
if [[ -z "${{SIGSTEAD_EXPORT_DIR:-}}" ]]; then
  SIGSTEAD_EXPORT_DIR="$(dirname -- "$SIGSTEAD_SNIPPETS_DIR")"
fi
if [[ -z "${{SIGSTEAD_IDENTITY:-}}" ]]; then
  SIGSTEAD_IDENTITY={q(identity)}
fi
if [[ -z "${{SIGSTEAD_ISSUER:-}}" ]]; then
  SIGSTEAD_ISSUER={q(issuer)}
fi
SIGSTEAD_TUF_MIRROR={q(endpoints.tuf)}
SIGSTEAD_SLSA_PROVENANCE={q(SLSA_PROVENANCE_V1)}

_sigstead_token() {{
  printf '%s' "${{SIGSTEAD_ID_TOKEN:?set SIGSTEAD_ID_TOKEN to an OIDC token or a file holding one}}"
}}

# Sign a file; the Sigstore bundle (certificate, signature, Rekor entry, timestamp) goes to
# FILE.sigstore.json unless BUNDLE is given. cosign v3 requires --bundle for sign-blob.
sigstead_sign_blob() {{  # FILE [BUNDLE]
  local file="${{1:?usage: sigstead_sign_blob FILE [BUNDLE]}}" token
  local bundle="${{2:-$1.sigstore.json}}"
  token="$(_sigstead_token)" || return
  cosign sign-blob \\
    --signing-config "$SIGSTEAD_EXPORT_DIR/signing_config.v0.2.json" \\
    --trusted-root "$SIGSTEAD_EXPORT_DIR/trusted_root.json" \\
    --identity-token "$token" \\
    --bundle "$bundle" --yes "$file"
}}

sigstead_verify_blob() {{  # FILE [BUNDLE]
  local file="${{1:?usage: sigstead_verify_blob FILE [BUNDLE]}}"
  local bundle="${{2:-$1.sigstore.json}}"
  cosign verify-blob \\
    --trusted-root "$SIGSTEAD_EXPORT_DIR/trusted_root.json" \\
    --bundle "$bundle" \\
    --certificate-identity "$SIGSTEAD_IDENTITY" \\
    --certificate-oidc-issuer "$SIGSTEAD_ISSUER" \\
    "$file"
}}

# Images: pass IMAGE by digest (registry/repo@sha256:...), so the signature covers what runs.
sigstead_sign_image() {{  # IMAGE
  local image="${{1:?usage: sigstead_sign_image IMAGE@DIGEST}}" token
  token="$(_sigstead_token)" || return
  cosign sign \\
    --signing-config "$SIGSTEAD_EXPORT_DIR/signing_config.v0.2.json" \\
    --trusted-root "$SIGSTEAD_EXPORT_DIR/trusted_root.json" \\
    --identity-token "$token" \\
    --yes "$image"
}}

sigstead_verify_image() {{  # IMAGE
  local image="${{1:?usage: sigstead_verify_image IMAGE}}"
  cosign verify \\
    --trusted-root "$SIGSTEAD_EXPORT_DIR/trusted_root.json" \\
    --certificate-identity "$SIGSTEAD_IDENTITY" \\
    --certificate-oidc-issuer "$SIGSTEAD_ISSUER" \\
    "$image"
}}

# Attach an SLSA v1 provenance predicate (a JSON file) to an image as a signed attestation.
sigstead_attest_image() {{  # IMAGE PREDICATE.json
  local image="${{1:?usage: sigstead_attest_image IMAGE@DIGEST PREDICATE.json}}"
  local predicate="${{2:?usage: sigstead_attest_image IMAGE@DIGEST PREDICATE.json}}" token
  token="$(_sigstead_token)" || return
  cosign attest \\
    --signing-config "$SIGSTEAD_EXPORT_DIR/signing_config.v0.2.json" \\
    --trusted-root "$SIGSTEAD_EXPORT_DIR/trusted_root.json" \\
    --identity-token "$token" \\
    --type "$SIGSTEAD_SLSA_PROVENANCE" --predicate "$predicate" \\
    --yes "$image"
}}

sigstead_verify_attestation() {{  # IMAGE
  local image="${{1:?usage: sigstead_verify_attestation IMAGE}}"
  cosign verify-attestation \\
    --trusted-root "$SIGSTEAD_EXPORT_DIR/trusted_root.json" \\
    --type "$SIGSTEAD_SLSA_PROVENANCE" \\
    --certificate-identity "$SIGSTEAD_IDENTITY" \\
    --certificate-oidc-issuer "$SIGSTEAD_ISSUER" \\
    "$image"
}}

# The TUF path: point cosign's TUF client at the sigstead mirror once; afterwards sign and verify
# need neither --signing-config nor --trusted-root (cosign reads both from its TUF cache), and
# key rotations arrive automatically. This writes into TUF_ROOT (default ~/.sigstore/root) and
# replaces the public-good Sigstore trust there: set TUF_ROOT to a separate directory first if
# this user also verifies public-good signatures.
sigstead_tuf_initialize() {{
  cosign initialize --mirror "$SIGSTEAD_TUF_MIRROR" --root "$SIGSTEAD_EXPORT_DIR/tuf/root.json"
}}

# Legacy trust: the SIGSTORE_* variables point at the PEM files (current keys only: each variable
# holds one key or chain). Setting any of them puts cosign in legacy mode: it skips the TUF and
# --trusted-root material (verify/common.go SetTrustedMaterial), and validity windows from the
# trusted root no longer apply. Prefer --trusted-root; use this for tools that only read them.
sigstead_legacy_env() {{
  export SIGSTORE_ROOT_FILE="$SIGSTEAD_SNIPPETS_DIR/pem/fulcio-chain.pem"
  export SIGSTORE_REKOR_PUBLIC_KEY="$SIGSTEAD_SNIPPETS_DIR/pem/rekor.pub"
  export SIGSTORE_CT_LOG_PUBLIC_KEY_FILE="$SIGSTEAD_SNIPPETS_DIR/pem/ctlog.pub"
{tsa_env}}}

sigstead_legacy_env_unset() {{
  unset SIGSTORE_ROOT_FILE SIGSTORE_REKOR_PUBLIC_KEY SIGSTORE_CT_LOG_PUBLIC_KEY_FILE \\
    SIGSTORE_TSA_CERTIFICATE_FILE
}}

# Sign an image in the legacy `.sig` tag layout for admission controllers that do not read
# Sigstore bundles from OCI referrers. This leaves the signing-config path, so the service URLs
# are given explicitly (deprecated flags, still accepted with --use-signing-config=false); check
# `cosign sign --help` of your cosign version.
sigstead_sign_image_legacy() {{  # IMAGE
  local image="${{1:?usage: sigstead_sign_image_legacy IMAGE@DIGEST}}" token
  token="$(_sigstead_token)" || return
  (
    sigstead_legacy_env
    cosign sign --use-signing-config=false --new-bundle-format=false \\
      --fulcio-url {q(trust.ca_url)} \\
      --rekor-url {q(trust.rekor_url)} \\
{tsa_flag}      --identity-token "$token" \\
      --yes "$image"
  )
}}

sigstead_help() {{
  cat <<'EOF'
Source this file, then call one of:
  sigstead_sign_blob FILE [BUNDLE]          sigstead_verify_blob FILE [BUNDLE]
  sigstead_sign_image IMAGE@DIGEST          sigstead_verify_image IMAGE
  sigstead_attest_image IMAGE@DIGEST PRED   sigstead_verify_attestation IMAGE
  sigstead_tuf_initialize                   sigstead_legacy_env / sigstead_legacy_env_unset
  sigstead_sign_image_legacy IMAGE@DIGEST
Signing needs SIGSTEAD_ID_TOKEN; verification uses SIGSTEAD_IDENTITY and SIGSTEAD_ISSUER.
EOF
}}

if [[ "${{BASH_SOURCE[0]}}" == "$0" ]]; then
  sigstead_help
fi
"""


def _readme(files: Sequence[str], trust: _Trust) -> str:
    entries = [
        "`pem/fulcio-chain.pem`: the certificate authority's chain, issuing certificate first, "
        "root last (for `SIGSTORE_ROOT_FILE`, Kyverno `roots`, or any tool that wants the CA in "
        "PEM).",
        "`pem/rekor.pub`: the Rekor v1 transparency log's public key "
        "(`SIGSTORE_REKOR_PUBLIC_KEY`).",
        "`pem/ctlog.pub`: the certificate transparency log's key, which signs the SCTs embedded "
        "in signing certificates (`SIGSTORE_CT_LOG_PUBLIC_KEY_FILE`).",
    ]
    if trust.tsa is not None:
        entries.append(
            "`pem/tsa-chain.pem`: the timestamp authority's chain, TSA certificate first, root "
            "last (`SIGSTORE_TSA_CERTIFICATE_FILE`, Kyverno `ctlog.tsaCertChain`)."
        )
    retired = [f.removeprefix(_RETIRED_DIR + "/") for f in files if f.startswith(_RETIRED_DIR)]
    if retired:
        entries.append(
            f"`{_RETIRED_DIR}/`: keys and chains this sigstead no longer uses, still needed to "
            "verify signatures made before a rotation: "
            + ", ".join(f"`{name}`" for name in retired)
            + ". Never configure them for signing."
        )
    entries += [
        "`cosign.sh`: shell functions wrapping cosign v3 sign/verify for blobs, images and SLSA "
        "provenance attestations with `--signing-config`/`--trusted-root`, the TUF "
        "`cosign initialize` path and the legacy `SIGSTORE_*` variables. Sourcing or running "
        "it only defines functions.",
        "`kyverno-clusterpolicy.yaml`: a Kyverno `ClusterPolicy` requiring a keyless signature "
        "and an SLSA v1 provenance attestation from the expected identity, with this sigstead's "
        "roots and keys inline.",
        "`policy-controller.yaml`: a sigstore policy-controller `TrustRoot` with this sigstead's "
        "keys and a `ClusterImagePolicy` requiring a keyless signature and an SLSA v1 provenance "
        "attestation (plus, when exported with the TUF repository, a commented `TrustRoot` that "
        "follows the TUF mirror instead).",
        "`tekton-chains.yaml`: a `chains-config` ConfigMap for Tekton Chains to sign build "
        "provenance and images keylessly through this sigstead and log them in its Rekor.",
    ]
    return (
        f"# Client snippets for the sigstead at {trust.rekor.url}\n\n"
        "Generated from `../trusted_root.json` and `../signing_config.v0.2.json`; export again "
        "(`sigstead trust export`) after a key rotation. Placeholders start with `REPLACE-WITH-`; "
        f"the image pattern `{IMAGE_PATTERN_PLACEHOLDER}` is one too. How to use each file: "
        "docs/consumers.md in the sigstead sources.\n\n"
        + "".join(f"- {entry}\n" for entry in entries)
    )


def snippets(
    root: Mapping[str, Any],
    config: Mapping[str, Any],
    endpoints: Endpoints,
    *,
    identity: str | None = None,
    issuer: str | None = None,
    tuf_root: bytes | None = None,
) -> dict[str, bytes]:
    """Relative file name → content of every consumer snippet for these trust documents.

    ``identity``/``issuer`` are the signer SAN and OIDC issuer the policies require; when None
    the files carry ``REPLACE-WITH-…`` placeholders. ``tuf_root`` (the TUF repository's
    ``root.json``) adds a policy-controller ``TrustRoot`` that follows the TUF mirror.
    """
    trust = _read(root, config)
    who = identity if identity is not None else IDENTITY_PLACEHOLDER
    iss = issuer if issuer is not None else ISSUER_PLACEHOLDER
    placeholders = _placeholders(identity, issuer)

    text: dict[str, str] = {
        "pem/fulcio-chain.pem": trust.ca.pem,
        "pem/rekor.pub": trust.rekor.pem,
        "pem/ctlog.pub": trust.ct.pem,
    }
    if trust.tsa is not None:
        text["pem/tsa-chain.pem"] = trust.tsa.pem
    for name, logs in (("rekor", trust.tlogs), ("ctlog", trust.ctlogs)):
        for log in logs:
            if log.retired:
                text[f"{_RETIRED_DIR}/{name}-{log.tag}.pub"] = log.pem
    for name, authorities in (("fulcio-chain", trust.cas), ("tsa-chain", trust.tsas)):
        for authority in authorities:
            if authority.retired:
                text[f"{_RETIRED_DIR}/{name}-{authority.tag}.pem"] = authority.pem
    text["cosign.sh"] = _cosign_sh(trust, endpoints, who, iss)
    text["kyverno-clusterpolicy.yaml"] = _kyverno(trust, who, iss, placeholders)
    text["policy-controller.yaml"] = _policy_controller(
        trust, endpoints, who, iss, placeholders, tuf_root
    )
    text["tekton-chains.yaml"] = _tekton_chains(trust, endpoints, iss)
    text["README.md"] = _readme(sorted(text), trust)
    return {name: content.encode() for name, content in text.items()}
