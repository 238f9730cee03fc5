"""TSA key material: generated 0600 on first start, reloaded, chains validated as §7.4 says."""

from __future__ import annotations

import datetime
import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from services.keys import KeyFileError, write_private_key
from services.tsa import keys
from services.tsa.authority import TimestampAuthority, TimestampRequest
from tests.services.tsa.material import NOW, TIME_STAMPING, ChainSpec, build_chain
from tests.services.tsa.verifiers import openssl_verify, rfc3161_client_verify

DAY = datetime.timedelta(days=1)


def test_first_start_generates_0600_keys_then_reloads_them(tmp_path: Path) -> None:
    directory = tmp_path / "data" / "tsa"
    key, chain = keys.load_or_create(directory, NOW)
    assert directory.stat().st_mode & 0o777 == 0o700
    for name in (keys.KEY_FILE, keys.ROOT_KEY_FILE):
        assert (directory / name).stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in directory.iterdir()) == sorted(
        [keys.KEY_FILE, keys.ROOT_KEY_FILE, keys.CHAIN_FILE]
    )
    assert not [p for p in directory.parent.iterdir() if p.name.startswith(".")]
    again_key, again_chain = keys.load_or_create(directory, NOW + 300 * DAY)
    assert again_chain == chain
    assert again_key.private_numbers() == key.private_numbers()


def test_generated_certificates(tmp_path: Path) -> None:
    _, (leaf, root) = keys.load_or_create(tmp_path / "tsa", NOW)
    ext = leaf.extensions
    eku = ext.get_extension_for_class(x509.ExtendedKeyUsage)
    assert (list(eku.value), eku.critical) == ([ExtendedKeyUsageOID.TIME_STAMPING], True)
    ku = ext.get_extension_for_class(x509.KeyUsage)
    assert ku.critical
    assert ku.value.digital_signature
    assert not ku.value.key_cert_sign
    assert ext.get_extension_for_class(x509.BasicConstraints).value.ca is False
    aki = ext.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    root_ski = root.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == root_ski.digest
    assert ext.get_extension_for_class(x509.SubjectKeyIdentifier)
    assert root.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    assert isinstance(leaf.public_key(), ec.EllipticCurvePublicKey)
    assert leaf.public_key().curve.name == "secp256r1"  # type: ignore[union-attr]
    assert leaf.not_valid_before_utc < NOW < leaf.not_valid_after_utc
    leaf.verify_directly_issued_by(root)


def test_root_key_can_reissue_the_leaf(tmp_path: Path) -> None:
    _, (_, root) = keys.load_or_create(tmp_path / "tsa", NOW)
    root_key = serialization.load_pem_private_key(
        (tmp_path / "tsa" / keys.ROOT_KEY_FILE).read_bytes(), None
    )
    assert root_key.public_key() == root.public_key()


def test_a_lost_first_start_race_uses_the_winners_keys(tmp_path: Path) -> None:
    """A second process whose rename comes second must neither fail nor replace anything."""
    directory = tmp_path / "tsa"
    _, chain = keys.load_or_create(directory, NOW)
    before = {p.name: p.read_bytes() for p in directory.iterdir()}
    keys._create(directory, NOW)  # the loser's path: everything built, rename refused
    assert {p.name: p.read_bytes() for p in directory.iterdir()} == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert keys.load_or_create(directory, NOW)[1] == chain


def test_processes_racing_on_first_start_agree(tmp_path: Path) -> None:
    """Real processes started together (a worker pool): all end up with one key and chain."""
    script = (
        "import sys, datetime, hashlib; from pathlib import Path; from services.tsa import keys;"
        "_, chain = keys.load_or_create(Path(sys.argv[1]), datetime.datetime.now(datetime.UTC));"
        "print(hashlib.sha256(keys.pem_chain(chain)).hexdigest())"
    )
    directory = tmp_path / "tsa"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(directory)],
            stdout=subprocess.PIPE,
            text=True,
            cwd=Path(__file__).resolve().parents[3],  # the repository root, for `services`
        )
        for _ in range(3)
    ]
    outputs = {p.communicate(timeout=60)[0].strip() for p in procs}
    assert [p.returncode for p in procs] == [0, 0, 0]
    assert outputs == {hashlib.sha256((directory / keys.CHAIN_FILE).read_bytes()).hexdigest()}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_crash_leftovers_are_ignored(tmp_path: Path) -> None:
    """A crash during first start leaves only a hidden partial directory."""
    leftover = tmp_path / ".tsa.partial-0123456789abcdef"
    leftover.mkdir()
    write_private_key(leftover / keys.KEY_FILE, ec.generate_private_key(ec.SECP256R1()))
    key, chain = keys.load_or_create(tmp_path / "tsa", NOW)
    assert key.public_key() == chain[0].public_key()


def test_a_directory_that_is_not_a_tsa_is_refused(tmp_path: Path) -> None:
    directory = tmp_path / "tsa"
    directory.mkdir()
    (directory / "notes.txt").write_text("mine")
    with pytest.raises(keys.ChainError, match="not a TSA key directory"):
        keys.load_or_create(directory, NOW)
    assert [p.name for p in directory.iterdir()] == ["notes.txt"]


