"""OIDC identity-token verification, strict and go-oidc compatible (fulcio.md §3.2).

Flow for one token: read ``iss`` *without* trusting it, pick the configured issuer (exact entries
first, then meta-issuer wildcards), then verify the signature with that issuer's keys only, then
check the claims against the injected ``now``.

Keys come from OIDC discovery (``/.well-known/openid-configuration`` then ``jwks_uri``) or, for
air-gapped sites, from the issuer's ``JWKSFile``. They are cached per issuer; a token whose ``kid``
is unknown or whose signature fails with the cached keys triggers one refetch, at most once per
``refresh_interval`` per issuer so that junk tokens cannot make us hammer an IdP. A failed fetch is
also remembered for ``refresh_interval``: requests fail fast instead of each waiting for a timeout.

Every refusal raises ``InvalidIdentityToken`` (``UnknownIssuer`` for an unconfigured ``iss``); the
reason is logged at DEBUG and never reaches the client.

A token whose signature has verified is remembered (``TokenVerifier``'s cache, by the SHA-256 of
its exact text): one CI job signs many artifacts with one token, and the signature check was an
eighth of a certificate's CPU. The cache skips only what depends on the token's bytes alone (the
header, the signature, the JSON); every claim is checked again against each request's ``now``, so
a remembered token stops verifying when it expires, and an entry lapses when its issuer's keys
are fetched again or its issuer's verifier is replaced.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime
import functools
import hashlib
import json
import logging
import math
import re
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType, TracebackType
from typing import Any
from urllib.parse import urljoin, urlsplit

import aiohttp
import jwt
from jwt.api_jws import PyJWS

from services.ca.config import FulcioConfig, IssuerType, OIDCIssuer
from services.ca.errors import CAError, InvalidIdentityToken, UnknownIssuer

__all__ = [
    "ALLOWED_ALGORITHMS",
    "MAX_TOKEN_BYTES",
    "Claims",
    "IssuerVerifier",
    "TokenVerifier",
]

_logger = logging.getLogger(__name__)

# Asymmetric JWS algorithms go-oidc accepts. Never "none", never HMAC: an HS256 token "signed" with
# the issuer's public key bytes must not verify.
ALLOWED_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
# The JWK each algorithm needs: (kty, crv or None).
_ALG_KEY: Mapping[str, tuple[str, str | None]] = {
    **{f"{p}{n}": ("RSA", None) for p in ("RS", "PS") for n in (256, 384, 512)},
    "ES256": ("EC", "P-256"),
    "ES384": ("EC", "P-384"),
    "ES512": ("EC", "P-521"),
    "EdDSA": ("OKP", "Ed25519"),
}
# go-oidc's default when discovery advertises none of the allowed algorithms.
_DEFAULT_DISCOVERY_ALGORITHMS = frozenset({"RS256"})

# Bounded input (GHSA-f83f-xpx7-ffpw was an OOM from a malformed token). Real tokens are 1-3 KiB.
MAX_TOKEN_BYTES = 32 * 1024
_MAX_DOCUMENT_BYTES = 1024 * 1024
_MAX_REDIRECTS = 3
_SEGMENT = re.compile(r"[A-Za-z0-9_-]*")

# go-oidc: no expiry leeway, 5 minutes for nbf. iat is not checked by go-oidc; we refuse a token
# issued further in the future than the nbf leeway (it can only be clock trouble or forgery).
DEFAULT_EXPIRY_LEEWAY = datetime.timedelta(0)
DEFAULT_NOT_BEFORE_LEEWAY = datetime.timedelta(minutes=5)
DEFAULT_REFRESH_INTERVAL = datetime.timedelta(seconds=60)
DEFAULT_FETCH_TIMEOUT = 10.0
_META_CACHE_SIZE = 100
# Verified tokens remembered (see the module docstring). Only tokens a configured issuer signed
# get in, and none above _VERIFIED_MAX_TOKEN (real ones are 1-3 KiB): a few MiB of claims for
# real tokens, some tens of MiB at worst when a wildcard issuer lets anyone mint tokens.
_VERIFIED_CACHE_SIZE = 1024
_VERIFIED_MAX_TOKEN = 8 * 1024


@dataclass(frozen=True, slots=True)
class Claims:
    """A verified token: the issuer configuration that verified it and all its claims."""

    issuer: OIDCIssuer
    values: Mapping[str, Any]

    @property
    def iss(self) -> str:
        """The verified ``iss`` claim (equal to ``issuer.issuer_url``)."""
        return str(self.values["iss"])

    @property
    def subject(self) -> str:
        """The ``sub`` claim, or "" when absent."""
        sub = self.values.get("sub")
        return sub if isinstance(sub, str) else ""

    def string(self, name: str) -> str:
        """A top-level string claim, or "" when absent or not a string."""
        value = self.values.get(name)
        return value if isinstance(value, str) else ""


@dataclass(frozen=True, slots=True)
class _KeySet:
    keys: tuple[Mapping[str, Any], ...]
    algorithms: frozenset[str]
    # Parsed keys by (position, algorithm): building a PyJWK parses and validates the key, a
    # cost every token of the issuer would otherwise pay again until the next key refresh.
    parsed: dict[tuple[int, str], jwt.PyJWK] = field(default_factory=dict, compare=False)


@dataclass(frozen=True, slots=True)
class _Verified:
    """A token whose signature ``verifier`` checked with ``keyset``, and its claims."""

    verifier: IssuerVerifier
    keyset: _KeySet
    claims: Claims


@functools.cache
def _jws(alg: str) -> PyJWS:
    # A PyJWS builds its table of every algorithm when made; one per algorithm is enough.
    return PyJWS(algorithms=[alg])


class _FetchError(Exception):
    pass


def _b64url_json(segment: str, what: str) -> dict[str, Any]:
    if not _SEGMENT.fullmatch(segment):
        raise InvalidIdentityToken(f"{what} is not unpadded base64url")
    try:
        raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
        value = json.loads(raw)
    except (binascii.Error, ValueError, RecursionError):
        raise InvalidIdentityToken(f"{what} is not base64url JSON") from None
    if not isinstance(value, dict):
        raise InvalidIdentityToken(f"{what} is not a JSON object")
    return value


def _number(value: Any) -> float | None:
    # bool is an int subclass in Python; a JSON true is not a timestamp.
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return float(value)


def _is_true(value: Any) -> bool:
    # Fulcio ≥1.6 accepts the JSON bool or its string forms (fulcio.md §3.3).
    return value is True or value in ("true", "True")


class IssuerVerifier:
    """Verifies tokens for one concrete issuer; owns that issuer's cached key set."""

    def __init__(
        self,
        issuer: OIDCIssuer,
        session: aiohttp.ClientSession | None,
        *,
        refresh_interval: datetime.timedelta = DEFAULT_REFRESH_INTERVAL,
        fetch_timeout: float = DEFAULT_FETCH_TIMEOUT,
        expiry_leeway: datetime.timedelta = DEFAULT_EXPIRY_LEEWAY,
        not_before_leeway: datetime.timedelta = DEFAULT_NOT_BEFORE_LEEWAY,
    ) -> None:
        self.issuer = issuer
        self._session = session
        self._refresh_interval = refresh_interval
        self._timeout = aiohttp.ClientTimeout(total=fetch_timeout)
        self._expiry_leeway = expiry_leeway.total_seconds()
        self._not_before_leeway = not_before_leeway.total_seconds()
        self._ssl = issuer.ssl_context()
        self._keyset: _KeySet | None = None
        self._generation = 0
        self._last_attempt: datetime.datetime | None = None
        self._last_error = ""
        self._lock = asyncio.Lock()

    async def verify(self, token: str, header: Mapping[str, Any], now: datetime.datetime) -> Claims:
        """Verify ``token`` (its header already decoded) against this issuer at ``now``."""
        claims, _ = await self.verify_with_keys(token, header, now)
        return claims

    async def verify_with_keys(
        self, token: str, header: Mapping[str, Any], now: datetime.datetime
    ) -> tuple[Claims, _KeySet]:
        """``verify``, and the key set that verified the signature: while it is still this
        issuer's (``keys_current``), the signature needs no second check."""
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in ALLOWED_ALGORITHMS:
            raise InvalidIdentityToken(f"token algorithm {alg!r} is not allowed")
        if "crit" in header or "b64" in header:
            raise InvalidIdentityToken("token uses JWS extensions (crit/b64)")
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise InvalidIdentityToken("token kid is not a string")

        keyset = await self._keys(now, refresh=False)
        generation = self._generation
        payload = self._verify_signature(token, alg, kid, keyset)
        if payload is None:
            # Unknown kid or a failed signature: the IdP may have rotated keys since we fetched.
            refreshed = await self._keys(now, refresh=True, seen_generation=generation)
            if refreshed is not keyset:
                keyset = refreshed
                payload = self._verify_signature(token, alg, kid, refreshed)
        if payload is None:
            raise InvalidIdentityToken(
                f"signature ({alg}, kid {kid!r}) does not verify with any key of "
                f"{self.issuer.issuer_url}"
            )
        try:
            claims = json.loads(payload)
        except (ValueError, RecursionError):
            raise InvalidIdentityToken("payload is not JSON") from None
        if not isinstance(claims, dict):
            raise InvalidIdentityToken("payload is not a JSON object")
        self.check_claims(claims, now)
        return Claims(self.issuer, MappingProxyType(claims)), keyset

    def keys_current(self, keyset: _KeySet) -> bool:
        """Whether ``keyset`` (from ``verify_with_keys``) is still the key set in use."""
        return keyset is self._keyset

    # --- claims ------------------------------------------------------------------------------

    def check_claims(self, claims: Mapping[str, Any], now: datetime.datetime) -> None:
        """Raise ``InvalidIdentityToken`` unless ``claims`` (signature already verified) are
        acceptable for this issuer at ``now``: issuer, audience, times, verified email."""
        issuer = self.issuer
        if claims.get("iss") != issuer.issuer_url:
            raise InvalidIdentityToken(f"iss {claims.get('iss')!r} is not {issuer.issuer_url!r}")
        aud = claims.get("aud")
        audiences = [aud] if isinstance(aud, str) else aud
        if not isinstance(audiences, list) or issuer.client_id not in [
            a for a in audiences if isinstance(a, str)
        ]:
            raise InvalidIdentityToken(f"aud {aud!r} does not contain {issuer.client_id!r}")

        t = now.timestamp()
        exp = _number(claims.get("exp"))
        if exp is None:
            raise InvalidIdentityToken("exp is missing or not a number")
        if t > exp + self._expiry_leeway:
            raise InvalidIdentityToken(f"token expired at {exp:.0f}, now is {t:.0f}")
        if "nbf" in claims:
            nbf = _number(claims["nbf"])
            if nbf is None:
                raise InvalidIdentityToken("nbf is not a number")
            if t + self._not_before_leeway < nbf:
                raise InvalidIdentityToken(f"token not valid before {nbf:.0f}, now is {t:.0f}")
        if "iat" in claims:
            iat = _number(claims["iat"])
            if iat is None:
                raise InvalidIdentityToken("iat is not a number")
            if iat > t + self._not_before_leeway:
                raise InvalidIdentityToken(f"token issued in the future ({iat:.0f}, now {t:.0f})")
        if "sub" in claims and not isinstance(claims["sub"], str):
            raise InvalidIdentityToken("sub is not a string")

        if issuer.type is IssuerType.EMAIL:
            email = claims.get("email")
            if not isinstance(email, str) or not email:
                raise InvalidIdentityToken("token missing email claim")
            if not issuer.skip_email_verification and not _is_true(claims.get("email_verified")):
                raise InvalidIdentityToken(f"email {email!r} is not verified")

    # --- signature ---------------------------------------------------------------------------

    def _verify_signature(
        self, token: str, alg: str, kid: str | None, keyset: _KeySet
    ) -> bytes | None:
        if alg not in keyset.algorithms:
            return None
        kty, crv = _ALG_KEY[alg]
        for position, jwk in enumerate(keyset.keys):
            if kid is not None and jwk.get("kid") != kid:
                continue
            if jwk.get("kty") != kty or (crv is not None and jwk.get("crv") != crv):
                continue
            if jwk.get("alg") not in (None, alg):
                continue
            try:
                # Binding the algorithm to the key makes pyjwt verify with exactly this algorithm.
                key = keyset.parsed.get((position, alg))
                if key is None:
                    key = keyset.parsed[(position, alg)] = jwt.PyJWK(dict(jwk), algorithm=alg)
                result = _jws(alg).decode_complete(
                    token,
                    key=key,
                    algorithms=[alg],
                    options={"verify_signature": True, "enforce_minimum_key_length": True},
                )
            except jwt.PyJWTError as exc:
                _logger.debug("key %r of %s: %s", jwk.get("kid"), self.issuer.issuer_url, exc)
                continue
            payload = result["payload"]
            assert isinstance(payload, bytes)
            return payload
        return None

    # --- keys --------------------------------------------------------------------------------

    async def ensure_keys(self, now: datetime.datetime) -> None:
        """Fetch this issuer's keys unless cached; raise ``InvalidIdentityToken`` on failure."""
        await self._keys(now, refresh=False)

    async def _keys(
        self, now: datetime.datetime, *, refresh: bool, seen_generation: int = -1
    ) -> _KeySet:
        async with self._lock:
            if self._keyset is not None and (not refresh or self._generation != seen_generation):
                # Either no refresh wanted, or another request refreshed while we waited.
                return self._keyset
            if (
                self._last_attempt is not None
                and now - self._last_attempt < self._refresh_interval
                and now >= self._last_attempt
            ):
                if self._keyset is not None:
                    return self._keyset
                raise InvalidIdentityToken(
                    f"keys of {self.issuer.issuer_url} unavailable ({self._last_error}); "
                    f"next attempt after {self._last_attempt + self._refresh_interval}"
                )
            self._last_attempt = now
            try:
                keyset = await self._fetch()
            except _FetchError as exc:
                self._last_error = str(exc)
                _logger.warning("cannot fetch keys of %s: %s", self.issuer.issuer_url, exc)
                if self._keyset is not None:
                    return self._keyset
                raise InvalidIdentityToken(
                    f"keys of {self.issuer.issuer_url} unavailable: {exc}"
                ) from None
            self._keyset = keyset
            self._generation += 1
            return keyset

    async def _fetch(self) -> _KeySet:
        if self.issuer.jwks_file is not None:
            try:
                doc = json.loads(self.issuer.jwks_file.read_bytes())
            except (OSError, ValueError) as exc:
                raise _FetchError(f"JWKS file {self.issuer.jwks_file}: {exc}") from None
            # No discovery document offline: any allowed algorithm, still bound to the key type.
            return _KeySet(_parse_jwks(doc, str(self.issuer.jwks_file)), ALLOWED_ALGORITHMS)

        iss = self.issuer.issuer_url
        discovery = await self._get_json(iss.rstrip("/") + "/.well-known/openid-configuration")
        if discovery.get("issuer") != iss:
            raise _FetchError(
                f"discovery issuer {discovery.get('issuer')!r} does not equal {iss!r}"
            )
        jwks_uri = discovery.get("jwks_uri")
        if not isinstance(jwks_uri, str) or not jwks_uri:
            raise _FetchError("discovery document has no jwks_uri")
        advertised = discovery.get("id_token_signing_alg_values_supported")
        algorithms = (
            frozenset(
                a
                for a in (advertised if isinstance(advertised, list) else [])
                if isinstance(a, str)
            )
            & ALLOWED_ALGORITHMS
        )
        jwks = await self._get_json(jwks_uri)
        return _KeySet(_parse_jwks(jwks, jwks_uri), algorithms or _DEFAULT_DISCOVERY_ALGORITHMS)

    def _check_url(self, url: str) -> None:
        scheme = urlsplit(url).scheme
        if scheme == "https" or (scheme == "http" and self.issuer.allow_insecure_http):
            return
        raise _FetchError(f"refusing to fetch {url!r}: scheme not allowed for this issuer")

    async def _get_json(self, url: str) -> dict[str, Any]:
        if self._session is None:
            raise _FetchError("no HTTP session to fetch keys with")
        origin = urlsplit(url)[:2]
        for _ in range(_MAX_REDIRECTS + 1):
            self._check_url(url)
            try:
                async with self._session.get(
                    url,
                    allow_redirects=False,
                    timeout=self._timeout,
                    ssl=self._ssl if self._ssl is not None else True,
                    headers={"Accept": "application/json"},
                ) as resp:
                    if resp.status in (301, 302, 303, 307, 308):
                        target = urljoin(url, resp.headers.get("Location", ""))
                        if urlsplit(target)[:2] != origin:
                            raise _FetchError(f"{url} redirects to another origin: {target}")
                        url = target
                        continue
                    if resp.status != 200:
                        raise _FetchError(f"GET {url}: HTTP {resp.status}")
                    body = await resp.content.read(_MAX_DOCUMENT_BYTES + 1)
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                raise _FetchError(f"GET {url}: {type(exc).__name__}: {exc}") from None
            if len(body) > _MAX_DOCUMENT_BYTES:
                raise _FetchError(f"GET {url}: response larger than {_MAX_DOCUMENT_BYTES} bytes")
            try:
                doc = json.loads(body)
            except (ValueError, RecursionError):
                raise _FetchError(f"GET {url}: not JSON") from None
            if not isinstance(doc, dict):
                raise _FetchError(f"GET {url}: not a JSON object")
            return doc
        raise _FetchError(f"GET {url}: too many redirects")


