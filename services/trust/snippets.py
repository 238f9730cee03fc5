"""Ready-to-edit client configuration for one sigstead, derived only from its trust documents.

``snippets`` turns a trusted root, a signing config and the TUF repository into the files an
operator hands to consumers: PEM files, a cosign shell helper (v3, or v2.6+), a Kyverno
``ImageValidatingPolicy`` and ``ClusterPolicy``, sigstore policy-controller ``TrustRoot`` +
``ClusterImagePolicy`` pairs for bundles, for the tag layout and for an air gap, a Tekton Chains
``chains-config`` and a README. Each is applied by the real program in tests/e2e/test_admission.py
(or, for Chains, checked against its configuration parser), and its objects validate against the
CRDs of the releases named in its header. All YAML is generated from data with PyYAML, so a
comment can never swallow a document separator.

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
  ``sigstoreKeys`` lists, Kyverno's ``roots`` pool) retired entries are kept after the current
  ones, because a rotation does not invalidate what the old key signed and the trusted root
  itself still lists them. Retired keys and chains are also written to ``pem/retired/`` for
  single-key consumers that must verify old signatures.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime
import gzip
import hashlib
import io
import json
import shlex
import tarfile
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any, TypeVar

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from services.trust.documents import Endpoints

__all__ = [
    "BUILDER_PLACEHOLDER",
    "CHAINS_CHECKED",
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
BUILDER_PLACEHOLDER = "https://REPLACE-WITH-BUILDER-ID.invalid"
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
        if "checkpointKeyId" in entry:
            # A Rekor v2 log (documents.is_rekor_v2): the snippets configure v1 consumers, and
            # the clients that sign to v2 read the trusted root itself.
            continue
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


def _rekor_v2_pem(root: Mapping[str, Any]) -> str | None:
    """The current Rekor v2 log's key, for auditors (``sigstead log search --rekor-version 2``);
    no client configuration takes it, they read the trusted root."""
    for i, entry in enumerate(root.get("tlogs") or ()):
        if "checkpointKeyId" in entry and "end" not in entry["publicKey"].get("validFor", {}):
            spki = _bytes(entry["publicKey"]["rawBytes"], f"tlogs[{i}].publicKey.rawBytes")
            key = serialization.load_der_public_key(spki)
            pem = key.public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            return pem.decode()
    return None


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


@dataclass(frozen=True, slots=True)
class _Policy:
    """What every admission policy requires: who signed, through which issuer, which images,
    and which builder made the SLSA provenance."""

    identity: str
    issuer: str
    images: str
    builder: str
    notes: str  # the "Replace before use" comment, empty when nothing is a placeholder


def _placeholders(
    identity: str | None, issuer: str | None, images: str | None, builder: str | None
) -> str:
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
    if images is None:
        notes.append(
            f"{IMAGE_PATTERN_PLACEHOLDER}: the images this policy applies to (never `*` unless "
            "every image in the cluster, system ones included, is signed this way)."
        )
    if builder is None:
        notes.append(
            f"{BUILDER_PLACEHOLDER}: the SLSA builder that must have made the image's provenance "
            "(`runDetails.builder.id`), e.g. your Tekton Chains `builder.id`."
        )
    if not notes:
        return ""
    return _comment("Replace before use:\n" + "\n".join(f"- {n}" for n in notes))


def _builder_cue(builder: str) -> str:
    # CUE unifies the document with these constraints: a different builder (or predicate
    # type) is a conflict, so the attestation fails.
    return (
        f"predicateType: {json.dumps(SLSA_PROVENANCE_V1)}\n"
        f"predicate: runDetails: builder: id: {json.dumps(builder)}\n"
    )


def _kyverno_ivp(trust: _Trust, endpoints: Endpoints, policy: _Policy, tuf_root: bytes) -> str:
    cel_builder = policy.builder.replace("\\", "\\\\").replace("'", "\\'")
    attestor = {
        "name": "sigstead",
        "cosign": {
            "keyless": {"identities": [{"issuer": policy.issuer, "subject": policy.identity}]},
            "ctlog": {"url": trust.rekor_url},
            # Kyverno always initialises a TUF client for keyless attestors; without this it
            # would go to the public-good Sigstore TUF repository.
            "tuf": {"mirror": endpoints.tuf, "root": {"data": base64.b64encode(tuf_root).decode()}},
        },
    }
    document = {
        "apiVersion": "policies.kyverno.io/v1",
        "kind": "ImageValidatingPolicy",
        "metadata": {"name": "sigstead-verify-images"},
        "spec": {
            "validationActions": ["Deny"],
            "webhookConfiguration": {"timeoutSeconds": 30},
            "matchConstraints": {
                "resourceRules": [
                    {
                        "apiGroups": [""],
                        "apiVersions": ["v1"],
                        "operations": ["CREATE", "UPDATE"],
                        "resources": ["pods"],
                    }
                ]
            },
            "matchImageReferences": [{"glob": policy.images}],
            "attestors": [attestor],
            "attestations": [{"name": "slsa", "intoto": {"type": SLSA_PROVENANCE_V1}}],
            "validations": [
                {
                    "expression": "images.containers.map(image, verifyImageSignatures(image, "
                    "[attestors.sigstead])).all(e, e > 0)",
                    "message": "the image is not signed by the expected identity through sigstead",
                },
                {
                    "expression": "images.containers.map(image, verifyAttestationSignatures("
                    "image, attestations.slsa, [attestors.sigstead])).all(e, e > 0)",
                    "message": "the image has no SLSA v1 provenance signed by the expected "
                    "identity",
                },
                {
                    "expression": "images.containers.map(image, extractPayload(image, "
                    f"attestations.slsa).predicate.runDetails.builder.id == '{cel_builder}')"
                    ".all(e, e)",
                    "message": "the image's provenance names another builder",
                },
            ],
        },
    }
    header = f"""
