"""The CA's signing key in a PKCS#11 token (an HSM; SoftHSM2 in the tests), via python-pkcs11.

The token is named by module path + token label, the key by label and/or ``CKA_ID``; the chain
(signing certificate first, root last) comes from a PEM file and passes ``keys.validate_chain``.
The PIN comes from a file or ``SIGSTEAD_PKCS11_PIN`` (``keys.read_secret``), never from the
command line; it stays in memory only to log in again after a lost session, and no message,
``repr`` or log line contains it.

pyca/cryptography signs certificates only with keys it holds. ``Pkcs11Signer.sign_certificate``
therefore lets the builder sign with a throwaway stand-in key of the same algorithm (the signature
AlgorithmIdentifier, inside the TBS, depends only on the algorithm and hash, never on the key), has
the token sign that exact TBS, and splices the token's signature in place of the stand-in's.

Invariant: no certificate leaves this module with an unverified signature. Each signature is
checked against the chain's public key first, so a token that swapped keys, a wrong mechanism or a
broken re-encoding yields an error, never a certificate that clients would reject.

The token signs digests (``CKM_ECDSA``, ``CKM_RSA_PKCS`` over a DigestInfo), which is what
crypto11 does for Fulcio and what every token offers, including those without the combined
hash-and-sign mechanisms. ECDSA comes back as raw ``r || s`` and is DER-encoded here.
"""

from __future__ import annotations

import datetime
import hashlib
import logging
import os
import secrets
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pkcs11
from asn1crypto import keys as asn1_keys
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass

from services.ca.errors import CABackendError
from services.ca.keys import (
    CAHash,
    CAKeyError,
    CAKeyMaterial,
    CAPublicKey,
    load_chain,
    read_secret,
    signature_hash,
    validate_chain,
)

__all__ = ["PIN_ENV", "Pkcs11KeyConfig", "Pkcs11Signer", "load", "open_signer"]

_logger = logging.getLogger(__name__)

PIN_ENV = "SIGSTEAD_PKCS11_PIN"

# DER DigestInfo prefixes (RFC 8017 §9.2 note 1): CKM_RSA_PKCS pads, the caller supplies these.
_DIGEST_INFO = {
    "sha256": bytes.fromhex("3031300d060960864801650304020105000420"),
    "sha384": bytes.fromhex("3041300d060960864801650304020205000430"),
    "sha512": bytes.fromhex("3051300d060960864801650304020305000440"),
}

# What a lost session looks like: the HSM restarted, fail-over, a network HSM's idle timeout.
# Each gets one fresh session and login; anything else is reported as it is.
_SESSION_LOST = (
    pkcs11.SessionHandleInvalid,
    pkcs11.SessionClosed,
    pkcs11.DeviceRemoved,
    pkcs11.TokenNotPresent,
    pkcs11.UserNotLoggedIn,
    pkcs11.KeyHandleInvalid,
    pkcs11.ObjectHandleInvalid,
)


@dataclass(frozen=True, slots=True)
class Pkcs11KeyConfig:
    """Where the CA key lives: a module, a token in it, a private key in that (no PIN here)."""

    module: Path
    token_label: str
    key_label: str | None = None
    key_id: bytes | None = None
    pin_file: Path | None = None

    def __post_init__(self) -> None:
        if not self.token_label:
            raise CAKeyError("a PKCS#11 CA key needs the token label")
        if self.key_label is None and self.key_id is None:
            raise CAKeyError("a PKCS#11 CA key needs a key label or a key id")

    def describe(self) -> str:
        """The key's name for messages: token, label, id (the PIN is not part of the config)."""
        parts = [f"token {self.token_label!r}"]
        if self.key_label is not None:
            parts.append(f"key label {self.key_label!r}")
        if self.key_id is not None:
            parts.append(f"key id {self.key_id.hex()}")
        return ", ".join(parts)


