"""Consumer snippets: every key and certificate in them is the trusted root's, every YAML file
parses, every URL is this sigstead's, and ``cosign.sh`` is valid bash that runs nothing by itself
but passes the right flags when its functions are called."""

from __future__ import annotations

import base64
import copy
import datetime
import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from services.trust import documents
from services.trust import snippets as snippets_module
from services.trust.documents import Endpoints
from services.trust.material import TrustMaterial, gather
from services.trust.snippets import (
    BUILDER_PLACEHOLDER,
    IDENTITY_PLACEHOLDER,
    IMAGE_PATTERN_PLACEHOLDER,
    ISSUER_PLACEHOLDER,
    SLSA_PROVENANCE_V1,
    TRUST_ROOT_NAME,
    snippets,
)

NOW = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
URL = "http://sigstead.internal:3000"
IDENTITY = "https://ci.example.com/workflows/build@refs/heads/main"
BUILDER = "https://ci.example.com/builders/tekton"
ISSUER = "https://issuer.example.com"
BASH = shutil.which("bash")
needs_bash = pytest.mark.skipif(BASH is None, reason="bash is not installed")

Doc = dict[str, Any]
TUF_ROOT = json.dumps({"signed": {"_type": "root", "version": 1}}).encode()
TUF_FILES = {"root.json": TUF_ROOT, "1.root.json": TUF_ROOT, "targets/x.json": b"{}"}
TUF_EXPIRES = "2026-12-05T00:00:00Z"


def make(root: Doc, config: Doc, **kwargs: Any) -> dict[str, bytes]:
    """The snippets for these documents and a small stand-in TUF repository."""
    return snippets(
        root, config, Endpoints(URL), tuf_root=TUF_ROOT, tuf_files=TUF_FILES,
        tuf_expires=TUF_EXPIRES, **kwargs,
    )  # fmt: skip


@pytest.fixture(scope="module")
def material(tmp_path_factory: pytest.TempPathFactory) -> TrustMaterial:
    return gather(tmp_path_factory.mktemp("data"), NOW)


@pytest.fixture(scope="module")
def docs(material: TrustMaterial) -> tuple[Doc, Doc]:
    endpoints = Endpoints(URL)
    return (
        documents.trusted_root(material, endpoints, NOW),
        documents.signing_config(material, endpoints),
    )


@pytest.fixture(scope="module")
def files(docs: tuple[Doc, Doc]) -> dict[str, bytes]:
    return make(*docs)


def _der_chain(entry: Doc) -> list[bytes]:
    return [base64.b64decode(c["rawBytes"]) for c in entry["certChain"]["certificates"]]


def _pem_chain(pem: str | bytes) -> list[bytes]:
    data = pem.encode() if isinstance(pem, str) else pem
    return [
        c.public_bytes(serialization.Encoding.DER) for c in x509.load_pem_x509_certificates(data)
    ]


def _spki(pem: str | bytes) -> bytes:
    data = pem.encode() if isinstance(pem, str) else pem
    key = serialization.load_pem_public_key(data)
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _log_id(entry: Doc) -> bytes:
    return base64.b64decode(entry["logId"]["keyId"])


def _yaml_docs(files: dict[str, bytes], name: str) -> list[Doc]:
    loaded = [d for d in yaml.safe_load_all(files[name].decode()) if d is not None]
    assert loaded, name
    assert all(isinstance(d, dict) for d in loaded)
    return loaded


def _keyless(kyverno: Doc) -> tuple[Doc, Doc]:
    (rule,) = kyverno["spec"]["rules"]
    (verify,) = rule["verifyImages"]
    signature = verify["attestors"][0]["entries"][0]["keyless"]
    (attestation,) = verify["attestations"]
    assert attestation["type"] == SLSA_PROVENANCE_V1
    return signature, attestation["attestors"][0]["entries"][0]["keyless"]