Kyverno ImageValidatingPolicy (policies.kyverno.io/v1, Kyverno 1.17+; v1beta1 in 1.15-1.16):
admit Pods only when each image carries a keyless signature and an SLSA v1 provenance attestation
({SLSA_PROVENANCE_V1}) made through the sigstead at {trust.rekor.url}, by the expected identity,
with the expected builder.id. Checked with the Kyverno 1.19 CLI: `kyverno apply
kyverno-imagevalidatingpolicy.yaml --resource pod.yaml --registry`.

Kyverno finds both signature layouts itself: Sigstore bundles attached as OCI referrers (cosign
v3, cosign v2 with --new-bundle-format) and the `.sig`/`.att` tags (cosign v2's default, Tekton
Chains). Trust comes from this sigstead's TUF repository (`tuf.mirror`, `tuf.root.data` is
base64 of tuf/root.json), so key rotations arrive without editing the policy; the admission
controller must reach {endpoints.tuf}. This is the policy to use; kyverno-clusterpolicy.yaml is
the older ClusterPolicy form (deprecated since Kyverno 1.17).
"""
    return _comment(header) + policy.notes + _yaml(document)


def _kyverno_cpol(trust: _Trust, policy: _Policy) -> str:
    # A pool, not a chain: Kyverno loads `roots` into an x509.CertPool, so retired CA chains can
    # sit beside the current one and certificates they issued before a rotation still verify.
    roots = "".join(ca.pem for ca in trust.cas)
    ctlog: dict[str, Any] = {"pubkey": trust.ct.pem}
    keyless = {
        "subject": policy.identity,
        "issuer": policy.issuer,
        "roots": roots,
        "rekor": {"url": trust.rekor.url, "pubkey": trust.rekor.pem},
        "ctlog": ctlog,
    }
    attestors = [{"entries": [{"keyless": keyless}]}]
    builder_condition = {
        "all": [
            {
                "key": "{{ runDetails.builder.id }}",
                "operator": "Equals",
                "value": policy.builder,
            }
        ]
    }
    document = {
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
                            "imageReferences": [policy.images],
                            "type": "Cosign",
                            "failureAction": "Enforce",
                            "attestors": attestors,
                            "attestations": [
                                {
                                    "type": SLSA_PROVENANCE_V1,
                                    "attestors": attestors,
                                    "conditions": [builder_condition],
                                }
                            ],
                        }
                    ],
                }
            ],
        },
    }
    header = f"""
Kyverno ClusterPolicy (kyverno.io/v1; deprecated since Kyverno 1.17, prefer
kyverno-imagevalidatingpolicy.yaml): admit Pods only when their images carry a keyless signature
and an SLSA v1 provenance attestation whose runDetails.builder.id is the expected builder, made
through the sigstead at {trust.rekor.url}. Checked with the Kyverno 1.19 CLI.

