"""sigstore-python's own Rekor client code against a running ``sigstead up``."""

from __future__ import annotations

import base64
import hashlib
import threading

import requests
from cryptography.hazmat.primitives import serialization
from rekor_types import Hashedrekord
from sigstore._internal.rekor.client import RekorClient
from sigstore._internal.trust import Keyring, RekorKeyring
from sigstore.models import TransparencyLogEntry
from sigstore_models.common import v1 as common_v1

from tests.serverproc import Server, start_server, stop_server
from tests.services.log.rekor.test_api import Signer


def _keyring(url: str) -> RekorKeyring:
    pem = requests.get(f"{url}/api/v1/log/publicKey", timeout=5).content
    spki = serialization.load_pem_public_key(pem).public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return RekorKeyring(
        Keyring(
            [
                common_v1.PublicKey(
                    raw_bytes=base64.b64encode(spki),
                    key_details=common_v1.PublicKeyDetails.PKIX_ECDSA_P256_SHA_256,
                )
            ]
        )
    )


def test_sign_retrieve_and_verify_with_sigstore_python(server: Server) -> None:
    client = RekorClient(server.url)
    ring = _keyring(server.url)
    signer = Signer()
    # A freshly created log: the first client entry sits after the log's genesis entry.
    proposed = signer.hashedrekord(b"first")
    first = client.create_entry(proposed)  # type: ignore[arg-type]
    first._verify(ring)
    assert first._inner.log_index == 1
    att = client.create_entry(signer.dsse(hashlib.sha256(b"img").hexdigest()))  # type: ignore[arg-type]
    att._verify(ring)
    info = client.log.get()
    assert info.tree_size == 3
    # sigstore-python's get() cannot ask for index 0 (it tests ``bool(log_index)``); the genesis
    # entry comes from the retrieve endpoint and verifies like any other.
    client.log.entries.get(log_index=2)._verify(ring)
    (genesis,) = requests.post(
        f"{server.url}/api/v1/log/entries/retrieve", json={"logIndexes": [0]}, timeout=30
    ).json()
    TransparencyLogEntry._from_v1_response(genesis)._verify(ring)
    found = client.log.entries.retrieve.post(Hashedrekord.model_validate(proposed))
    assert found is not None
    found._verify(ring)
    assert found._inner.log_index == 1
    missing = client.log.entries.retrieve.post(
        Hashedrekord.model_validate(signer.hashedrekord(b"never"))
    )
    assert missing is None


def test_concurrent_clients_and_graceful_shutdown(server: Server) -> None:
    """Many clients at once; SIGTERM lets the in-flight batch commit; a restart serves it all."""
    client = RekorClient(server.url)
    ring = _keyring(server.url)
    signer = Signer()
    results: list[int] = []
    errors: list[BaseException] = []

    def submit(i: int) -> None:
        try:
            entry = client.create_entry(signer.hashedrekord(b"c%d" % i))  # type: ignore[arg-type]
            entry._verify(ring)
            results.append(entry._inner.log_index)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=submit, args=(i,)) for i in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sorted(results) == list(range(1, 41))
    assert stop_server(server) == 0
    again = start_server(server.data_dir, port=server.port)
    try:
        assert RekorClient(again.url).log.get().tree_size == 41
        again_entry = RekorClient(again.url).log.entries.get(log_index=40)
        again_entry._verify(_keyring(again.url))
    finally:
        stop_server(again)