def _policy_controller(
    files: dict[str, bytes], name: str = "policy-controller.yaml"
) -> tuple[Doc, Doc]:
    trust_root, policy = _yaml_docs(files, name)
    assert trust_root["apiVersion"] == "policy.sigstore.dev/v1alpha1"
    assert trust_root["kind"] == "TrustRoot"
    assert policy["apiVersion"] == "policy.sigstore.dev/v1beta1"
    assert policy["kind"] == "ClusterImagePolicy"
    return trust_root, policy


def test_the_file_set(files: dict[str, bytes]) -> None:
    assert set(files) == {
        "README.md",
        "cosign.sh",
        "kyverno-imagevalidatingpolicy.yaml",
        "kyverno-clusterpolicy.yaml",
        "policy-controller.yaml",
        "policy-controller-legacy.yaml",
        "policy-controller-airgap.yaml",
        "tekton-chains.yaml",
        "pem/fulcio-chain.pem",
        "pem/rekor.pub",
        "pem/rekor-v2.pub",
        "pem/ctlog.pub",
        "pem/tsa-chain.pem",
    }
    readme = files["README.md"].decode()
    for name in files:
        if name != "README.md":
            assert f"`{name}`" in readme, name


def test_every_yaml_file_parses(files: dict[str, bytes]) -> None:
    for name in files:
        if name.endswith(".yaml"):
            _yaml_docs(files, name)


def test_pem_files_are_the_trusted_roots_material(
    files: dict[str, bytes], docs: tuple[Doc, Doc]
) -> None:
    root, _ = docs
    (ca,) = root["certificateAuthorities"]
    (tsa,) = root["timestampAuthorities"]
    tlog, v2 = root["tlogs"]
    assert documents.is_rekor_v2(v2)
    (ctlog,) = root["ctlogs"]
    # The Rekor v2 key is not the v1 consumers' key: its clients read the trusted root itself.
    assert _spki(files["pem/rekor.pub"]) != base64.b64decode(v2["publicKey"]["rawBytes"])
    assert _pem_chain(files["pem/fulcio-chain.pem"]) == _der_chain(ca)
    assert _pem_chain(files["pem/tsa-chain.pem"]) == _der_chain(tsa)
    for name, entry in (("pem/rekor.pub", tlog), ("pem/ctlog.pub", ctlog)):
        spki = _spki(files[name])
        assert spki == base64.b64decode(entry["publicKey"]["rawBytes"])
        assert hashlib.sha256(spki).digest() == _log_id(entry)
    # Leaf/issuing certificate first, self-signed root last.
    first, *_, last = x509.load_pem_x509_certificates(files["pem/tsa-chain.pem"])
    assert first.subject != first.issuer
    assert last.subject == last.issuer


def test_kyverno_cluster_policy(files: dict[str, bytes], docs: tuple[Doc, Doc]) -> None:
    root, _ = docs
    (policy,) = _yaml_docs(files, "kyverno-clusterpolicy.yaml")
    assert policy["apiVersion"] == "kyverno.io/v1"
    assert policy["kind"] == "ClusterPolicy"
    (rule,) = policy["spec"]["rules"]
    (verify,) = rule["verifyImages"]
    assert verify["imageReferences"] == [IMAGE_PATTERN_PLACEHOLDER]
    # The tag layout, whose verifier honours the inline keys below.
    assert verify["type"] == "Cosign"
    signature, attestation = _keyless(policy)
    assert signature == attestation
    assert signature["subject"] == IDENTITY_PLACEHOLDER
    assert signature["issuer"] == ISSUER_PLACEHOLDER
    assert signature["rekor"]["url"] == URL
    assert hashlib.sha256(_spki(signature["rekor"]["pubkey"])).digest() == _log_id(root["tlogs"][0])
    assert hashlib.sha256(_spki(signature["ctlog"]["pubkey"])).digest() == _log_id(
        root["ctlogs"][0]
    )
    assert _pem_chain(signature["roots"]) == _der_chain(root["certificateAuthorities"][0])
    # No TSA chain: Kyverno would then demand a timestamp the tag layout often lacks.
    assert "tsaCertChain" not in signature["ctlog"]
    (condition,) = verify["attestations"][0]["conditions"]
    assert condition == {
        "all": [
            {
                "key": "{{ runDetails.builder.id }}",
                "operator": "Equals",
                "value": BUILDER_PLACEHOLDER,
            }
        ]
    }
    # Written out twice, not as a YAML alias.
    assert "&" not in files["kyverno-clusterpolicy.yaml"].decode()