It reads the `.sig`/`.att` tag layout only (`type: Cosign`): signatures from cosign v2's default
`cosign sign`/`cosign attest`, cosign v3 with `--new-bundle-format=false
--use-signing-config=false` (cosign.sh: sigstead_sign_image_legacy), and Tekton Chains. For
Sigstore bundles (cosign v3's default) use the ImageValidatingPolicy: Kyverno's `type:
SigstoreBundle` ignores roots/rekor/ctlog below and trusts only the TUF root the Kyverno
controller was started with (Helm `features.tuf.enabled`, `.mirror`, `.root`), which the
`kyverno` CLI cannot be given.

- roots: the Fulcio-compatible CA chain(s), PEM; retired chains included so that images signed
  before a CA rotation still verify.
- rekor.pubkey / ctlog.pubkey: one key each, so only the current key; after a rotation, add a
  second attestor entry with the key from pem/retired/ (and `count: 1`) for older signatures.
- `failureAction` per verifyImages entry is Kyverno 1.13+; older releases take
  `spec.validationFailureAction: Enforce` instead.
"""
    return _comment(header) + policy.notes + _yaml(document)


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


def _image_policy(
    trust: _Trust, policy: _Policy, *, name: str, trust_root: str, signature_format: str
) -> dict[str, Any]:
    authority: dict[str, Any] = {
        "name": "sigstead",
        "keyless": {
            "url": trust.ca.uri,
            "identities": [{"issuer": policy.issuer, "subject": policy.identity}],
            "trustRootRef": trust_root,
        },
        # Despite its name this is the Rekor (transparency log) URL (clients.md §6.4).
        "ctlog": {"url": trust.rekor.url, "trustRootRef": trust_root},
    }
    if trust.tsas and signature_format == "bundle":
        # Bundles from a signing config carry a TSA timestamp. The tag layout is verified by
        # the Rekor entry's signed time instead: Tekton Chains adds no timestamp there, and
        # requiring one would refuse all of its signatures.
        authority["rfc3161timestamp"] = {"trustRootRef": trust_root}
    authority["signatureFormat"] = signature_format
    authority["attestations"] = [
        {
            "name": "slsa-provenance",
            "predicateType": SLSA_PROVENANCE_V1,
            "policy": {"type": "cue", "data": _builder_cue(policy.builder)},
        }
    ]
    return {
        "apiVersion": "policy.sigstore.dev/v1beta1",
        "kind": "ClusterImagePolicy",
        "metadata": {"name": name},
        "spec": {"images": [{"glob": policy.images}], "authorities": [authority]},
    }


def _remote_trust_root(endpoints: Endpoints, tuf_root: bytes) -> dict[str, Any]:
    return {
        "apiVersion": "policy.sigstore.dev/v1alpha1",
        "kind": "TrustRoot",
        "metadata": {"name": TRUST_ROOT_NAME},
        "spec": {
            "remote": {
                "mirror": endpoints.tuf,
                "root": base64.b64encode(tuf_root).decode(),
                "trustedRootTarget": "trusted_root.json",
            }
        },
    }


_POLICY_CONTROLLER_TYPES = """
Field names: sigstore/policy-controller v0.15.1 pkg/apis/policy/v1alpha1/trustroot_types.go and
v1beta1/clusterimagepolicy_types.go (checked against the CRDs in its config/ directory).
"""


def _policy_controller(
    trust: _Trust, endpoints: Endpoints, policy: _Policy, tuf_root: bytes
) -> str:
    header = f"""
sigstore policy-controller, for Sigstore bundles (cosign v3's default, cosign v2 with
--new-bundle-format): a TrustRoot that follows this sigstead's TUF repository and a
ClusterImagePolicy that requires a keyless signature and an SLSA v1 provenance attestation from
the expected identity and builder. Checked with policy-controller v0.15.1's policy-tester.

- TrustRoot `remote`: `root` is base64 of tuf/root.json; the controller must reach
  {endpoints.tuf}. Without network access to it use policy-controller-airgap.yaml's TrustRoot
  instead (same name).
- `signatureFormat: bundle` (policy-controller v0.13+): the default, `legacy`, reads only
  `.sig`/`.att` tags; for those use policy-controller-legacy.yaml. One authority checks one
  format: keep both policies if both kinds of signatures are in use.
{_POLICY_CONTROLLER_TYPES}"""
    trust_root = _remote_trust_root(endpoints, tuf_root)
    image_policy = _image_policy(
        trust,
        policy,
        name="sigstead-keyless",
        trust_root=TRUST_ROOT_NAME,
        signature_format="bundle",
    )
    return _comment(header) + policy.notes + _yaml(trust_root) + "---\n" + _yaml(image_policy)


def _policy_controller_legacy(trust: _Trust, policy: _Policy) -> str:
    name = f"{TRUST_ROOT_NAME}-keys"
    header = f"""
sigstore policy-controller, for the `.sig`/`.att` tag layout (cosign v2's default, cosign v3
with --new-bundle-format=false, Tekton Chains): a TrustRoot holding this sigstead's keys inline
and a ClusterImagePolicy in `signatureFormat: legacy`. Checked with policy-controller v0.15.1's
policy-tester.

Why a second TrustRoot: in policy-controller v0.15.1 each format works with one TrustRoot kind
only. A `sigstoreKeys` TrustRoot stores log IDs as hex text, which the bundle verifier does not
match (so bundles need the TUF TrustRoot of policy-controller.yaml); a TUF TrustRoot stores them
as bytes, which the legacy verifier's CT log lookup does not match.
- certChain and publicKey are base64 of the PEM text (they are []byte in the API). validFor is
  not carried over, so a retired entry listed here is trusted without its end date; retired
  entries are kept because signatures made before a rotation stay valid. Delete one outright if
  its key was compromised. Export again after a rotation.
{_POLICY_CONTROLLER_TYPES}"""
    trust_root = {
        "apiVersion": "policy.sigstore.dev/v1alpha1",
        "kind": "TrustRoot",
        "metadata": {"name": name},
        "spec": {"sigstoreKeys": _trust_root_keys(trust)},
    }
    image_policy = _image_policy(
        trust, policy, name="sigstead-keyless-legacy", trust_root=name, signature_format="legacy"
    )
    return _comment(header) + policy.notes + _yaml(trust_root) + "---\n" + _yaml(image_policy)


def _mirror_fs(tuf_files: Mapping[str, bytes]) -> bytes:
    """The TUF repository as policy-controller's `repository.mirrorFS` takes it: a gzipped tar
    whose paths start with `repository/` (v1alpha1.DefaultTUFRepoPrefix), byte-for-byte the same
    for the same files (fixed times and owners) so that re-exporting changes nothing."""
    out = io.BytesIO()
    with (
        gzip.GzipFile(fileobj=out, mode="wb", mtime=0) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        directories = sorted({str(p) for name in tuf_files for p in PurePosixPath(name).parents})
        for directory in directories:
            if directory == ".":
                continue
            info = tarfile.TarInfo(f"repository/{directory}")
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        for name in sorted(tuf_files):
            info = tarfile.TarInfo(f"repository/{name}")
            info.size, info.mode = len(tuf_files[name]), 0o644
            tar.addfile(info, io.BytesIO(tuf_files[name]))
    return out.getvalue()


def _policy_controller_airgap(
    endpoints: Endpoints, tuf_root: bytes, tuf_files: Mapping[str, bytes], expires: str
) -> str:
    header = f"""
sigstore policy-controller without network access to {endpoints.tuf}: the same TrustRoot as in
policy-controller.yaml (apply this one instead of that one, with its ClusterImagePolicy), holding
a copy of this sigstead's whole TUF repository (`repository.mirrorFS`: base64 of a gzipped tar
of tuf/ under `repository/`). Checked with policy-controller v0.15.1's policy-tester.