def _pkcs11_reason(exc: pkcs11.PKCS11Error) -> str:
    """A readable reason; python-pkcs11 errors often have an empty message."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class Pkcs11Signer:
    """A private key in a token, usable as ``CAKeyMaterial.key`` (``keys.CertificateSigner``).

    Build it with ``open_signer``. Signing holds a lock: one PKCS#11 session runs one operation at
    a time. Each call blocks for the token's round trip.
    """

    def __init__(
        self,
        config: Pkcs11KeyConfig,
        pin: str,
        token: pkcs11.Token,
        public: CAPublicKey,
    ) -> None:
        self._config = config
        self._pin = pin
        self._token = token
        self._public = public
        self._lock = threading.Lock()
        self._closed = False
        # Set once the token refuses our PIN: trying it again on every request could lock the
        # user PIN (HSMs count failed logins), so the signer stops until it is restarted.
        self._unusable: str | None = None
        self._session: pkcs11.Session | None = None
        self._key: pkcs11.SignMixin | None = None
        # The stand-in only gives the builder a key of the right algorithm; its signature is
        # replaced before anything leaves this class. Any curve or modulus gives the same
        # AlgorithmIdentifier (ecdsa-with-SHAx / sha256WithRSAEncryption), so the cheapest does.
        self._stand_in: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey = (
            ec.generate_private_key(ec.SECP256R1())
            if isinstance(public, ec.EllipticCurvePublicKey)
            else rsa.generate_private_key(65537, 2048)
        )

    def __repr__(self) -> str:
        return f"Pkcs11Signer({self._config.describe()})"

    def public_key(self) -> CAPublicKey:
        """The public key of the chain's first certificate, proven to match by ``open_signer``."""
        return self._public

    # -- session ------------------------------------------------------------------------------

    def _open(self) -> pkcs11.SignMixin:
        """Open a session, log in and find the key; raise ``CAKeyError`` naming what failed."""
        where = self._config.describe()
        try:
            session = self._token.open(user_pin=self._pin)
        except (pkcs11.PinIncorrect, pkcs11.PinInvalid, pkcs11.PinLenRange):
            self._unusable = f"{where}: the token rejected the PIN"
            raise CAKeyError(self._unusable) from None
        except (pkcs11.PinLocked, pkcs11.PinExpired) as exc:
            self._unusable = f"{where}: the user PIN is unusable ({_pkcs11_reason(exc)})"
            raise CAKeyError(self._unusable) from None
        except pkcs11.UserAlreadyLoggedIn:
            # Login state is per process and token: another session of ours is logged in, and
            # this PIN would go unchecked. One CA key per process is the supported layout.
            raise CAKeyError(f"{where}: this process is already logged in to the token") from None
        except pkcs11.PKCS11Error as exc:
            raise CAKeyError(f"{where}: cannot open a session: {_pkcs11_reason(exc)}") from None
        try:
            key = session.get_key(
                ObjectClass.PRIVATE_KEY, label=self._config.key_label, id=self._config.key_id
            )
        except pkcs11.NoSuchKey:
            _close_quietly(session)
            raise CAKeyError(f"{where}: no such private key in the token") from None
        except pkcs11.MultipleObjectsReturned:
            _close_quietly(session)
            raise CAKeyError(
                f"{where}: several private keys match; name one by label and id"
            ) from None
        except pkcs11.PKCS11Error as exc:
            _close_quietly(session)
            raise CAKeyError(f"{where}: cannot find the key: {_pkcs11_reason(exc)}") from None
        if not isinstance(key, pkcs11.SignMixin):
            _close_quietly(session)
            raise CAKeyError(f"{where}: the token offers no signing with this key")
        self._session, self._key = session, key
        return key

    def close(self) -> None:
        """Log out and close the session (safe to call twice)."""
        with self._lock:
            self._closed = True
            if self._session is not None:
                _close_quietly(self._session)
            self._session = self._key = None

    # -- signing ------------------------------------------------------------------------------

    def _token_sign(self, key: pkcs11.SignMixin, digest: bytes, algorithm: CAHash) -> bytes:
        if isinstance(self._public, ec.EllipticCurvePublicKey):
            raw = key.sign(digest, mechanism=Mechanism.ECDSA)
            size = (self._public.curve.key_size + 7) // 8
            if len(raw) != 2 * size:
                raise CABackendError(f"token returned a {len(raw)}-byte ECDSA signature")
            r, s = int.from_bytes(raw[:size], "big"), int.from_bytes(raw[size:], "big")
            return utils.encode_dss_signature(r, s)
        return bytes(key.sign(_DIGEST_INFO[algorithm.name] + digest, mechanism=Mechanism.RSA_PKCS))

    def _sign_digest(self, digest: bytes, algorithm: CAHash) -> bytes:
        """Sign a ``algorithm`` digest in the token: DER ECDSA or PKCS#1 v1.5, *not* verified.

        Raises ``CABackendError`` if the token fails even after one fresh session.
        """
        with self._lock:
            if self._closed:
                raise CABackendError(f"{self._config.describe()}: the signer is closed")
            if self._unusable is not None:
                raise CABackendError(f"PKCS#11 key unavailable until restart: {self._unusable}")
            try:
                key = self._open() if self._key is None else self._key
                try:
                    return self._token_sign(key, digest, algorithm)
                except _SESSION_LOST as exc:
                    _logger.warning(
                        "PKCS#11 session lost (%s); logging in again", _pkcs11_reason(exc)
                    )
                    if self._session is not None:
                        _close_quietly(self._session)
                    self._session = self._key = None
                    return self._token_sign(self._open(), digest, algorithm)
            except CAKeyError as exc:
                reason = f"PKCS#11 key unavailable: {exc}"
            except pkcs11.PKCS11Error as exc:
                reason = f"PKCS#11 signing failed: {_pkcs11_reason(exc)}"
        # The client only sees Fulcio's generic 500 and the API logs it at debug: an operator
        # must hear of a failing HSM here.
        _logger.error("%s", reason)
        raise CABackendError(reason)

    def _verify(self, signature: bytes, data: bytes, algorithm: CAHash) -> None:
        try:
            if isinstance(self._public, ec.EllipticCurvePublicKey):
                self._public.verify(signature, data, ec.ECDSA(algorithm))
            else:
                self._public.verify(signature, data, padding.PKCS1v15(), algorithm)
        except InvalidSignature:
            raise CABackendError(
                f"{self._config.describe()}: the token's signature does not verify under the "
                "CA certificate's key"
            ) from None

    def sign_certificate(
        self, builder: x509.CertificateBuilder, algorithm: CAHash
    ) -> x509.Certificate:
        """``builder`` signed in the token; ``CABackendError`` rather than a bad certificate."""
        draft = builder.sign(self._stand_in, algorithm)
        tbs = draft.tbs_certificate_bytes
        signature = self._sign_digest(_digest(tbs, algorithm), algorithm)
        self._verify(signature, tbs, algorithm)
        parsed = asn1_x509.Certificate.load(draft.public_bytes(serialization.Encoding.DER))
        # asn1crypto re-emits the parsed TBS and AlgorithmIdentifier with their original bytes;
        # only the BIT STRING is new.
        der = asn1_x509.Certificate(
            {
                "tbs_certificate": parsed["tbs_certificate"],
                "signature_algorithm": parsed["signature_algorithm"],
                "signature_value": signature,
            }
        ).dump()
        cert = x509.load_der_x509_certificate(der)
        if cert.tbs_certificate_bytes != tbs or cert.signature != signature:
            raise CABackendError("re-assembled certificate differs from the signed TBS")
        return cert


