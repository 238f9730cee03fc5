"""``publish`` and ``export``: what the server serves and what the operator hands out agree."""

from __future__ import annotations

import base64
import datetime
import json
from pathlib import Path

import pytest
from cryptography import x509

from services.ca import keys as ca_keys
from services.trust.material import MissingKeysError
from services.trust.publish import (
    CLIENT_TRUST_CONFIG,
    SIGNING_CONFIG,
    TRUSTED_ROOT,
    NotPublishedError,
    TrustOptions,
    export,
    publish,
    tuf_repository,
)

NOW = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
URL = "http://sigstead.internal:3000"
# The first version of the online TUF roles: the clock, so a restored repository never goes back.
FIRST = int(NOW.timestamp())


def test_export_writes_the_published_bytes_and_no_private_key(tmp_path: Path) -> None:
    data, out = tmp_path / "data", tmp_path / "out"
    first = publish(data, TrustOptions(URL), NOW)
    exported = export(data, TrustOptions(URL), out, NOW, identity="ci@corp.example")
    # The server published first; the export changed nothing and wrote the same documents.
    assert exported.published.changed == ()
    assert exported.published.targets == first.published.targets == FIRST
    repo = tuf_repository(data)
    assert (out / TRUSTED_ROOT).read_bytes() == repo.current_target(TRUSTED_ROOT)
    assert (out / SIGNING_CONFIG).read_bytes() == repo.current_target(SIGNING_CONFIG)
    combined = json.loads((out / CLIENT_TRUST_CONFIG).read_text())
    assert combined["trustedRoot"] == json.loads((out / TRUSTED_ROOT).read_text())
    assert (out / "tuf" / "root.json").read_bytes() == repo.root_json()
    assert (out / "snippets" / "pem" / "rekor.pub").is_file()
    for path in out.rglob("*"):
        if path.is_file():
            assert b"PRIVATE KEY" not in path.read_bytes(), path


def test_a_new_public_url_is_a_new_targets_version(tmp_path: Path) -> None:
    data = tmp_path / "data"
    publish(data, TrustOptions(URL), NOW)
    moved = publish(data, TrustOptions("https://sigstore.corp.example"), NOW)
    assert moved.published.targets == FIRST + 1
    assert moved.trusted_root["tlogs"][0]["baseUrl"] == "https://sigstore.corp.example"
    # Same keys, so no key is retired and the published starts are kept.
    assert len(moved.trusted_root["tlogs"]) == 2  # Rekor v1 and v2


def test_an_operator_chain_replaces_the_generated_ca(tmp_path: Path) -> None:
    operator_ca = ca_keys.load_or_create(tmp_path / "operator", NOW)
    exported = publish(tmp_path / "data", TrustOptions(URL, ca_chain=operator_ca.chain), NOW)
    (authority,) = exported.trusted_root["certificateAuthorities"]
    ders = [c["rawBytes"] for c in authority["certChain"]["certificates"]]
    assert len(ders) == len(operator_ca.chain)
    first = x509.load_der_x509_certificate(base64.b64decode(ders[0]))
    assert first == operator_ca.signing_certificate
    assert not (tmp_path / "data" / "ca").exists()


def test_export_names_the_missing_keys_and_creates_none(tmp_path: Path) -> None:
    data, out = tmp_path / "data", tmp_path / "out"
    with pytest.raises(MissingKeysError) as err:
        export(data, TrustOptions(URL), out, NOW)
    assert str(err.value) == (
        f"{data} holds no keys/rekor.pub, keys/ctlog.pub, tsa/tsa-chain.pem, ca/chain.pem: name "
        "the data directory the server runs with, with the server's --ca-chain if its CA key "
        "lives elsewhere, or create the keys before its first start"
    )
    assert not data.exists()
    assert not out.exists()
    # With an operator's CA chain, the data directory's CA is not needed.
    operator_ca = ca_keys.load_or_create(tmp_path / "operator", NOW)
    with pytest.raises(MissingKeysError, match=r"tsa/tsa-chain.pem: name"):
        export(data, TrustOptions(URL, ca_chain=operator_ca.chain), out, NOW)
    exported = export(data, TrustOptions(URL), out, NOW, create_keys=True)
    assert exported.published.targets == FIRST


@pytest.mark.parametrize(
    ("server", "exporter", "message"),
    [
        (
            TrustOptions(URL),
            TrustOptions("https://sigstore.corp.example"),
            f"the server publishes public URL {URL}, not https://sigstore.corp.example: give "
            "the server's --public-url (moving clients is `sigstead trust publish`)",
        ),
        (
            TrustOptions(URL),
            TrustOptions(URL, operator="ACME"),
            "the server publishes operator 'sigstead.internal', not 'ACME': give the server's "
            "--operator (moving clients is `sigstead trust publish`)",
        ),
        (
            TrustOptions(URL, oidc_urls=["https://idp.example"]),
            TrustOptions(URL),
            "the server publishes sign-in URLs https://idp.example, not none: give the server's "
            "--oidc-url (moving clients is `sigstead trust publish`)",
        ),
        (
            TrustOptions(URL, services=frozenset({"log", "tsa"})),
            TrustOptions(URL),
            "the server publishes services Rekor log, TSA, not Rekor log, CA with its CT log, "
            "TSA: give the server's --services (moving clients is `sigstead trust publish`)",
        ),
    ],
)
def test_export_refuses_settings_the_server_does_not_publish(
    tmp_path: Path, server: TrustOptions, exporter: TrustOptions, message: str
) -> None:
    """Two publishers with different settings would overwrite each other's targets for ever."""
    data, out = tmp_path / "data", tmp_path / "out"
    publish(data, server, NOW)
    with pytest.raises(NotPublishedError) as err:
        export(data, exporter, out, NOW)
    assert str(err.value) == message
    assert not out.exists()
    published = tuf_repository(data).published()
    assert published is not None
    assert published.targets == FIRST


def test_export_refuses_a_ca_the_server_does_not_publish(tmp_path: Path) -> None:
    data = tmp_path / "data"
    operator_ca = ca_keys.load_or_create(tmp_path / "operator", NOW)
    publish(data, TrustOptions(URL, ca_chain=operator_ca.chain), NOW)
    # The server's CA key lives elsewhere: the data directory has no CA of its own.
    with pytest.raises(MissingKeysError, match="with the server's --ca-chain if its CA key"):
        export(data, TrustOptions(URL), tmp_path / "out", NOW)
    exported = export(data, TrustOptions(URL, ca_chain=operator_ca.chain), tmp_path / "out", NOW)
    assert exported.published.changed == ()
    # The server runs with the data directory's CA; an export naming another chain is refused.
    publish(data, TrustOptions(URL), NOW)
    with pytest.raises(NotPublishedError, match="give the server's --ca-chain"):
        export(data, TrustOptions(URL, ca_chain=operator_ca.chain), tmp_path / "out", NOW)
