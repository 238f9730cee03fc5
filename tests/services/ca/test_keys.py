"""CA key material: generated 0600 on first start, reloaded; operator chains validated."""

from __future__ import annotations

import datetime
import os
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from services.ca import keys
from tests.services.ca.conftest import NOW


def test_first_start_generates_a_complete_ca(tmp_path: Path) -> None:
    ca = keys.load_or_create(tmp_path, NOW)
    ca_dir = tmp_path / "ca"
    assert sorted(os.listdir(ca_dir)) == ["ca.key", "chain.pem", "root.key"]
    for name in ("ca.key", "root.key"):
        assert (ca_dir / name).stat().st_mode & 0o777 == 0o600
    assert ca_dir.stat().st_mode & 0o777 == 0o700
    assert [p.name for p in tmp_path.iterdir()] == ["ca"]  # no staging left behind

    intermediate, root = ca.chain
    assert isinstance(ca.key, ec.EllipticCurvePrivateKey)
    assert ca.key.curve.name == "secp384r1"
    assert isinstance(ca.signature_hash, hashes.SHA384)
    assert root.subject == root.issuer
    assert intermediate.issuer == root.subject
    eku = intermediate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CODE_SIGNING]
    bc = intermediate.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical
    assert bc.value.ca
    assert bc.value.path_length == 0
    with pytest.raises(x509.ExtensionNotFound):
        root.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    assert root.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    assert "PRIVATE" not in repr(ca)
    assert "secp384r1" not in repr(ca)

    again = keys.load_or_create(tmp_path, NOW + datetime.timedelta(days=30))
    assert again.chain == ca.chain
    assert again.key.public_key() == ca.key.public_key()


@pytest.mark.parametrize(
    "key_type", [t for t in keys.CAKeyType if t is not keys.CAKeyType.RSA_4096]
)
def test_every_generated_key_type_validates(key_type: keys.CAKeyType) -> None:
    _root_key, ca_key, chain = keys.generate(NOW, key_type=key_type)
    keys.validate_chain(ca_key, chain, NOW)


def _write_key(path: Path, key: keys.CAPrivateKey, password: bytes | None = None) -> None:
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password)
        if password
        else serialization.NoEncryption()
    )
    data = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _write_chain(path: Path, chain: tuple[x509.Certificate, ...]) -> None:
    path.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain))


def test_load_operator_material_with_password(tmp_path: Path) -> None:
    _, ca_key, chain = keys.generate(NOW)
    _write_key(tmp_path / "k.pem", ca_key, b"hunter2")
    _write_chain(tmp_path / "chain.pem", chain)
    ca = keys.load(tmp_path / "k.pem", tmp_path / "chain.pem", NOW, password=b"hunter2")
    assert ca.chain == chain
    with pytest.raises(keys.CAKeyError, match="cannot load"):
        keys.load(tmp_path / "k.pem", tmp_path / "chain.pem", NOW, password=b"wrong")


def test_open_key_permissions_are_refused(tmp_path: Path) -> None:
    _, ca_key, chain = keys.generate(NOW)
    _write_key(tmp_path / "k.pem", ca_key)
    _write_chain(tmp_path / "chain.pem", chain)
    (tmp_path / "k.pem").chmod(0o644)
    with pytest.raises(keys.CAKeyError, match="too open"):
        keys.load(tmp_path / "k.pem", tmp_path / "chain.pem", NOW)


def _ca_cert(
    subject_cn: str,
    key: keys.CAPrivateKey,
    issuer_cn: str,
    issuer_key: keys.CAPrivateKey,
    *,
    ca: bool = True,
    bc_critical: bool = True,
    path_length: int | None = None,
    cert_sign: bool = True,
    ekus: list[x509.ObjectIdentifier] | None = None,
    ski: bool = True,
    days: int = 365,
) -> x509.Certificate:
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject_cn)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_cn)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - datetime.timedelta(days=1))
        .not_valid_after(NOW + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=path_length), bc_critical)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, cert_sign, True, False, False), True
        )
    )
    if ekus is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage(ekus), False)
    if ski:
        builder = builder.add_extension(
            x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False
        )
    return builder.sign(issuer_key, hashes.SHA256())


P256 = ec.SECP256R1()
CODE = [ExtendedKeyUsageOID.CODE_SIGNING]


def _bad_chain(case: str) -> tuple[keys.CAPrivateKey, tuple[x509.Certificate, ...], str]:
    root_key = ec.generate_private_key(P256)
    key = ec.generate_private_key(P256)
    root = _ca_cert("root", root_key, "root", root_key)
    good = _ca_cert("int", key, "root", root_key, ekus=CODE)
    other = ec.generate_private_key(P256)
    if case == "empty":
        return key, (), "empty"
    if case == "key mismatch":
        return other, (good, root), "does not match"
    if case == "leaf not ca":
        return key, (_ca_cert("int", key, "root", root_key, ca=False, ekus=CODE), root), "CA:TRUE"
    if case == "bc not critical":
        return (
            key,
            (_ca_cert("int", key, "root", root_key, bc_critical=False, ekus=CODE), root),
            "critical",
        )
    if case == "no cert sign":
        return (
            key,
            (_ca_cert("int", key, "root", root_key, cert_sign=False, ekus=CODE), root),
            "keyCertSign",
        )
    if case == "no eku on intermediate":
        return key, (_ca_cert("int", key, "root", root_key), root), "codeSigning"
    if case == "wrong eku":
        eku = [ExtendedKeyUsageOID.SERVER_AUTH]
        return key, (_ca_cert("int", key, "root", root_key, ekus=eku), root), "codeSigning"
    if case == "pathlen":
        root0 = _ca_cert("root", root_key, "root", root_key, path_length=0)
        return key, (good, root0), "pathlen"
    if case == "wrong issuer":
        return key, (_ca_cert("int", key, "root", other, ekus=CODE), root), "not issued by"
    if case == "root not self-signed":
        fake_root = _ca_cert("root", root_key, "root", other)
        return key, (good, fake_root), "self-signed"
    if case == "expired":
        return key, (_ca_cert("int", key, "root", root_key, ekus=CODE, days=-0), root), "not at"
    if case == "no ski":
        return (
            key,
            (_ca_cert("int", key, "root", root_key, ekus=CODE, ski=False), root),
            "subjectKeyIdentifier",
        )
    if case == "ed25519":
        ed = ed25519.Ed25519PrivateKey.generate()
        return ed, (root,), "EdDSA"  # type: ignore[return-value]
    if case == "small rsa":
        small = rsa.generate_private_key(65537, 1024)
        return small, (root,), "2048"
    raise AssertionError(case)


@pytest.mark.parametrize(
    "case",
    [
        "empty",
        "key mismatch",
        "leaf not ca",
        "bc not critical",
        "no cert sign",
        "no eku on intermediate",
        "wrong eku",
        "pathlen",
        "wrong issuer",
        "root not self-signed",
        "expired",
        "no ski",
        "ed25519",
        "small rsa",
    ],
)
def test_bad_chains_are_refused(case: str) -> None:
    key, chain, words = _bad_chain(case)
    with pytest.raises(keys.CAKeyError, match=words):
        keys.validate_chain(key, chain, NOW + datetime.timedelta(hours=1))


def test_single_root_signing_directly_is_allowed() -> None:
    # Fulcio's ephemeral CA issues leaves from the root itself; EKU is then not required.
    root_key = ec.generate_private_key(P256)
    root = _ca_cert("root", root_key, "root", root_key, path_length=1)
    keys.validate_chain(root_key, (root,), NOW)