def test_kyverno_image_validating_policy(files: dict[str, bytes]) -> None:
    (policy,) = _yaml_docs(files, "kyverno-imagevalidatingpolicy.yaml")
    assert (policy["apiVersion"], policy["kind"]) == (
        "policies.kyverno.io/v1",
        "ImageValidatingPolicy",
    )
    spec = policy["spec"]
    assert spec["matchImageReferences"] == [{"glob": IMAGE_PATTERN_PLACEHOLDER}]
    (attestor,) = spec["attestors"]
    cosign = attestor["cosign"]
    assert cosign["keyless"]["identities"] == [
        {"issuer": ISSUER_PLACEHOLDER, "subject": IDENTITY_PLACEHOLDER}
    ]
    assert cosign["ctlog"] == {"url": URL}
    assert cosign["tuf"]["mirror"] == f"{URL}/tuf"
    assert base64.b64decode(cosign["tuf"]["root"]["data"]) == TUF_ROOT
    assert spec["attestations"] == [{"name": "slsa", "intoto": {"type": SLSA_PROVENANCE_V1}}]
    expressions = [v["expression"] for v in spec["validations"]]
    assert any("verifyImageSignatures" in e for e in expressions)
    assert any("verifyAttestationSignatures" in e for e in expressions)
    assert any(f"runDetails.builder.id == '{BUILDER_PLACEHOLDER}'" in e for e in expressions)


def test_a_builder_id_is_quoted_for_cel(docs: tuple[Doc, Doc]) -> None:
    files = make(*docs, builder="https://ci.example/it's")
    (policy,) = _yaml_docs(files, "kyverno-imagevalidatingpolicy.yaml")
    expressions = [v["expression"] for v in policy["spec"]["validations"]]
    assert any("== 'https://ci.example/it\\'s'" in e for e in expressions), expressions


def test_policy_controller_for_bundles(files: dict[str, bytes]) -> None:
    trust_root, policy = _policy_controller(files)
    assert trust_root["metadata"]["name"] == TRUST_ROOT_NAME
    remote = trust_root["spec"]["remote"]
    assert remote["mirror"] == f"{URL}/tuf"
    assert base64.b64decode(remote["root"]) == TUF_ROOT
    assert remote["trustedRootTarget"] == "trusted_root.json"
    (authority,) = policy["spec"]["authorities"]
    assert policy["spec"]["images"] == [{"glob": IMAGE_PATTERN_PLACEHOLDER}]
    assert authority["signatureFormat"] == "bundle"
    assert authority["keyless"] == {
        "url": URL,
        "identities": [{"issuer": ISSUER_PLACEHOLDER, "subject": IDENTITY_PLACEHOLDER}],
        "trustRootRef": TRUST_ROOT_NAME,
    }
    assert authority["ctlog"] == {"url": URL, "trustRootRef": TRUST_ROOT_NAME}
    assert authority["rfc3161timestamp"] == {"trustRootRef": TRUST_ROOT_NAME}
    (attestation,) = authority["attestations"]
    assert attestation["predicateType"] == SLSA_PROVENANCE_V1
    assert attestation["policy"]["type"] == "cue"
    assert f'builder: id: "{BUILDER_PLACEHOLDER}"' in attestation["policy"]["data"]


