"""The trust documents, parsed by sigstore-python's strict models and cross-checked with the keys
the services actually sign with."""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from sigstore.errors import Error as SigstoreError
from sigstore.models import ClientTrustConfig

from services.keys import load_or_create_log_key, load_private_key
from services.log.checkpoint import key_id
from services.trust import documents
from services.trust.documents import Endpoints, PublicURLError
from services.trust.material import TrustMaterial, gather, retire_rekor_v2

NOW = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
URL = "http://sigstead.internal:3000"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="module")
def material(data_dir: Path) -> TrustMaterial:
    return gather(data_dir, NOW)


def _docs(material: TrustMaterial, previous: Any = None) -> tuple[Any, Any]:
    endpoints = Endpoints(URL)
    return (
        documents.trusted_root(material, endpoints, NOW, previous),
        documents.signing_config(material, endpoints),
    )


def test_sigstore_python_accepts_the_client_trust_config(material: TrustMaterial) -> None:
    root, config = _docs(material)
    text = documents.dumps(documents.client_trust_config(root, config)).decode()
    parsed = ClientTrustConfig.from_json(text)
    # The parsed signing config yields exactly our services (it drops any it cannot use).
    signing = parsed.signing_config
    assert signing.get_fulcio().url == URL
    # The client's submitters carry the URL with the API prefix it appends.
    assert [t.url for t in signing.get_tlogs()] == [f"{URL}/api/v1"]  # type: ignore[attr-defined]
    assert [t.url for t in signing.get_tsas()] == [f"{URL}/api/v1/timestamp"]
    trusted = parsed.trusted_root
    assert material.ca_chain is not None
    assert len(trusted.get_fulcio_certs()) == len(material.ca_chain)
    assert len(trusted.get_timestamp_authorities()) == 1


def test_sigstore_python_takes_the_oidc_url_and_operator_for_interactive_sign_in(
    material: TrustMaterial,
) -> None:
    """``sigstore sign`` without a token signs in at ``get_oidc_url()``; with no ``oidcUrls`` it
    fails (what ``--oidc-url`` on the server is for)."""
    endpoints = Endpoints(URL, "ACME Security")
    root = documents.trusted_root(material, endpoints, NOW)
    config = documents.signing_config(
        material, endpoints, ["https://keycloak.corp.example/realms/eng"]
    )
    text = documents.dumps(documents.client_trust_config(root, config)).decode()
    signing = ClientTrustConfig.from_json(text).signing_config
    assert signing.get_oidc_url() == "https://keycloak.corp.example/realms/eng"
    assert {s["operator"] for s in config["caUrls"] + config["tsaUrls"]} == {"ACME Security"}
    _, without = _docs(material)
    text = documents.dumps(documents.client_trust_config(root, without)).decode()
    with pytest.raises(SigstoreError, match="No valid OIDC provider"):
        ClientTrustConfig.from_json(text).signing_config.get_oidc_url()


def test_log_ids_are_the_ids_the_services_sign_with(
    material: TrustMaterial, data_dir: Path
) -> None:
    root, _ = _docs(material)
    for section, key_file, at in (
        ("tlogs", "rekor.pem", 0),
        ("tlogs", "rekor-v2.pem", 1),
        ("ctlogs", "ctlog.pem", 0),
    ):
        entry = root[section][at]
        private = load_private_key(data_dir / "keys" / key_file)
        public = private.public_key()
        der = public.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        assert base64.b64decode(entry["publicKey"]["rawBytes"]) == der
        assert base64.b64decode(entry["logId"]["keyId"]) == hashlib.sha256(der).digest()
        assert base64.b64decode(entry["logId"]["keyId"]) == key_id(public)  # type: ignore[arg-type]
        assert entry["publicKey"]["keyDetails"] == "PKIX_ECDSA_P256_SHA_256"
    assert root["ctlogs"][0]["baseUrl"] == f"{URL}/ct"
    (tsa,) = root["timestampAuthorities"]
    assert len(tsa["certChain"]["certificates"]) >= 2
    assert tsa["uri"] == f"{URL}/api/v1/timestamp"


def test_documents_are_deterministic(material: TrustMaterial) -> None:
    first = [documents.dumps(d) for d in _docs(material)]
    second = [documents.dumps(d) for d in _docs(material)]
    assert first == second


def test_every_start_lies_in_the_past(material: TrustMaterial) -> None:
    root, config = _docs(material)
    starts = [e["publicKey"]["validFor"]["start"] for e in root["tlogs"] + root["ctlogs"]] + [
        e["validFor"]["start"] for e in root["certificateAuthorities"]
    ]
    starts += [s["validFor"]["start"] for k in ("caUrls", "rekorTlogUrls") for s in config[k]]
    now = datetime.datetime.now(datetime.UTC)
    for start in starts:
        assert datetime.datetime.fromisoformat(start) <= now