def _close_quietly(session: pkcs11.Session) -> None:
    # A session that is already gone (the reason we are closing it) cannot be closed cleanly.
    try:
        session.close()
    except pkcs11.PKCS11Error as exc:
        _logger.debug("closing PKCS#11 session: %s", _pkcs11_reason(exc))


def _digest(data: bytes, algorithm: CAHash) -> bytes:
    return hashlib.new(algorithm.name, data).digest()


def _token_key_matches(key: pkcs11.SignMixin, certificate: x509.Certificate, where: str) -> None:
    """Type and curve of the token's key against the certificate's, for a precise message.

    Only a shortcut to a clearer error: the probe signature in ``open_signer`` is the proof.
    """
    cert_key = certificate.public_key()
    if key.key_type is KeyType.EC:
        if not isinstance(cert_key, ec.EllipticCurvePublicKey):
            raise CAKeyError(f"{where}: the token key is EC, the chain's first certificate is not")
        try:
            params = asn1_keys.ECDomainParameters.load(bytes(key[Attribute.EC_PARAMS]))
            curve = params.chosen.native if params.name == "named" else "explicit parameters"
        except (pkcs11.PKCS11Error, ValueError):
            curve = None  # the token keeps it to itself: the probe signature decides
        if curve is not None and curve != cert_key.curve.name:
            raise CAKeyError(
                f"{where}: the token key is on {curve}, the chain's first certificate on "
                f"{cert_key.curve.name}; the key does not match the chain"
            )
        return
    if key.key_type is KeyType.RSA:
        if not isinstance(cert_key, rsa.RSAPublicKey):
            raise CAKeyError(f"{where}: the token key is RSA, the chain's first certificate is not")
        return
    raise CAKeyError(f"{where}: token key type {key.key_type!r} cannot be a CA key (EC or RSA)")