def test_policy_controller_for_the_tag_layout(
    files: dict[str, bytes], docs: tuple[Doc, Doc]
) -> None:
    root, _ = docs
    trust_root, policy = _policy_controller(files, "policy-controller-legacy.yaml")
    name = trust_root["metadata"]["name"]
    assert name != TRUST_ROOT_NAME  # it can sit beside the TUF TrustRoot
    keys = trust_root["spec"]["sigstoreKeys"]
    # []byte fields: base64 of the PEM text.
    (ca,) = keys["certificateAuthorities"]
    assert _pem_chain(base64.b64decode(ca["certChain"])) == _der_chain(
        root["certificateAuthorities"][0]
    )
    assert ca["uri"] == URL
    assert ca["subject"] == root["certificateAuthorities"][0]["subject"]
    (tsa,) = keys["timestampAuthorities"]
    assert _pem_chain(base64.b64decode(tsa["certChain"])) == _der_chain(
        root["timestampAuthorities"][0]
    )
    assert tsa["uri"] == f"{URL}/api/v1/timestamp"
    for section, source, url in (("tLogs", "tlogs", URL), ("ctLogs", "ctlogs", f"{URL}/ct")):
        (log,) = keys[section]
        assert log["baseURL"] == url
        assert log["hashAlgorithm"] == "sha256"
        spki = _spki(base64.b64decode(log["publicKey"]))
        assert hashlib.sha256(spki).digest() == _log_id(root[source][0])
    (authority,) = policy["spec"]["authorities"]
    assert authority["signatureFormat"] == "legacy"
    assert authority["keyless"]["trustRootRef"] == name
    # Tekton Chains' tag-layout signatures carry no TSA timestamp: none is required.
    assert "rfc3161timestamp" not in authority


def test_policy_controller_airgap_repository(
    files: dict[str, bytes], docs: tuple[Doc, Doc]
) -> None:
    (trust_root,) = _yaml_docs(files, "policy-controller-airgap.yaml")
    assert trust_root["metadata"]["name"] == TRUST_ROOT_NAME
    repository = trust_root["spec"]["repository"]
    assert base64.b64decode(repository["root"]) == TUF_ROOT
    assert repository["targets"] == "targets"
    tarball = base64.b64decode(repository["mirrorFS"])
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(tarball))) as tar:
        found = {
            m.name.removeprefix("repository/"): tar.extractfile(m).read()  # type: ignore[union-attr]
            for m in tar.getmembers()
            if m.isfile()
        }
        assert {m.name for m in tar.getmembers() if m.isdir()} == {"repository/targets"}
    assert found == TUF_FILES
    assert TUF_EXPIRES in files["policy-controller-airgap.yaml"].decode()
    # The same files give the same bytes: re-exporting changes nothing.
    again = make(*docs)["policy-controller-airgap.yaml"]
    assert again == files["policy-controller-airgap.yaml"]


def test_tekton_chains(files: dict[str, bytes]) -> None:
    (config_map,) = _yaml_docs(files, "tekton-chains.yaml")
    assert config_map["kind"] == "ConfigMap"
    assert config_map["metadata"] == {"name": "chains-config", "namespace": "tekton-chains"}
    data = config_map["data"]
    assert all(isinstance(v, str) for v in data.values())  # a ConfigMap holds only strings
    # SLSA v1.0 provenance, stored in the registry beside the image.
    assert data["artifacts.taskrun.format"] == "slsa/v2alpha4"
    assert data["artifacts.pipelinerun.format"] == "slsa/v2alpha4"
    for artifact in ("taskrun", "pipelinerun", "oci"):
        assert data[f"artifacts.{artifact}.storage"] == "oci"
        assert data[f"artifacts.{artifact}.signer"] == "x509"
    assert data["builder.id"] == BUILDER_PLACEHOLDER
    assert data["transparency.enabled"] == "true"
    assert data["transparency.url"] == URL
    assert data["signers.x509.fulcio.enabled"] == "true"
    assert data["signers.x509.fulcio.address"] == URL
    assert data["signers.x509.fulcio.issuer"] == ISSUER_PLACEHOLDER
    assert data["signers.x509.identity.token.file"].startswith("/")
    assert data["signers.x509.tuf.mirror.url"] == f"{URL}/tuf"


