"""TSA key material: generated 0600 on first start, reloaded, and chains validated as §7.4 says."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from services.tsa import keys

NOW = datetime.datetime(2026, 11, 22, tzinfo=datetime.UTC)


def test_first_start_generates_0600_keys_and_a_valid_chain(tmp_path: Path) -> None:
    key, chain = keys.load_or_create(tmp_path, NOW)
    for name in ("tsa.key", "tsa-root.key"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o600
    again_key, again_chain = keys.load_or_create(tmp_path, NOW + datetime.timedelta(days=3))
    assert again_chain == chain
    assert again_key.private_numbers() == key.private_numbers()
    assert len(chain) == 2
    assert chain[0].not_valid_before_utc <= NOW


def _leaf(
    root_key: ec.EllipticCurvePrivateKey,
    key: ec.EllipticCurvePrivateKey,
    *,
    ekus: list[x509.ObjectIdentifier],
    critical: bool = True,
    ca: bool = False,
) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "leaf")])
    root_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "root")])
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(root_name)
        .public_key(key.public_key())
        .serial_number(2)
        .not_valid_before(NOW)
        .not_valid_after(NOW + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage(ekus), critical=critical)
        .sign(root_key, hashes.SHA256())
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"ekus": [ExtendedKeyUsageOID.TIME_STAMPING, ExtendedKeyUsageOID.CODE_SIGNING]},
            "exactly one",
        ),
        ({"ekus": [ExtendedKeyUsageOID.TIME_STAMPING], "critical": False}, "must be critical"),
        ({"ekus": [ExtendedKeyUsageOID.TIME_STAMPING], "ca": True}, "must not be a CA"),
    ],
)
def test_chain_rules(tmp_path: Path, kwargs: dict[str, object], message: str) -> None:
    root_key, _, chain = keys.generate(NOW)
    key = ec.generate_private_key(ec.SECP256R1())
    bad = _leaf(root_key, key, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(keys.ChainError, match=message):
        keys.validate_chain(key, [bad, chain[1]])


def test_chain_needs_two_certs_and_a_matching_key(tmp_path: Path) -> None:
    _, leaf_key, chain = keys.generate(NOW)
    with pytest.raises(keys.ChainError, match="at least 2"):
        keys.validate_chain(leaf_key, chain[:1])
    with pytest.raises(keys.ChainError, match="does not match"):
        keys.validate_chain(ec.generate_private_key(ec.SECP256R1()), chain)
    other_root = keys.generate(NOW)[2][1]
    with pytest.raises(keys.ChainError, match="not issued by"):
        keys.validate_chain(leaf_key, [chain[0], other_root])


def test_bring_your_own_key_and_chain(tmp_path: Path) -> None:
    _, leaf_key, chain = keys.generate(NOW)
    from services.keys import write_private_key

    write_private_key(tmp_path / "k.pem", leaf_key)
    (tmp_path / "c.pem").write_bytes(
        b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain)
    )
    _, loaded = keys.load(tmp_path / "k.pem", tmp_path / "c.pem")
    assert loaded == chain