The controller reads it when the TrustRoot is applied or changes, and checks the TUF metadata's
expiry then: export and apply again before {expires} (the TUF timestamp's expiry) and after every
key rotation.
"""
    trust_root = {
        "apiVersion": "policy.sigstore.dev/v1alpha1",
        "kind": "TrustRoot",
        "metadata": {"name": TRUST_ROOT_NAME},
        "spec": {
            "repository": {
                "root": base64.b64encode(tuf_root).decode(),
                "mirrorFS": base64.b64encode(_mirror_fs(tuf_files)).decode(),
                "targets": "targets",
                "trustedRootTarget": "trusted_root.json",
            }
        },
    }
    return _comment(header) + _yaml(trust_root)


# The Tekton Chains release whose configuration keys the snippet was checked against: v0.29.2 is
# the newest, but the Go module proxy serves no v0.27+ (403), so the test reads v0.26.2's
# pkg/config/config.go; docs/config.md of v0.29.2 names the same keys.
CHAINS_CHECKED = "v0.26.2"


def _tekton_chains(trust: _Trust, endpoints: Endpoints, policy: _Policy) -> str:
    # ConfigMap values must be strings; safe_dump quotes "true" so it stays one.
    data = {
        # slsa/v2alpha4 writes SLSA v1.0 provenance (predicate type https://slsa.dev/provenance/v1,
        # which the admission policies require); "slsa/v1" is an alias of in-toto and writes
        # SLSA v0.2.
        "artifacts.taskrun.format": "slsa/v2alpha4",
        "artifacts.taskrun.storage": "oci",
        "artifacts.taskrun.signer": "x509",
        "artifacts.pipelinerun.format": "slsa/v2alpha4",
        "artifacts.pipelinerun.storage": "oci",
        "artifacts.pipelinerun.signer": "x509",
        "artifacts.oci.format": "simplesigning",
        "artifacts.oci.storage": "oci",
        "artifacts.oci.signer": "x509",
        "builder.id": policy.builder,
        "transparency.enabled": "true",
        "transparency.url": trust.rekor_url,
        "signers.x509.fulcio.enabled": "true",
        "signers.x509.fulcio.address": trust.ca_url,
        "signers.x509.fulcio.issuer": policy.issuer,
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
Tekton Chains: sign images and TaskRun/PipelineRun provenance (SLSA v1.0, format slsa/v2alpha4)
keylessly through this sigstead, store both in the image's registry next to the image (`.sig` and
`.att` tags, storage oci), and record them in its Rekor v1 log. builder.id is the builder the
admission policies require. Keys checked against tektoncd/chains {CHAINS_CHECKED}
pkg/config/config.go.

Merge it into the installed chains-config, keeping its other keys:
  kubectl -n tekton-chains patch configmap chains-config --type merge \\
      --patch-file tekton-chains.yaml
- signers.x509.identity.token.file: mount a projected ServiceAccount token with audience
  "sigstore" in the chains controller at {CHAINS_TOKEN_FILE}.
  Its issuer is the cluster's service-account issuer, which the sigstead CA must accept (its
  OIDC config); the signer identity is then the controller's service account, the identity the
  admission policies must name.
- signers.x509.fulcio.issuer: that token's `iss`.
- signers.x509.tuf.mirror.url: Chains fetches <url>/root.json as its initial root of trust, over
  plain HTTP if the URL is http://: serve it over TLS or on a trusted network.
- Chains writes the `.sig`/`.att` layout: verify with the ImageValidatingPolicy,
  kyverno-clusterpolicy.yaml or policy-controller-legacy.yaml.
"""
    return _comment(header) + policy.notes + _yaml(config_map)


def _cosign_sh(trust: _Trust, endpoints: Endpoints, identity: str, issuer: str) -> str:
    q = shlex.quote
    tsa_env = (
        '  export SIGSTORE_TSA_CERTIFICATE_FILE="$SIGSTEAD_SNIPPETS_DIR/pem/tsa-chain.pem"\n'
        if trust.tsa is not None
        else ""
    )
    tsa_flag = f"--timestamp-server-url {q(trust.tsa_url)} " if trust.tsa_url is not None else ""
    placeholder_note = ""
    if identity == IDENTITY_PLACEHOLDER or issuer == ISSUER_PLACEHOLDER:
        placeholder_note = f"""
# {IDENTITY_PLACEHOLDER} / {ISSUER_PLACEHOLDER}: placeholders that match nothing.
# Before verifying, set SIGSTEAD_IDENTITY (the signer's SAN: an e-mail address or a URI) and
# SIGSTEAD_ISSUER (the `iss` of the signer's OIDC token).
"""
    return f"""#!/usr/bin/env bash
# cosign v3, or v2.6+, against the sigstead at {trust.rekor.url}
# (Rekor v1 transparency log, Fulcio-compatible CA with CT log, RFC 3161 TSA).
# cosign v2 makes Sigstore bundles only with --new-bundle-format; the functions add it when the
# cosign on PATH is a v2 (checked with cosign v2.6.4 and v3.1.2).
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

# The flags cosign v2 needs to behave as v3 does by default (bundles, and --signing-config read).
_sigstead_v2_flags() {{
  local version
  version="$(cosign version --json 2>/dev/null)" || return
  if [[ "$version" == *'"gitVersion": "v2.'* ]]; then
    printf '%s\n' --new-bundle-format
  fi
}}

_sigstead_token() {{
  printf '%s' "${{SIGSTEAD_ID_TOKEN:?set SIGSTEAD_ID_TOKEN to an OIDC token or a file holding one}}"
}}

# Sign a file; the Sigstore bundle (certificate, signature, Rekor entry, timestamp) goes to
# FILE.sigstore.json unless BUNDLE is given. cosign v3 requires --bundle for sign-blob.
sigstead_sign_blob() {{  # FILE [BUNDLE]
  local file="${{1:?usage: sigstead_sign_blob FILE [BUNDLE]}}" token
  local bundle="${{2:-$1.sigstore.json}}" v2
  token="$(_sigstead_token)" || return
  mapfile -t v2 < <(_sigstead_v2_flags)
  cosign sign-blob "${{v2[@]}}" \\
    --signing-config "$SIGSTEAD_EXPORT_DIR/signing_config.v0.2.json" \\
    --trusted-root "$SIGSTEAD_EXPORT_DIR/trusted_root.json" \\
    --identity-token "$token" \\
    --bundle "$bundle" --yes "$file"
}}

sigstead_verify_blob() {{  # FILE [BUNDLE]
  local file="${{1:?usage: sigstead_verify_blob FILE [BUNDLE]}}"
  local bundle="${{2:-$1.sigstore.json}}" v2
  mapfile -t v2 < <(_sigstead_v2_flags)
  cosign verify-blob "${{v2[@]}}" \\
    --trusted-root "$SIGSTEAD_EXPORT_DIR/trusted_root.json" \\
    --bundle "$bundle" \\
    --certificate-identity "$SIGSTEAD_IDENTITY" \\
    --certificate-oidc-issuer "$SIGSTEAD_ISSUER" \\
    "$file"
}}

# Images: pass IMAGE by digest (registry/repo@sha256:...), so the signature covers what runs.
sigstead_sign_image() {{  # IMAGE
  local image="${{1:?usage: sigstead_sign_image IMAGE@DIGEST}}" token v2
  token="$(_sigstead_token)" || return
  mapfile -t v2 < <(_sigstead_v2_flags)
  cosign sign "${{v2[@]}}" \\
    --signing-config "$SIGSTEAD_EXPORT_DIR/signing_config.v0.2.json" \\
    --trusted-root "$SIGSTEAD_EXPORT_DIR/trusted_root.json" \\
    --identity-token "$token" \\
    --yes "$image"
}}

sigstead_verify_image() {{  # IMAGE
  local image="${{1:?usage: sigstead_verify_image IMAGE}}" v2
  mapfile -t v2 < <(_sigstead_v2_flags)
  cosign verify "${{v2[@]}}" \\
    --trusted-root "$SIGSTEAD_EXPORT_DIR/trusted_root.json" \\
    --certificate-identity "$SIGSTEAD_IDENTITY" \\
    --certificate-oidc-issuer "$SIGSTEAD_ISSUER" \\
    "$image"
}}

# Attach an SLSA v1 provenance predicate (a JSON file) to an image as a signed attestation.
sigstead_attest_image() {{  # IMAGE PREDICATE.json
  local image="${{1:?usage: sigstead_attest_image IMAGE@DIGEST PREDICATE.json}}"
  local predicate="${{2:?usage: sigstead_attest_image IMAGE@DIGEST PREDICATE.json}}" token v2
  token="$(_sigstead_token)" || return
  mapfile -t v2 < <(_sigstead_v2_flags)
  cosign attest "${{v2[@]}}" \\
    --signing-config "$SIGSTEAD_EXPORT_DIR/signing_config.v0.2.json" \\
    --trusted-root "$SIGSTEAD_EXPORT_DIR/trusted_root.json" \\
    --identity-token "$token" \\
    --type "$SIGSTEAD_SLSA_PROVENANCE" --predicate "$predicate" \\
    --yes "$image"
}}

sigstead_verify_attestation() {{  # IMAGE
  local image="${{1:?usage: sigstead_verify_attestation IMAGE}}" v2
  mapfile -t v2 < <(_sigstead_v2_flags)
  cosign verify-attestation "${{v2[@]}}" \\
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
# holds one key or chain). cosign reads them only when no --trusted-root is given (an explicit
# --trusted-root wins); then it skips its TUF trust, and validity windows from the trusted root no
# longer apply. Prefer --trusted-root; use this for tools that only read them, and for the
# legacy signing functions below.
sigstead_legacy_env() {{
  export SIGSTORE_ROOT_FILE="$SIGSTEAD_SNIPPETS_DIR/pem/fulcio-chain.pem"
  export SIGSTORE_REKOR_PUBLIC_KEY="$SIGSTEAD_SNIPPETS_DIR/pem/rekor.pub"
  export SIGSTORE_CT_LOG_PUBLIC_KEY_FILE="$SIGSTEAD_SNIPPETS_DIR/pem/ctlog.pub"
{tsa_env}}}

sigstead_legacy_env_unset() {{
  unset SIGSTORE_ROOT_FILE SIGSTORE_REKOR_PUBLIC_KEY SIGSTORE_CT_LOG_PUBLIC_KEY_FILE \\
    SIGSTORE_TSA_CERTIFICATE_FILE
}}

# Sign an image, and attach SLSA provenance, in the legacy `.sig`/`.att` tag layout, for
# verifiers that read only that layout (Kyverno's ClusterPolicy, policy-controller-legacy.yaml).
# This leaves the signing-config path, so the service URLs are given explicitly: with cosign v3
# these flags are deprecated but still accepted together with --use-signing-config=false.
_sigstead_legacy() {{  # cosign-subcommand ARGS...
  local subcommand=$1 token
  shift
  token="$(_sigstead_token)" || return
  (
    sigstead_legacy_env
    cosign "$subcommand" --use-signing-config=false --new-bundle-format=false \\
      --fulcio-url {q(trust.ca_url)} \\
      --rekor-url {q(trust.rekor_url)} \\
      --identity-token "$token" \\
      --yes "$@"
  )
}}

# The signature also gets an RFC 3161 timestamp. The attestation does not: cosign v3.1.2's
# legacy `attest` timestamps other bytes than it later verifies ("hashed messages don't match"),
# and in this layout the Rekor entry's signed time is what verifiers use.
sigstead_sign_image_legacy() {{  # IMAGE
  _sigstead_legacy sign {tsa_flag}"${{1:?usage: sigstead_sign_image_legacy IMAGE@DIGEST}}"
}}

sigstead_attest_image_legacy() {{  # IMAGE PREDICATE.json
  local usage="usage: sigstead_attest_image_legacy IMAGE@DIGEST PREDICATE.json"
  local image="${{1:?$usage}}" predicate="${{2:?$usage}}"
  _sigstead_legacy attest --type "$SIGSTEAD_SLSA_PROVENANCE" --predicate "$predicate" "$image"
}}

sigstead_help() {{
  cat <<'EOF'
Source this file, then call one of:
  sigstead_sign_blob FILE [BUNDLE]          sigstead_verify_blob FILE [BUNDLE]
  sigstead_sign_image IMAGE@DIGEST          sigstead_verify_image IMAGE
  sigstead_attest_image IMAGE@DIGEST PRED   sigstead_verify_attestation IMAGE
  sigstead_tuf_initialize                   sigstead_legacy_env / sigstead_legacy_env_unset
  sigstead_sign_image_legacy IMAGE@DIGEST   sigstead_attest_image_legacy IMAGE@DIGEST PRED
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
    if "pem/rekor-v2.pub" in files:
        entries.append(
            "`pem/rekor-v2.pub`: the Rekor v2 log's checkpoint key, for auditors (`sigstead log "
            "--log-key pem/rekor-v2.pub search --rekor-version 2`); clients read it from the "
            "trusted root."
        )
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
        "`cosign.sh`: shell functions wrapping cosign (v3, or v2.6+) sign/verify for blobs, "
        "images and SLSA provenance attestations with `--signing-config`/`--trusted-root`, the "
        "TUF `cosign initialize` path, the legacy `SIGSTORE_*` variables and legacy-layout "
        "signing. Sourcing or running it only defines functions.",
        "`kyverno-imagevalidatingpolicy.yaml`: a Kyverno `ImageValidatingPolicy` (Kyverno 1.15+, "
        "`policies.kyverno.io/v1` from 1.17) requiring a keyless signature and an SLSA v1 "
        "provenance attestation from the expected identity and builder; trust from this "
        "sigstead's TUF repository; both signature layouts.",
        "`kyverno-clusterpolicy.yaml`: the same as a Kyverno `ClusterPolicy` (deprecated since "
        "Kyverno 1.17), with this sigstead's roots and keys inline; `.sig`/`.att` layout only.",
        "`policy-controller.yaml`: a sigstore policy-controller `TrustRoot` following the TUF "
        "repository and a `ClusterImagePolicy` for Sigstore bundles (`signatureFormat: bundle`).",
        "`policy-controller-legacy.yaml`: a `TrustRoot` with the keys inline and a "
        "`ClusterImagePolicy` for the `.sig`/`.att` layout (`signatureFormat: legacy`).",
        "`policy-controller-airgap.yaml`: the TUF `TrustRoot` with a copy of the repository "
        "inline, for a controller that cannot reach the TUF mirror.",
        "`tekton-chains.yaml`: a `chains-config` ConfigMap for Tekton Chains to sign images and "
        "SLSA v1.0 build provenance keylessly through this sigstead, store them in the registry "
        "and log them in its Rekor.",
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
    tuf_root: bytes,
    tuf_files: Mapping[str, bytes],
    tuf_expires: str,
    identity: str | None = None,
    issuer: str | None = None,
    images: str | None = None,
    builder: str | None = None,
) -> dict[str, bytes]:
    """Relative file name → content of every consumer snippet for these trust documents.

    ``tuf_root`` is the TUF repository's initial ``root.json``, ``tuf_files`` the repository's
    files by path (for the air-gap TrustRoot) and ``tuf_expires`` the expiry of its timestamp
    (said in that file). ``identity``/``issuer`` are the signer SAN and OIDC issuer the policies
    require, ``images`` the image glob they apply to and ``builder`` the SLSA builder id the
    provenance must name; each one left None becomes a ``REPLACE-WITH-…`` placeholder.
    """
    trust = _read(root, config)
    policy = _Policy(
        identity=identity if identity is not None else IDENTITY_PLACEHOLDER,
        issuer=issuer if issuer is not None else ISSUER_PLACEHOLDER,
        images=images if images is not None else IMAGE_PATTERN_PLACEHOLDER,
        builder=builder if builder is not None else BUILDER_PLACEHOLDER,
        notes=_placeholders(identity, issuer, images, builder),
    )
    # Chains signs rather than verifies: only the issuer and the builder it names matter there.
    chains = dataclasses.replace(
        policy, notes=_placeholders(policy.identity, issuer, policy.images, builder)
    )

    text: dict[str, str] = {
        "pem/fulcio-chain.pem": trust.ca.pem,
        "pem/rekor.pub": trust.rekor.pem,
        "pem/ctlog.pub": trust.ct.pem,
    }
    if trust.tsa is not None:
        text["pem/tsa-chain.pem"] = trust.tsa.pem
    v2 = _rekor_v2_pem(root)
    if v2 is not None:
        text["pem/rekor-v2.pub"] = v2
    for name, logs in (("rekor", trust.tlogs), ("ctlog", trust.ctlogs)):
        for log in logs:
            if log.retired:
                text[f"{_RETIRED_DIR}/{name}-{log.tag}.pub"] = log.pem
    for name, authorities in (("fulcio-chain", trust.cas), ("tsa-chain", trust.tsas)):
        for authority in authorities:
            if authority.retired:
                text[f"{_RETIRED_DIR}/{name}-{authority.tag}.pem"] = authority.pem
    text["cosign.sh"] = _cosign_sh(trust, endpoints, policy.identity, policy.issuer)
    text["kyverno-imagevalidatingpolicy.yaml"] = _kyverno_ivp(trust, endpoints, policy, tuf_root)
    text["kyverno-clusterpolicy.yaml"] = _kyverno_cpol(trust, policy)
    text["policy-controller.yaml"] = _policy_controller(trust, endpoints, policy, tuf_root)
    text["policy-controller-legacy.yaml"] = _policy_controller_legacy(trust, policy)
    text["policy-controller-airgap.yaml"] = _policy_controller_airgap(
        endpoints, tuf_root, tuf_files, tuf_expires
    )
    text["tekton-chains.yaml"] = _tekton_chains(trust, endpoints, chains)
    text["README.md"] = _readme(sorted(text), trust)
    return {name: content.encode() for name, content in text.items()}