def test_given_options_replace_the_placeholders(docs: tuple[Doc, Doc]) -> None:
    files = make(
        *docs, identity=IDENTITY, issuer=ISSUER, images="registry.internal/*", builder=BUILDER
    )
    for name, text in files.items():
        if name != "README.md":  # which explains what a placeholder looks like
            assert "REPLACE-WITH-" not in text.decode(), name
    assert ISSUER_PLACEHOLDER not in files["tekton-chains.yaml"].decode()
    (kyverno,) = _yaml_docs(files, "kyverno-clusterpolicy.yaml")
    signature, _ = _keyless(kyverno)
    assert (signature["subject"], signature["issuer"]) == (IDENTITY, ISSUER)
    _, policy = _policy_controller(files)
    assert policy["spec"]["authorities"][0]["keyless"]["identities"] == [
        {"issuer": ISSUER, "subject": IDENTITY}
    ]
    assert policy["spec"]["images"] == [{"glob": "registry.internal/*"}]
    (config_map,) = _yaml_docs(files, "tekton-chains.yaml")
    assert config_map["data"]["signers.x509.fulcio.issuer"] == ISSUER
    assert config_map["data"]["builder.id"] == BUILDER


def test_placeholders_are_explained(files: dict[str, bytes]) -> None:
    for name in ("kyverno-imagevalidatingpolicy.yaml", "kyverno-clusterpolicy.yaml"):
        comments = [line for line in files[name].decode().splitlines() if line.startswith("#")]
        for placeholder in (IMAGE_PATTERN_PLACEHOLDER, BUILDER_PLACEHOLDER):
            assert any(placeholder in line for line in comments), (name, placeholder)
    for name in ("kyverno-clusterpolicy.yaml", "policy-controller.yaml", "cosign.sh"):
        comments = [
            line for line in files[name].decode().splitlines() if line.lstrip().startswith("#")
        ]
        assert any(IDENTITY_PLACEHOLDER in line for line in comments), name
        assert any(ISSUER_PLACEHOLDER in line for line in comments), name


def _retired_root(material: TrustMaterial, tmp_path: Path) -> tuple[Doc, Doc]:
    """A trusted root after rotating every key: the old ones stay, with validFor.end."""
    endpoints = Endpoints(URL)
    old = documents.trusted_root(gather(tmp_path / "old", NOW), endpoints, NOW)
    later = NOW + datetime.timedelta(minutes=1)
    return (
        documents.trusted_root(material, endpoints, later, previous=old),
        documents.signing_config(material, endpoints),
    )


def test_retired_entries(material: TrustMaterial, tmp_path: Path) -> None:
    root, config = _retired_root(material, tmp_path)
    v1 = [t for t in root["tlogs"] if not documents.is_rekor_v2(t)]
    assert len(v1) == 2
    for section in ("ctlogs", "certificateAuthorities", "timestampAuthorities"):
        assert len(root[section]) == 2, section
    files = make(root, config)
    current_ca, retired_ca = root["certificateAuthorities"]
    assert "end" in retired_ca["validFor"]

    # Single-valued consumers get the current material only ...
    assert _pem_chain(files["pem/fulcio-chain.pem"]) == _der_chain(current_ca)
    assert _pem_chain(files["pem/tsa-chain.pem"]) == _der_chain(root["timestampAuthorities"][0])
    assert hashlib.sha256(_spki(files["pem/rekor.pub"])).digest() == _log_id(v1[0])
    assert hashlib.sha256(_spki(files["pem/ctlog.pub"])).digest() == _log_id(root["ctlogs"][0])
    (kyverno,) = _yaml_docs(files, "kyverno-clusterpolicy.yaml")
    signature, _ = _keyless(kyverno)
    assert hashlib.sha256(_spki(signature["rekor"]["pubkey"])).digest() == _log_id(v1[0])
    # ... while retired material stays where a verifier can hold several entries.
    assert _pem_chain(signature["roots"]) == _der_chain(current_ca) + _der_chain(retired_ca)
    trust_root, _ = _policy_controller(files, "policy-controller-legacy.yaml")
    keys = trust_root["spec"]["sigstoreKeys"]
    ids = [hashlib.sha256(_spki(base64.b64decode(t["publicKey"]))).digest() for t in keys["tLogs"]]
    assert ids == [_log_id(t) for t in v1]
    assert len(keys["certificateAuthorities"]) == len(keys["timestampAuthorities"]) == 2
    retired = sorted(name for name in files if name.startswith("pem/retired/"))
    assert [name.split("/")[-1].rsplit("-", 1)[0] for name in retired] == [
        "ctlog",
        "fulcio-chain",
        "rekor",
        "tsa-chain",
    ]
    (old_rekor,) = (files[n] for n in retired if "/rekor-" in n)
    assert hashlib.sha256(_spki(old_rekor)).digest() == _log_id(v1[1])
    assert all(
        f"`{name.removeprefix('pem/retired/')}`" in files["README.md"].decode() for name in retired
    )


