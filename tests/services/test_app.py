"""``create_app``'s trust component: the TUF repository served at ``/tuf/`` over HTTP."""

from __future__ import annotations

import asyncio
import datetime
import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient
from tuf.ngclient import Updater

from services.app import (
    COMPONENTS,
    Settings,
    check_trust,
    configured,
    create_app,
    trust_options,
)
from services.ca.config import ConfigError
from services.trust.material import MissingKeysError, describe, ensure_keys, gather, public_files
from services.trust.publish import (
    SIGNING_CONFIG,
    TRUSTED_ROOT,
    PublicationMismatch,
    TrustOptions,
    export,
    publish,
    tuf_repository,
)
from services.trust.tuf import ROLES

NOW = datetime.datetime.now(datetime.UTC)


async def _client(aiohttp_client: AiohttpClient, data_dir: Path) -> TestClient:  # type: ignore[type-arg]
    # ``serve trust`` creates no key: ``keys init`` has made them (compose.yaml's order).
    ensure_keys(data_dir, datetime.datetime.now(datetime.UTC))
    settings = Settings(data_dir=data_dir, public_url="http://sigstead.test:3000")
    return await aiohttp_client(create_app(settings, components=("trust",)))


def _fetch_with_tuf_client(base: str, root: bytes, client_dir: Path) -> bytes:
    client_dir.mkdir()
    updater = Updater(
        metadata_dir=str(client_dir),
        metadata_base_url=base,
        target_dir=str(client_dir),
        target_base_url=f"{base}/targets/",
        bootstrap=root,
    )
    updater.refresh()
    info = updater.get_targetinfo(TRUSTED_ROOT)
    assert info is not None
    return Path(updater.download_target(info)).read_bytes()


async def test_the_served_repository_verifies_in_the_tuf_client(
    aiohttp_client: AiohttpClient, tmp_path: Path
) -> None:
    client = await _client(aiohttp_client, tmp_path / "data")
    repo = tuf_repository(tmp_path / "data")
    base = str(client.make_url("/tuf"))
    got = await asyncio.to_thread(
        _fetch_with_tuf_client, base, repo.root_json(), tmp_path / "client"
    )
    root = json.loads(got)
    assert root["tlogs"][0]["baseUrl"] == "http://sigstead.test:3000"
    assert got == repo.current_target(TRUSTED_ROOT)


async def test_cache_headers_and_refusals(aiohttp_client: AiohttpClient, tmp_path: Path) -> None:
    client = await _client(aiohttp_client, tmp_path / "data")
    resp = await client.get("/tuf/timestamp.json")
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "application/json"
    assert resp.headers["Cache-Control"] == "no-cache"
    resp = await client.get("/tuf/1.root.json")
    assert resp.status == 200
    assert "immutable" in resp.headers["Cache-Control"]
    # Nothing outside the repository, no keys, no temporaries, nothing missing.
    for path in (
        "/tuf/../keys/root.pem",
        "/tuf/%2e%2e/keys/root.pem",
        "/tuf/..%2fkeys%2froot.pem",
        "/tuf/.timestamp.json.tmp",
        "/tuf/targets/../../keys/root.pem",
        "/tuf/99.root.json",
        "/tuf/",
    ):
        resp = await client.get(path)
        assert resp.status == 404, path


async def test_a_restart_serves_the_same_bytes(
    aiohttp_client: AiohttpClient, tmp_path: Path
) -> None:
    client = await _client(aiohttp_client, tmp_path / "data")
    first = await (await client.get("/tuf/timestamp.json")).read()
    await client.close()
    client = await _client(aiohttp_client, tmp_path / "data")
    assert await (await client.get("/tuf/timestamp.json")).read() == first