def test_an_empty_directory_is_used(tmp_path: Path) -> None:
    (tmp_path / "tsa").mkdir()
    keys.load_or_create(tmp_path / "tsa", NOW)
    assert (tmp_path / "tsa" / keys.CHAIN_FILE).exists()


def _write(
    tmp_path: Path,
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey,
    chain: list[x509.Certificate],
) -> tuple[Path, Path]:
    key_path, chain_path = tmp_path / "k.pem", tmp_path / "c.pem"
    write_private_key(key_path, key)
    chain_path.write_bytes(keys.pem_chain(chain))
    return key_path, chain_path


def test_bring_your_own_key_and_three_certificate_chain(tmp_path: Path) -> None:
    key, chain = build_chain(ChainSpec(intermediate=True))
    loaded_key, loaded = keys.load(*_write(tmp_path, key, chain), NOW)
    assert loaded == chain
    resp = TimestampAuthority(loaded_key, loaded).stamp(
        TimestampRequest("sha256", hashlib.sha256(b"byo").digest(), 5, True), NOW
    )
    openssl_verify(tmp_path, resp, chain, NOW, data=b"byo")
    rfc3161_client_verify(resp, b"byo", chain, nonce=5)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        pytest.param(ChainSpec(leaf_ekus=None), "no extended key usage", id="no-eku"),
        pytest.param(
            ChainSpec(leaf_ekus=(TIME_STAMPING, ExtendedKeyUsageOID.CODE_SIGNING)),
            "exactly one EKU",
            id="two-ekus",
        ),
        pytest.param(
            ChainSpec(leaf_ekus=(ExtendedKeyUsageOID.CODE_SIGNING,)),
            "exactly one EKU",
            id="wrong-eku",
        ),
        pytest.param(ChainSpec(leaf_eku_critical=False), "must be critical", id="eku-not-critical"),
        pytest.param(ChainSpec(leaf_ca=True), "must not be a CA", id="leaf-is-ca"),
        pytest.param(
            ChainSpec(root_ca=False), "certificate 1 of the chain is not a CA", id="root-not-ca"
        ),
        pytest.param(
            ChainSpec(intermediate=True, intermediate_ekus=None),
            "intermediate 1 lacks the timeStamping EKU",
            id="intermediate-without-eku",
        ),
        pytest.param(
            ChainSpec(intermediate=True, intermediate_ekus=(ExtendedKeyUsageOID.CODE_SIGNING,)),
            "intermediate 1 lacks the timeStamping EKU",
            id="intermediate-wrong-eku",
        ),
        pytest.param(
            ChainSpec(not_before=NOW - 10 * DAY, not_after=NOW - DAY), "not at", id="expired"
        ),
        pytest.param(ChainSpec(not_before=NOW + DAY), "not at", id="not-yet-valid"),
    ],
)
def test_chain_rules(spec: ChainSpec, message: str) -> None:
    key, chain = build_chain(spec)
    with pytest.raises(keys.ChainError, match=message):
        keys.validate_chain(key, chain, NOW)


def test_intermediate_eku_rule_can_be_relaxed() -> None:
    key, chain = build_chain(ChainSpec(intermediate=True, intermediate_ekus=None))
    keys.validate_chain(key, chain, NOW, enforce_intermediate_eku=False)


def test_chain_needs_two_certificates_the_right_key_and_real_signatures() -> None:
    key, chain = build_chain()
    keys.validate_chain(key, chain, NOW)
    with pytest.raises(keys.ChainError, match="at least 2"):
        keys.validate_chain(key, chain[:1], NOW)
    with pytest.raises(keys.ChainError, match="does not match"):
        keys.validate_chain(ec.generate_private_key(ec.SECP256R1()), chain, NOW)
    _, other = build_chain()  # same names, another root key
    with pytest.raises(keys.ChainError, match="not issued by certificate 1"):
        keys.validate_chain(key, [chain[0], other[1]], NOW)
    mid_key, mid_chain = build_chain(ChainSpec(intermediate=True))
    with pytest.raises(keys.ChainError, match="certificate 1 is not issued by certificate 2"):
        keys.validate_chain(mid_key, [*mid_chain[:2], other[1]], NOW)


def test_load_refuses_bad_files(tmp_path: Path) -> None:
    key, chain = build_chain()
    key_path, chain_path = _write(tmp_path, key, chain)
    os.chmod(key_path, 0o644)
    with pytest.raises(KeyFileError, match="too open"):
        keys.load(key_path, chain_path, NOW)
    os.chmod(key_path, 0o600)
    chain_path.write_bytes(b"-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    with pytest.raises(keys.ChainError, match="not a PEM certificate chain"):
        keys.load(key_path, chain_path, NOW)

    rsa_dir = tmp_path / "rsa"
    rsa_dir.mkdir()
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with pytest.raises(keys.ChainError, match="must be ECDSA"):
        keys.load(*_write(rsa_dir, rsa_key, chain), NOW)


def test_generated_chain_is_checked_at_load(tmp_path: Path) -> None:
    """Keys made at first start are held to the same rules on every later start."""
    keys.load_or_create(tmp_path / "tsa", NOW)
    with pytest.raises(keys.ChainError, match="not at"):
        keys.load_or_create(tmp_path / "tsa", NOW + 11 * 365 * DAY)