def test_a_root_without_a_current_tsa(docs: tuple[Doc, Doc]) -> None:
    root, config = copy.deepcopy(docs[0]), docs[1]
    root["timestampAuthorities"][0]["validFor"]["end"] = root["timestampAuthorities"][0][
        "validFor"
    ]["start"]
    files = make(root, config)
    assert "pem/tsa-chain.pem" not in files
    (kyverno,) = _yaml_docs(files, "kyverno-clusterpolicy.yaml")
    signature, _ = _keyless(kyverno)
    assert "tsaCertChain" not in signature["ctlog"]
    assert "SIGSTORE_TSA_CERTIFICATE_FILE=" not in files["cosign.sh"].decode()
    # The retired TSA can still verify old timestamps in policy-controller.
    _, policy = _policy_controller(files)
    assert "rfc3161timestamp" in policy["spec"]["authorities"][0]


def test_inconsistent_documents_are_rejected(docs: tuple[Doc, Doc]) -> None:
    root, config = docs
    wrong_id = copy.deepcopy(root)
    wrong_id["tlogs"][0]["logId"]["keyId"] = root["ctlogs"][0]["logId"]["keyId"]
    with pytest.raises(ValueError, match="logId"):
        make(wrong_id, config)
    no_ca = copy.deepcopy(root)
    no_ca["certificateAuthorities"][0]["validFor"]["end"] = "2030-01-01T00:00:00Z"
    with pytest.raises(ValueError, match="no current CA"):
        make(no_ca, config)
    bad_cert = copy.deepcopy(root)
    bad_cert["certificateAuthorities"][0]["certChain"]["certificates"][0]["rawBytes"] = "AAAA"
    with pytest.raises(ValueError, match=r"(?i)certificate|asn\.1|parse"):
        make(bad_cert, config)


# --- cosign.sh --------------------------------------------------------------------------------


@pytest.fixture
def export_dir(tmp_path: Path, files: dict[str, bytes], docs: tuple[Doc, Doc]) -> Path:
    """An export directory as ``sigstead trust export`` lays it out."""
    out = tmp_path / "export"
    for name, content in files.items():
        path = out / "snippets" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    (out / "trusted_root.json").write_bytes(documents.dumps(docs[0]))
    (out / "signing_config.v0.2.json").write_bytes(documents.dumps(docs[1]))
    return out


def _fake_cosign(tmp_path: Path, version: str = "v3.1.2") -> tuple[dict[str, str], Path]:
    """An environment whose ``cosign`` only records its arguments, one per line, and answers
    ``cosign version --json`` as the given release does (unrecorded)."""
    bin_dir, record = tmp_path / "bin", tmp_path / "cosign-calls"
    bin_dir.mkdir()
    fake = bin_dir / "cosign"
    fake.write_text(
        "#!/bin/sh\n"
        f'if [ "$1" = version ]; then\n'
        f'  printf \'{{\\n  "gitVersion": "{version}"\\n}}\\n\'; exit\nfi\n'
        f'printf "%s\\n" "$@" >> "{record}"\necho --- >> "{record}"\n'
    )
    fake.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SIGSTORE_", "SIGSTEAD_"))}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    return env, record