def open_signer(config: Pkcs11KeyConfig, pin: str, certificate: x509.Certificate) -> Pkcs11Signer:
    """Log in and prove the token's key is ``certificate``'s key; raise ``CAKeyError`` if not.

    The proof is a signature over a random probe that must verify under the certificate's public
    key: it holds whatever public-key objects the token does or does not keep.
    """
    where = config.describe()
    module = config.module
    if not module.is_file():
        raise CAKeyError(f"PKCS#11 module {module}: no such file")
    try:
        # python-pkcs11 keeps one initialised library per path string for the whole process
        # (C_Initialize is process-wide); closing a signer therefore never finalises it.
        lib = pkcs11.lib(str(module))
    except pkcs11.PKCS11Error as exc:
        raise CAKeyError(f"cannot load PKCS#11 module {module}: {_pkcs11_reason(exc)}") from None
    try:
        token = lib.get_token(token_label=config.token_label)
    except pkcs11.NoSuchToken:
        raise CAKeyError(f"no token labelled {config.token_label!r} in {module}") from None
    except pkcs11.MultipleTokensReturned:
        raise CAKeyError(f"several tokens labelled {config.token_label!r} in {module}") from None
    except pkcs11.PKCS11Error as exc:
        raise CAKeyError(f"{where}: cannot list tokens: {_pkcs11_reason(exc)}") from None
    cert_key = certificate.public_key()
    if not isinstance(cert_key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
        raise CAKeyError(f"{where}: the chain's first certificate has neither an EC nor RSA key")
    signer = Pkcs11Signer(config, pin, token, cert_key)
    try:
        key = signer._open()
        _token_key_matches(key, certificate, where)
        algorithm = signature_hash(signer)
        probe = b"sigstead PKCS#11 key probe\x00" + secrets.token_bytes(32)
        try:
            signature = signer._sign_digest(_digest(probe, algorithm), algorithm)
        except CABackendError as exc:
            raise CAKeyError(f"{where}: the key cannot sign: {exc}") from None
        try:
            signer._verify(signature, probe, algorithm)
        except CABackendError:
            raise CAKeyError(
                f"{where}: the token key does not match the first certificate of the chain "
                f"({certificate.subject.rfc4514_string()})"
            ) from None
    except BaseException:
        signer.close()
        raise
    return signer


def load(
    config: Pkcs11KeyConfig,
    chain_path: Path,
    now: datetime.datetime,
    *,
    environ: Mapping[str, str] | None = None,
) -> CAKeyMaterial:
    """The CA key in the token plus the PEM chain from ``chain_path``, validated like file keys.

    The PIN is read from ``config.pin_file`` if set, else from ``SIGSTEAD_PKCS11_PIN``.
    """
    secret = read_secret(config.pin_file, PIN_ENV, os.environ if environ is None else environ)
    if secret is None:
        raise CAKeyError(f"{config.describe()}: no PIN; set {PIN_ENV} or give --ca-pkcs11-pin-file")
    try:
        pin = secret.decode()
    except UnicodeDecodeError:
        raise CAKeyError(f"{config.describe()}: the PIN is not UTF-8 text") from None
    chain = load_chain(chain_path)
    if not chain:
        raise CAKeyError(f"{chain_path}: no certificate in the chain file")
    signer = open_signer(config, pin, chain[0])
    try:
        validate_chain(signer, chain, now)
    except BaseException:
        signer.close()
        raise
    _logger.info("CA key in PKCS#11 %s (%s)", config.describe(), chain[0].subject.rfc4514_string())
    return CAKeyMaterial(signer, chain)
