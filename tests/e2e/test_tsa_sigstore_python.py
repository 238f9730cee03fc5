"""sigstore-python's own TSA client against the TSA served by ``sigstead up``."""

from __future__ import annotations

from pathlib import Path

import requests
from cryptography import x509
from rfc3161_client import VerifierBuilder
from sigstore._internal.timestamp import TimestampAuthorityClient

from tests.serverproc import Server, start_server, stop_server


def test_sigstore_python_timestamps_and_verifies(server: Server) -> None:
    chain_pem = requests.get(f"{server.url}/api/v1/timestamp/certchain", timeout=10).content
    chain = x509.load_pem_x509_certificates(chain_pem)
    assert len(chain) >= 2  # clients.md: the trusted root needs leaf..root
    signature = b"\x30\x45" + b"\x01" * 69
    response = TimestampAuthorityClient(f"{server.url}/api/v1/timestamp").request_timestamp(
        signature
    )
    verifier = (
        VerifierBuilder()
        .add_root_certificate(chain[-1])
        .tsa_certificate(chain[0])
        .nonce(response.tst_info.nonce)
        .policy_id(x509.ObjectIdentifier("1.3.6.1.4.1.57264.2"))
        .build()
    )
    verifier.verify_message(response, signature)


def test_tsa_served_alone(tmp_path: Path) -> None:
    """``sigstead serve tsa``: the production layout, one service per process."""
    alone = start_server(tmp_path / "tsa-only", command=("serve", "tsa"))
    try:
        assert requests.get(f"{alone.url}/api/v1/log", timeout=10).status_code == 404
        response = TimestampAuthorityClient(f"{alone.url}/api/v1/timestamp").request_timestamp(
            b"sig"
        )
        assert response.tst_info.nonce is not None
    finally:
        assert stop_server(alone) == 0


def test_tsa_worker_pool_shares_one_port(tmp_path: Path) -> None:
    pool = start_server(tmp_path / "pool", command=("serve", "tsa", "--workers", "2"))
    try:
        chains = {
            requests.get(f"{pool.url}/api/v1/timestamp/certchain", timeout=10).content
            for _ in range(10)
        }
        assert len(chains) == 1  # every worker signs with the same key and chain
    finally:
        assert stop_server(pool) == 0