def _parse_jwks(doc: Any, source: str) -> tuple[Mapping[str, Any], ...]:
    if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
        raise _FetchError(f"{source}: not a JWKS")
    keys: list[Mapping[str, Any]] = []
    for jwk in doc["keys"]:
        if not isinstance(jwk, dict):
            continue
        if jwk.get("use") not in (None, "sig"):
            continue
        if jwk.get("kty") not in ("RSA", "EC", "OKP"):
            # Symmetric ("oct") keys are never usable for identity tokens.
            continue
        if "d" in jwk:
            _logger.warning(
                "%s publishes a private key (kid %r); ignoring it", source, jwk.get("kid")
            )
            continue
        keys.append(MappingProxyType(dict(jwk)))
    if not keys:
        raise _FetchError(f"{source}: no usable signing keys")
    return tuple(keys)


class TokenVerifier:
    """Verifies identity tokens from every configured issuer.

    Pass an ``aiohttp.ClientSession`` to share one, or let the verifier own one (then call
    ``close()`` or use ``async with``). Issuers with a ``JWKSFile`` never touch the network.
    """

    def __init__(
        self,
        config: FulcioConfig,
        *,
        session: aiohttp.ClientSession | None = None,
        refresh_interval: datetime.timedelta = DEFAULT_REFRESH_INTERVAL,
        fetch_timeout: float = DEFAULT_FETCH_TIMEOUT,
        expiry_leeway: datetime.timedelta = DEFAULT_EXPIRY_LEEWAY,
        not_before_leeway: datetime.timedelta = DEFAULT_NOT_BEFORE_LEEWAY,
    ) -> None:
        self.config = config
        self._owns_session = session is None
        self._session = session
        self._options: dict[str, Any] = {
            "refresh_interval": refresh_interval,
            "fetch_timeout": fetch_timeout,
            "expiry_leeway": expiry_leeway,
            "not_before_leeway": not_before_leeway,
        }
        self._static: dict[str, IssuerVerifier] = {}
        self._meta: OrderedDict[str, IssuerVerifier] = OrderedDict()
        # SHA-256 of a token's text -> what verified it (module docstring), least recent first.
        self._verified: OrderedDict[bytes, _Verified] = OrderedDict()

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        return self._session

    def _verifier_for(self, issuer: OIDCIssuer, *, meta: bool) -> IssuerVerifier:
        url = issuer.issuer_url
        if not meta:
            verifier = self._static.get(url)
            if verifier is None:
                verifier = self._static[url] = self._new(issuer)
            return verifier
        verifier = self._meta.get(url)
        if verifier is None:
            verifier = self._meta[url] = self._new(issuer)
            if len(self._meta) > _META_CACHE_SIZE:
                self._meta.popitem(last=False)
        self._meta.move_to_end(url)
        return verifier

    def _in_use(self, verifier: IssuerVerifier) -> bool:
        """Whether ``verifier`` still serves its issuer (a wildcard issuer's may have been
        dropped from the LRU since; a new one fetches the keys again). Counts as a use."""
        url = verifier.issuer.issuer_url
        if self._static.get(url) is verifier:
            return True
        if self._meta.get(url) is verifier:
            self._meta.move_to_end(url)
            return True
        return False

    def _new(self, issuer: OIDCIssuer) -> IssuerVerifier:
        session = None if issuer.jwks_file is not None else self._http()
        return IssuerVerifier(issuer, session, **self._options)

    async def verify(self, token: str, now: datetime.datetime) -> Claims:
        """Verify ``token`` at ``now``; raise ``InvalidIdentityToken`` (or ``UnknownIssuer``)."""
        try:
            if len(token) > MAX_TOKEN_BYTES:
                raise InvalidIdentityToken(f"token is {len(token)} bytes, limit {MAX_TOKEN_BYTES}")
            digest = hashlib.sha256(token.encode(errors="surrogatepass")).digest()
            seen = self._verified.get(digest)
            if seen is not None:
                if seen.verifier.keys_current(seen.keyset) and self._in_use(seen.verifier):
                    try:
                        seen.verifier.check_claims(seen.claims.values, now)
                    except InvalidIdentityToken:
                        del self._verified[digest]  # expired (or not yet valid): check anew
                        raise
                    self._verified.move_to_end(digest)
                    return seen.claims
                del self._verified[digest]  # keys fetched again since: verify anew
            parts = token.split(".")
            if len(parts) != 3:
                raise InvalidIdentityToken(f"token has {len(parts)} parts, want 3")
            header = _b64url_json(parts[0], "header")
            unverified = _b64url_json(parts[1], "payload")
            if not _SEGMENT.fullmatch(parts[2]):
                raise InvalidIdentityToken("signature is not unpadded base64url")
            iss = unverified.get("iss")
            if not isinstance(iss, str) or not iss:
                raise InvalidIdentityToken("token has no iss")
            issuer = self.config.oidc_issuers.get(iss)
            meta = issuer is None
            if issuer is None:
                issuer = self.config.find_issuer(iss)
            if issuer is None:
                raise UnknownIssuer(f"no issuer configured for {iss!r}")
            verifier = self._verifier_for(issuer, meta=meta)
            claims, keyset = await verifier.verify_with_keys(token, header, now)
            if len(token) <= _VERIFIED_MAX_TOKEN:
                self._verified[digest] = _Verified(verifier, keyset, claims)
                if len(self._verified) > _VERIFIED_CACHE_SIZE:
                    self._verified.popitem(last=False)
            return claims
        except CAError as exc:
            _logger.debug("identity token refused: %s", exc.detail)
            raise

    async def prefetch(self, now: datetime.datetime) -> dict[str, str]:
        """Fetch the keys of every exact issuer now, as Fulcio does at start-up.

        Returns ``{issuer URL: reason}`` for the issuers that failed; they are not fatal and are
        retried lazily (after ``refresh_interval``) when a token for them arrives.
        """
        failures: dict[str, str] = {}
        for url, issuer in self.config.oidc_issuers.items():
            try:
                await self._verifier_for(issuer, meta=False).ensure_keys(now)
            except InvalidIdentityToken as exc:
                failures[url] = exc.detail
        return failures

    async def close(self) -> None:
        """Close the HTTP session if this verifier created it."""
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> TokenVerifier:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
