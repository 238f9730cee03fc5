"""A SoftHSM2 token with CA keys generated inside it, for the PKCS#11 tests and the CA bench.

``create_token`` writes a SoftHSM2 configuration and token directory under a base directory,
generates each key in the token (the private half never exists outside it) and certifies it
under a throwaway P-384 root, in the generated CA's profile, as an operator's PKI would.
``SOFTHSM2_CONF`` must name ``base / "softhsm2.conf"`` before the module is first loaded in the
process: SoftHSM reads it at ``C_Initialize``, which python-pkcs11 does once per process.
"""

from __future__ import annotations

import datetime
import os
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pkcs11
import pkcs11.util.ec
import pkcs11.util.rsa
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from pkcs11 import Attribute, KeyType

from services.ca import pkcs11 as ca_pkcs11

__all__ = [
    "KEY_TYPES",
    "MODULE",
    "PIN",
    "TOKEN",
    "SoftHSM",
    "SoftHSMMissing",
    "create_token",
]

# Debian's arch-independent path (a symlink into the multiarch directory); CI installs softhsm2.
MODULE = Path(os.environ.get("SIGSTEAD_TEST_SOFTHSM2_MODULE", "/usr/lib/softhsm/libsofthsm2.so"))
TOKEN = "sigstead-ca"
# Distinctive, so the tests can assert it never shows up in any output.
PIN = "pin-4f1c9e-never-logged"
SO_PIN = "so-pin-4f1c9e"
# Key label -> the EC curve's OID, or None for RSA 3072.
KEY_TYPES: Mapping[str, str | None] = {
    "ec-p256": "1.2.840.10045.3.1.7",
    "ec-p384": "1.3.132.0.34",
    "rsa-3072": None,
}


class SoftHSMMissing(RuntimeError):
    """softhsm2-util or the module is not installed."""


@dataclass(frozen=True)
class SoftHSM:
    """The session's token (``TOKEN`` in ``MODULE``): a PEM chain file per key label in it."""

    chains: dict[str, Path]

    def config(self, label: str, **extra: Any) -> ca_pkcs11.Pkcs11KeyConfig:
        return ca_pkcs11.Pkcs11KeyConfig(module=MODULE, token_label=TOKEN, key_label=label, **extra)


def _ca_cert(
    subject: str,
    public: ec.EllipticCurvePublicKey | rsa.RSAPublicKey,
    issuer: x509.Certificate | None,
    issuer_key: ec.EllipticCurvePrivateKey,
) -> x509.Certificate:
    """A CA certificate in the generated CA's profile (``services.ca.keys.generate``)."""
    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer.subject if issuer else name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), True
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=0 if issuer else 1), True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), False)
    )
    if issuer is not None:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), False
        ).add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), False
        )
    return builder.sign(issuer_key, hashes.SHA384())


def _public_key(key: pkcs11.PublicKey) -> ec.EllipticCurvePublicKey | rsa.RSAPublicKey:
    if key.key_type is KeyType.EC:
        der = pkcs11.util.ec.encode_ec_public_key(key)
    else:
        der = pkcs11.util.rsa.encode_rsa_public_key(key)  # PKCS#1, which pyca also reads
    public = serialization.load_der_public_key(der)
    if not isinstance(public, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
        raise TypeError(f"unexpected public key in the token: {type(public).__name__}")
    return public


def create_token(base: Path, key_types: Mapping[str, str | None] = KEY_TYPES) -> SoftHSM:
    """Initialise ``TOKEN`` in a SoftHSM2 store under ``base`` and generate ``key_types`` in it."""
    util = shutil.which("softhsm2-util")
    if util is None or not MODULE.is_file():
        raise SoftHSMMissing(f"SoftHSM2 is not installed ({MODULE}): apt-get install softhsm2")
    conf = base / "softhsm2.conf"
    if os.environ.get("SOFTHSM2_CONF") != str(conf):
        raise RuntimeError(f"SOFTHSM2_CONF must be {conf} before the module is loaded")
    (base / "tokens").mkdir()
    conf.write_text(
        f"directories.tokendir = {base / 'tokens'}\nobjectstore.backend = file\nlog.level = ERROR\n"
    )
    subprocess.run(
        [util, "--init-token", "--free", "--label", TOKEN, "--pin", PIN, "--so-pin", SO_PIN],
        check=True,
        capture_output=True,
    )
    root_key = ec.generate_private_key(ec.SECP384R1())
    root = _ca_cert("sigstead test root", root_key.public_key(), None, root_key)
    chains: dict[str, Path] = {}
    session = pkcs11.lib(str(MODULE)).get_token(token_label=TOKEN).open(rw=True, user_pin=PIN)
    try:
        for i, (label, oid) in enumerate(key_types.items(), start=1):
            if oid is None:
                public, _ = session.generate_keypair(
                    KeyType.RSA, 3072, store=True, label=label, id=bytes([i])
                )
            else:
                params = session.create_domain_parameters(
                    KeyType.EC,
                    {Attribute.EC_PARAMS: pkcs11.util.ec.encode_named_curve_parameters(oid)},
                    local=True,
                )
                public, _ = params.generate_keypair(store=True, label=label, id=bytes([i]))
            cert = _ca_cert(f"sigstead test {label}", _public_key(public), root, root_key)
            chain = base / f"{label}.pem"
            chain.write_bytes(
                b"".join(c.public_bytes(serialization.Encoding.PEM) for c in (cert, root))
            )
            chains[label] = chain
    finally:
        # Logging out matters: login state is per process, and each user logs in afresh.
        session.close()
    return SoftHSM(chains)