def _bash(script: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    assert BASH is not None
    return subprocess.run(
        [BASH, "-c", script], env=env, cwd=cwd, capture_output=True, text=True, check=False
    )


@needs_bash
def test_cosign_sh_is_valid_bash(export_dir: Path) -> None:
    assert BASH is not None
    result = subprocess.run(
        [BASH, "-n", str(export_dir / "snippets" / "cosign.sh")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


@needs_bash
def test_running_cosign_sh_runs_no_cosign(export_dir: Path, tmp_path: Path) -> None:
    env, record = _fake_cosign(tmp_path)
    for how in ("bash snippets/cosign.sh", ". snippets/cosign.sh"):
        result = _bash(how, env, export_dir)
        assert result.returncode == 0, result.stderr
    assert not record.exists()


@needs_bash
def test_cosign_sh_functions_pass_the_flags(export_dir: Path, tmp_path: Path) -> None:
    env, record = _fake_cosign(tmp_path)
    env["SIGSTEAD_ID_TOKEN"] = "token-value"
    script = f"""
set -e
. {export_dir}/snippets/cosign.sh
sigstead_sign_blob artifact.tgz
sigstead_verify_blob artifact.tgz
sigstead_sign_image registry.example.com/app@sha256:0000
sigstead_verify_attestation registry.example.com/app@sha256:0000
sigstead_tuf_initialize
"""
    result = _bash(script, env, tmp_path)  # from elsewhere: paths must not depend on the cwd
    assert result.returncode == 0, result.stderr
    calls = [c.strip("\n").split("\n") for c in record.read_text().split("---\n") if c.strip()]
    sign_blob, verify_blob, sign_image, verify_attestation, initialize = calls

    def flag(call: list[str], name: str) -> str:
        return call[call.index(name) + 1]

    root = str(export_dir / "trusted_root.json")
    config = str(export_dir / "signing_config.v0.2.json")
    assert sign_blob[0] == "sign-blob"
    assert flag(sign_blob, "--signing-config") == config
    assert flag(sign_blob, "--trusted-root") == root
    assert flag(sign_blob, "--identity-token") == "token-value"
    assert flag(sign_blob, "--bundle") == "artifact.tgz.sigstore.json"
    assert sign_blob[-1] == "artifact.tgz"
    assert verify_blob[0] == "verify-blob"
    assert flag(verify_blob, "--trusted-root") == root
    assert flag(verify_blob, "--certificate-identity") == IDENTITY_PLACEHOLDER
    assert flag(verify_blob, "--certificate-oidc-issuer") == ISSUER_PLACEHOLDER
    assert "--use-signed-timestamps" not in verify_blob  # Rekor v1: the SET is the time
    assert sign_image[0] == "sign"
    assert flag(sign_image, "--signing-config") == config
    assert verify_attestation[0] == "verify-attestation"
    assert flag(verify_attestation, "--type") == SLSA_PROVENANCE_V1
    assert initialize == [
        "initialize",
        "--mirror",
        f"{URL}/tuf",
        "--root",
        str(export_dir / "tuf" / "root.json"),
    ]
    for call in calls:
        assert "--new-bundle-format" not in call  # v3's default


@needs_bash
def test_cosign_sh_asks_cosign_v2_for_bundles(export_dir: Path, tmp_path: Path) -> None:
    env, record = _fake_cosign(tmp_path, version="v2.6.4")
    env["SIGSTEAD_ID_TOKEN"] = "token-value"
    script = f"""
set -e
. {export_dir}/snippets/cosign.sh
sigstead_sign_blob artifact.tgz
sigstead_verify_image registry.example.com/app@sha256:0000
sigstead_sign_image_legacy registry.example.com/app@sha256:0000
"""
    result = _bash(script, env, tmp_path)
    assert result.returncode == 0, result.stderr
    sign_blob, verify_image, legacy = (
        c.strip("\n").split("\n") for c in record.read_text().split("---\n") if c.strip()
    )
    assert sign_blob[:2] == ["sign-blob", "--new-bundle-format"]
    assert verify_image[:2] == ["verify", "--new-bundle-format"]
    assert "--new-bundle-format=false" in legacy
    assert "--timestamp-server-url" in legacy


@needs_bash
def test_cosign_sh_signing_needs_a_token(export_dir: Path, tmp_path: Path) -> None:
    env, record = _fake_cosign(tmp_path)
    result = _bash(f". {export_dir}/snippets/cosign.sh; sigstead_sign_blob x", env, tmp_path)
    assert result.returncode != 0
    assert "SIGSTEAD_ID_TOKEN" in result.stderr
    assert not record.exists()


@needs_bash
def test_cosign_sh_identity_and_legacy_env(
    docs: tuple[Doc, Doc], tmp_path: Path, export_dir: Path
) -> None:
    script_path = export_dir / "snippets" / "cosign.sh"
    # An identity with shell metacharacters must arrive verbatim.
    identity = "build's $HOME `id` identity"
    script_path.write_bytes(make(*docs, identity=identity, issuer=ISSUER)["cosign.sh"])
    env, _ = _fake_cosign(tmp_path)
    names = (
        "SIGSTORE_ROOT_FILE",
        "SIGSTORE_REKOR_PUBLIC_KEY",
        "SIGSTORE_CT_LOG_PUBLIC_KEY_FILE",
        "SIGSTORE_TSA_CERTIFICATE_FILE",
    )
    script = f'. "{script_path}"; sigstead_legacy_env; ' + "; ".join(
        f'printf "%s\\n" "${n}"' for n in ("SIGSTEAD_IDENTITY", "SIGSTEAD_ISSUER", *names)
    )
    result = _bash(script, env, tmp_path)
    assert result.returncode == 0, result.stderr
    got_identity, got_issuer, *paths = result.stdout.splitlines()
    assert (got_identity, got_issuer) == (identity, ISSUER)
    pem = export_dir / "snippets" / "pem"
    assert paths == [
        str(pem / "fulcio-chain.pem"),
        str(pem / "rekor.pub"),
        str(pem / "ctlog.pub"),
        str(pem / "tsa-chain.pem"),
    ]
    assert all(Path(p).is_file() for p in paths)


def test_comments_refill_paragraphs_and_keep_commands() -> None:
    text = """
First sentence ends at
https://sigstore.corp.example/a/rather/long/path/that/does/not/fit/on/the/same/line/as/the/rest.

Run:
  kubectl apply -f x.yaml
- a bullet whose text goes on long enough that it has to wrap onto a second line under
  itself, and then carries on for a while longer than that.
"""
    lines = snippets_module._comment(text).splitlines()
    assert all(line.startswith("#") and len(line) <= 100 for line in lines)
    # The sentence broken before its URL is one paragraph again, wrapped where it must be.
    assert lines[:3] == [
        "# First sentence ends at",
        "# https://sigstore.corp.example/a/rather/long/path/that/does/not/fit/on/the/same/line/as/"
        "the/rest.",
        "#",
    ]
    # A command under a heading keeps its own line and indent.
    assert lines[3:5] == ["# Run:", "#   kubectl apply -f x.yaml"]
    # The bullet is refilled: full first line, continuation hanging under its text.
    bullet = lines[5:]
    assert len(bullet) == 2
    assert bullet[0].startswith("# - a bullet")
    assert len(bullet[0]) > 95
    assert bullet[1] == "#   then carries on for a while longer than that."
    sentence = (
        "a bullet whose text goes on long enough that it has to wrap onto a second line under "
        "itself, and then carries on for a while longer than that."
    )
    assert " ".join(line[4:] for line in bullet) == sentence