def test_a_published_start_is_kept_and_a_rotated_key_is_retired(
    material: TrustMaterial,
) -> None:
    root, _ = _docs(material)
    published = json.loads(json.dumps(root))
    published["tlogs"][0]["publicKey"]["validFor"]["start"] = "2020-01-01T00:00:00Z"
    retired_log = json.loads(json.dumps(published["tlogs"][0]))
    retired_log["logId"]["keyId"] = base64.b64encode(b"\x01" * 32).decode()
    published["tlogs"].append(retired_log)

    merged, _ = _docs(material, published)
    # v1 first (current, then retired), then the Rekor v2 log.
    current, retired, v2 = merged["tlogs"]
    assert documents.is_rekor_v2(v2)
    assert not documents.is_rekor_v2(current)
    assert current["publicKey"]["validFor"] == {"start": "2020-01-01T00:00:00Z"}
    assert retired["logId"] == retired_log["logId"]
    assert retired["publicKey"]["validFor"]["end"] == NOW.strftime("%Y-%m-%dT%H:%M:%SZ")
    # Merging again keeps the first retirement time: republishing never moves it.
    later = documents.trusted_root(
        material, Endpoints(URL), NOW + datetime.timedelta(days=1), merged
    )
    assert later["tlogs"][1]["publicKey"]["validFor"] == retired["publicKey"]["validFor"]
    # sigstore-python still parses the merged root (a retired key verifies what it signed).
    ClientTrustConfig.from_json(
        json.dumps(documents.client_trust_config(later, _docs(material)[1]))
    )


@pytest.mark.parametrize(
    "url", ["http://host:3000/sigstead", "ftp://host", "http://:3000", "http://h/?q=1"]
)
def test_public_urls_the_clients_cannot_use_are_refused(url: str) -> None:
    with pytest.raises(PublicURLError, match="--public-url"):
        Endpoints(url)


def test_a_lone_tsa_certificate_is_refused(material: TrustMaterial) -> None:
    assert material.tsa_chain is not None
    lone = TrustMaterial(material.rekor, material.ct, material.ca_chain, material.tsa_chain[:1])
    with pytest.raises(ValueError, match="TSA chain"):
        documents.trusted_root(lone, Endpoints(URL), NOW)


def test_listing_rekor_v2_without_its_key_names_the_missing_file(material: TrustMaterial) -> None:
    """A trust service on its own files (compose.yaml) without the v2 public key mounted."""
    without = TrustMaterial(material.rekor, material.ct, material.ca_chain, material.tsa_chain)
    assert without.rekor_v2 is None
    with pytest.raises(documents.MissingLogKey, match=r"keys/rekor-v2\.pub"):
        documents.signing_config(without, Endpoints(URL), rekor_version=2)


def test_an_ed25519_v2_log_is_listed_by_its_c2sp_key_id_under_its_own_url(
    tmp_path: Path,
) -> None:
    """The public 2025 log's key type: the log ID clients look the log up by is C2SP's
    name-bound key ID, under the host of the log's own URL (``--rekor-v2-url``)."""
    keys = tmp_path / "keys"
    keys.mkdir(mode=0o700)
    key = load_or_create_log_key(keys / "rekor-v2.pem", "ed25519")
    material = gather(tmp_path, NOW)
    endpoints = Endpoints(URL, rekor_v2_url="https://log2026.sigstead.internal")
    root = documents.trusted_root(material, endpoints, NOW)
    config = documents.signing_config(material, endpoints, rekor_version=2)
    v2 = root["tlogs"][1]
    assert v2["baseUrl"] == "https://log2026.sigstead.internal"
    assert v2["publicKey"]["keyDetails"] == "PKIX_ED25519"
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    want = hashlib.sha256(b"log2026.sigstead.internal\n\x01" + raw).digest()
    assert base64.b64decode(v2["logId"]["keyId"]) == want
    assert v2["checkpointKeyId"] == v2["logId"]
    assert config["rekorTlogUrls"][0]["url"] == "https://log2026.sigstead.internal"
    assert config["rekorTlogUrls"][1]["url"] == URL
    # sigstore-python reads both documents as they are.
    ClientTrustConfig.from_json(json.dumps(documents.client_trust_config(root, config)))


def test_a_retired_v2_log_stays_listed_until_it_was_retired(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.mkdir(mode=0o700)
    load_or_create_log_key(keys / "rekor-v2.pem", "ed25519")
    old = gather(tmp_path, NOW)
    assert old.rekor_v2 is not None
    retired_at = NOW + datetime.timedelta(days=1)
    retire_rekor_v2(tmp_path, "https://log2026.sigstead.internal", 42, retired_at)
    assert not (keys / "rekor-v2.pem").exists()
    assert oct((keys / "retired" / "rekor-v2-42.pem").stat().st_mode & 0o777) == "0o600"
    new = gather(tmp_path, retired_at)  # makes the new log's key (ECDSA by default)
    assert new.rekor_v2 is not None
    assert new.rekor_v2.public_key != old.rekor_v2.public_key
    (retired,) = new.rekor_v2_retired
    assert (retired.url, retired.host, retired.tree_id) == (
        "https://log2026.sigstead.internal",
        "log2026.sigstead.internal",
        42,
    )
    endpoints = Endpoints(URL, rekor_v2_url="https://log2027.sigstead.internal")
    first = documents.trusted_root(old, Endpoints(URL, rekor_v2_url=retired.url), NOW)
    root = documents.trusted_root(new, endpoints, retired_at, first)
    _v1, active, gone = root["tlogs"]
    assert active["baseUrl"] == "https://log2027.sigstead.internal"
    assert "end" not in active["publicKey"]["validFor"]
    assert gone["baseUrl"] == "https://log2026.sigstead.internal"
    assert gone["logId"] == first["tlogs"][1]["logId"]  # the ID its bundles carry
    assert gone["publicKey"]["validFor"] == {
        "start": first["tlogs"][1]["publicKey"]["validFor"]["start"],
        "end": retired_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    # Without the previous root (a fresh export) the retired log is listed all the same.
    assert documents.trusted_root(new, endpoints, retired_at)["tlogs"][2]["logId"] == gone["logId"]