async def test_the_server_publishes_its_operator_and_oidc_urls_and_an_export_follows(
    aiohttp_client: AiohttpClient, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    settings = Settings(
        data_dir=data,
        public_url="http://sigstead.test:3000",
        operator="ACME Security",
        oidc_urls=("https://keycloak.corp.example/realms/eng",),
    )
    ensure_keys(data, datetime.datetime.now(datetime.UTC))
    await aiohttp_client(create_app(settings, components=("trust",)))
    repo = tuf_repository(data)
    config_bytes = repo.current_target(SIGNING_CONFIG)
    assert config_bytes is not None
    config = json.loads(config_bytes)
    assert [o["url"] for o in config["oidcUrls"]] == ["https://keycloak.corp.example/realms/eng"]
    assert {s["operator"] for s in config["caUrls"] + config["rekorTlogUrls"]} == {"ACME Security"}

    # An export given the server's settings writes exactly what is published.
    options = TrustOptions(
        "http://sigstead.test:3000",
        operator="ACME Security",
        oidc_urls=["https://keycloak.corp.example/realms/eng"],
    )
    exported = export(data, options, tmp_path / "out", datetime.datetime.now(datetime.UTC))
    assert exported.published.changed == ()
    assert (tmp_path / "out" / SIGNING_CONFIG).read_bytes() == config_bytes


async def test_trust_alone_publishes_from_public_material_and_creates_no_key(
    aiohttp_client: AiohttpClient, tmp_path: Path
) -> None:
    """compose.yaml gives ``serve trust`` the public files and its TUF directory, nothing else."""
    keys, data = tmp_path / "keys", tmp_path / "trust"
    now = datetime.datetime.now(datetime.UTC)
    ensure_keys(keys, now)
    for path in public_files(keys):
        (data / path.parent.relative_to(keys)).mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, data / path.relative_to(keys))
    settings = Settings(data_dir=data, public_url="http://sigstead.test:3000")
    client = await aiohttp_client(create_app(settings, components=("trust",)))
    assert (await client.get("/tuf/timestamp.json")).status == 200
    published = json.loads(tuf_repository(data).current_target(TRUSTED_ROOT) or b"")
    assert published["tlogs"][0]["logId"]["keyId"] == describe(gather(keys, now))[0].split()[3]
    private = {p.relative_to(data) for p in data.rglob("*.pem") if b"PRIVATE" in p.read_bytes()}
    assert private == {Path("tuf/keys") / f"{role}.pem" for role in ROLES}


async def test_trust_alone_on_a_data_directory_without_keys_fails_to_start(
    aiohttp_client: AiohttpClient, tmp_path: Path
) -> None:
    settings = Settings(data_dir=tmp_path / "data", public_url="http://sigstead.test:3000")
    with pytest.raises(MissingKeysError, match=r"holds no keys/rekor.pub"):
        await aiohttp_client(create_app(settings, components=("trust",)))
    assert not (tmp_path / "data" / "keys").exists()


def test_a_ca_without_an_identity_provider_is_refused(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", public_url="http://sigstead.test:3000")
    with pytest.raises(ConfigError, match="the CA needs --oidc-config"):
        create_app(settings, components=("ca",))
    # Without components, the app is what the settings configure: no CA, and no CA routes.
    assert configured(settings) == ("log", "tsa", "trust")
    app = create_app(settings)
    assert not any(r.canonical.startswith("/api/v2/signing") for r in app.router.resources())
    assert not (tmp_path / "data").exists()  # building the app creates nothing


def test_what_a_process_publishes(tmp_path: Path) -> None:
    data = tmp_path / "data"
    plain = Settings(data_dir=data, public_url="http://sigstead.test:3000")
    with_ca = Settings(data_dir=data, public_url="http://sigstead.test:3000", oidc_config=Path("x"))
    assert trust_options(plain, configured(plain)).services == {"log", "tsa"}
    assert trust_options(with_ca, COMPONENTS).services == {"log", "ca", "tsa"}
    # A trust-only process: what its settings name, else what is published, else all.
    assert trust_options(plain, ("trust",)).services == {"log", "ca", "tsa"}
    publish(data, TrustOptions(plain.public_url, services=frozenset({"log"})), NOW)
    assert trust_options(plain, ("trust",)).services == {"log"}
    named = replace(plain, published_services=frozenset({"log", "tsa"}))
    assert trust_options(named, ("trust",)).services == {"log", "tsa"}
    with pytest.raises(PublicationMismatch, match=r"this start would publish Rekor log, TSA \("):
        check_trust(named, ("trust",))
