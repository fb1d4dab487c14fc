"""Maskinporten-style access tokens for machine clients of the kompetanse API.

Maskinporten (Digdir) is Norway's machine-to-machine OAuth2 server: an organisation's
system gets an access token by the client-credentials grant and presents it as a bearer
token. The token is a JWT signed by Maskinporten (RS256; its public keys are published as a
JWKS) with, among others, these claims:

- `iss`: the Maskinporten environment that issued it, e.g. "https://maskinporten.no/"
- `aud`: the API the token is for (we require our own audience)
- `iat`, `exp`: issued/expires; tokens live 120 s by default
- `scope`: space-separated scopes the client was granted
- `client_id`: the client's integration id in Maskinporten
- `consumer`: the organisation that calls, {"authority": "iso6523-actorid-upis",
  "ID": "0192:<organisasjonsnummer>"}
- `jti`: a unique token id

`Verifikator` checks such tokens against trusted issuers' JWKS. For development,
`lag_nokkel` and `lag_token` play Maskinporten with a local key (issuer DEV_UTFERDAR).
"""

import asyncio
import base64
import hashlib
import json
import os
import re
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse
from urllib.request import url2pathname

import httpx
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from shared.log import get_logger

log = get_logger()

# Asymmetric only: "none" would accept unsigned tokens, and HS* would let anyone holding
# the (public) key sign tokens (algorithm confusion).
ALGORITHMS: tuple[str, ...] = (
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512",
)
DEV_UTFERDAR = "https://maskinporten.dev.chain.local/"

# Maskinporten tokens live 120 s by default; a long-lived token is a stolen token's best friend.
MAKS_LEVETID = 3600
CONSUMER_AUTHORITY = "iso6523-actorid-upis"
CONSUMER_ID = re.compile(r"0192:[0-9]{9}")


@dataclass(frozen=True)
class Klient:
    org: str  # consumer.ID, e.g. "0192:889640782"
    klient_id: str  # client_id
    scopes: frozenset[str]
    utferdar: str  # iss
    token_id: str | None  # jti


class TokenAvvist(Exception):
    """A token that is not accepted; `grunn` is a short reason safe to show the caller (never
    contains the token or claim values other than the algorithm name)."""

    def __init__(self, grunn: str):
        super().__init__(grunn)
        self.grunn = grunn


# Why decode refused a token, as the caller is told (the first matching type wins).
GRUNNAR = (
    (jwt.ExpiredSignatureError, "token expired"),
    (jwt.InvalidAudienceError, "wrong audience"),
    (jwt.InvalidSignatureError, "bad signature"),
    (jwt.ImmatureSignatureError, "token not yet valid"),
    (jwt.InvalidAlgorithmError, "signing key does not fit the algorithm"),
    (jwt.InvalidKeyError, "signing key does not fit the algorithm"),
)


class Verifikator:
    """Verifies Maskinporten tokens from trusted issuers.

    utferdarar: trusted issuer -> JWKS location (an http(s) URL, a file:// URL or a path).
    """

    # Cached keys are refetched after this long even if every kid is known, so a key the
    # issuer has withdrawn (compromised) stops being accepted without a restart.
    JWKS_MAKS_ALDER = 3600.0

    def __init__(
        self,
        utferdarar: dict[str, str],
        audience: str,
        *,
        leeway: float = 30.0,
        refresh_interval: float = 30.0,
    ):
        self.utferdarar = dict(utferdarar)
        self.audience = audience
        self.leeway = leeway
        self.refresh_interval = refresh_interval
        self._nokklar: dict[str, dict[str, dict]] = {}  # issuer -> kid -> JWK
        self._henta: dict[str, float] = {}  # issuer -> monotonic time of the last fetch attempt
        self._henta_ok: dict[str, float] = {}  # issuer -> monotonic time of the last good fetch
        self._lasar = {iss: asyncio.Lock() for iss in self.utferdarar}
        self._godkjende: dict[str, tuple[Klient, float]] = {}  # token -> (client, valid until)

    # A consumer sends the same token for its whole lifetime (up to an hour); checking the
    # signature once a minute instead of on every request saves 13% of a read's CPU. The
    # price: a token whose key the issuer withdraws is refused up to a minute later.
    GODKJEND_SEKUND = 60.0
    GODKJEND_MAKS = 10_000

    async def verifiser(self, token: str) -> Klient:
        kjend = self._godkjende.get(token)
        if kjend is not None and time.time() < kjend[1]:
            return kjend[0]
        klient, exp = await self._verifiser(token)
        if len(self._godkjende) >= self.GODKJEND_MAKS:
            self._godkjende.clear()
        self._godkjende[token] = (klient, min(exp, time.time() + self.GODKJEND_SEKUND))
        return klient

    async def _verifiser(self, token: str) -> tuple[Klient, float]:
        """The token's client and expiry, or TokenAvvist with the reason."""
        try:
            header = jwt.get_unverified_header(token)
            # Only to learn the issuer (which keys to use); nothing else is trusted from it.
            usikker = jwt.decode(token, options={"verify_signature": False})
        except (jwt.PyJWTError, TypeError, ValueError):
            raise TokenAvvist("malformed token") from None
        if not isinstance(usikker, dict):
            raise TokenAvvist("malformed token")

        alg = header.get("alg")
        if alg not in ALGORITHMS:
            raise TokenAvvist(f"algorithm {str(alg)[:20]} is not allowed")
        iss = usikker.get("iss")
        if not isinstance(iss, str) or iss not in self.utferdarar:
            raise TokenAvvist("issuer is not trusted")

        jwk = await self._nokkel(iss, header.get("kid"))
        try:
            # Bind the key to the header's alg: PyJWK refuses a key of the wrong type (an
            # RSA key for ES256) or curve, and a JWK that names another alg fails in decode.
            nokkel = jwt.PyJWK(jwk, algorithm=None if "alg" in jwk else alg)
        except jwt.PyJWTError:
            raise TokenAvvist("signing key does not fit the algorithm") from None

        try:
            claims = jwt.decode(
                token,
                nokkel,
                algorithms=[alg],
                audience=self.audience,
                issuer=iss,
                leeway=self.leeway,
                options={"require": ["exp", "iat", "iss", "aud"], "enforce_minimum_key_length": True},
            )
        except jwt.MissingRequiredClaimError as exc:
            raise TokenAvvist(f"missing claim {exc.claim}") from None
        except jwt.PyJWTError as exc:
            raise TokenAvvist(next((g for t, g in GRUNNAR if isinstance(exc, t)), "invalid token")) from None

        # decode accepts anything int() takes (even "1700000000"); the arithmetic needs numbers.
        if not all(type(claims[c]) in (int, float) for c in ("exp", "iat")):
            raise TokenAvvist("invalid token")
        if claims["exp"] - claims["iat"] > MAKS_LEVETID:
            raise TokenAvvist("token lifetime too long")
        scope = claims.get("scope")
        if not isinstance(scope, str) or not scope.split():
            raise TokenAvvist("missing claim scope")
        consumer = claims.get("consumer")
        if (
            not isinstance(consumer, dict)
            or consumer.get("authority") != CONSUMER_AUTHORITY
            or not isinstance(consumer.get("ID"), str)
            or not CONSUMER_ID.fullmatch(consumer["ID"])
        ):
            raise TokenAvvist("missing or malformed consumer")
        klient_id = claims.get("client_id")
        if not isinstance(klient_id, str) or not klient_id:
            raise TokenAvvist("missing claim client_id")
        jti = claims.get("jti")
        klient = Klient(
            org=consumer["ID"],
            klient_id=klient_id,
            scopes=frozenset(scope.split()),
            utferdar=iss,
            token_id=jti if isinstance(jti, str) else None,
        )
        return klient, float(claims["exp"])

    async def _nokkel(self, iss: str, kid: Any) -> dict:
        """The issuer's JWK with this kid, refetching the JWKS for an unknown kid (key
        rotation), but at most once per refresh_interval so unknown kids can't make us
        hammer the issuer."""
        if not isinstance(kid, str):
            raise TokenAvvist("unknown signing key")
        # One fetch at a time per issuer: concurrent requests wait for it and share the result.
        async with self._lasar[iss]:
            nokklar = self._nokklar.get(iss)
            gammal = time.monotonic() - self._henta_ok.get(iss, -float("inf")) > self.JWKS_MAKS_ALDER
            if nokklar is None or kid not in nokklar or gammal:
                if time.monotonic() - self._henta.get(iss, -float("inf")) >= self.refresh_interval:
                    await self._hent(iss)
                    nokklar = self._nokklar.get(iss)
            if nokklar is None:
                raise TokenAvvist("issuer keys unavailable")
            if kid not in nokklar:
                raise TokenAvvist("unknown signing key")
            return nokklar[kid]

    async def _hent(self, iss: str) -> None:
        """Fetch the issuer's JWKS into the cache. On failure the previous keys stay."""
        self._henta[iss] = time.monotonic()
        kjelde = self.utferdarar[iss]
        try:
            if kjelde.startswith(("http://", "https://")):
                async with httpx.AsyncClient(timeout=5.0) as http:
                    svar = await http.get(kjelde)
                    svar.raise_for_status()
                    jwks = svar.json()
            else:
                sti = url2pathname(urlparse(kjelde).path) if kjelde.startswith("file://") else kjelde
                jwks = json.loads(await asyncio.to_thread(Path(sti).read_text))
            nokklar = _signeringsnokklar(jwks)
        except (httpx.HTTPError, OSError, ValueError) as exc:
            # Only the issuer and the kind of error: nothing from the token.
            log.warning("maskinporten_jwks_unavailable", issuer=iss, error=type(exc).__name__)
            return
        self._nokklar[iss] = nokklar
        self._henta_ok[iss] = time.monotonic()


def _signeringsnokklar(jwks: Any) -> dict[str, dict]:
    """kid -> JWK for the asymmetric signing keys in a JWKS that PyJWK can use. The JWKs are
    kept raw because verification binds each to the token's alg (see verifiser)."""
    if not isinstance(jwks, dict) or not isinstance(jwks.get("keys"), list):
        raise ValueError("not a JWKS")
    nokklar = {}
    for jwk in jwks["keys"]:
        if not (isinstance(jwk, dict) and isinstance(jwk.get("kid"), str)):
            continue
        if jwk.get("kty") not in ("RSA", "EC") or jwk.get("use", "sig") != "sig":
            continue  # no symmetric keys, no encryption keys
        try:
            jwt.PyJWK(jwk)
        except jwt.PyJWTError:
            continue  # a key we cannot use must not stop the others from working
        nokklar[jwk["kid"]] = jwk
    return nokklar


# Development key and tokens -------------------------------------------------------------


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _thumbprint(jwk: dict) -> str:
    """RFC 7638 JWK thumbprint of an RSA key (sha256 of its required members, sorted)."""
    kjerne = json.dumps({k: jwk[k] for k in ("e", "kty", "n")}, separators=(",", ":"), sort_keys=True)
    return _b64url(hashlib.sha256(kjerne.encode()).digest())


def _skriv(sti: Path, innhald: bytes, modus: int) -> None:
    """Write via a temporary file and rename, so a reader never sees half a key; the file
    is created with `modus` from the start (no window where the private key is readable)."""
    tmp = sti.with_name(sti.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, modus)
    try:
        os.write(fd, innhald)
    finally:
        os.close(fd)
    os.chmod(tmp, modus)
    os.replace(tmp, sti)


def _gjeldande(katalog: Path) -> tuple[rsa.RSAPrivateKey, str] | None:
    """The private key in katalog and the kid of its public half in jwks.json, or None."""
    privat, jwks = katalog / "private.pem", katalog / "jwks.json"
    if not (privat.exists() and jwks.exists()):
        return None
    nokkel = serialization.load_pem_private_key(privat.read_bytes(), password=None)
    offentleg = RSAAlgorithm.to_jwk(nokkel.public_key(), as_dict=True)
    # Match on the key itself, not the position: after rotation jwks.json holds old keys too.
    for jwk in json.loads(jwks.read_text())["keys"]:
        if jwk.get("n") == offentleg["n"] and jwk.get("e") == offentleg["e"]:
            return nokkel, jwk["kid"]
    return None


def lag_nokkel(katalog: Path, *, kid: str | None = None, rotate: bool = False) -> str:
    """Make a development signing key in katalog (private.pem, jwks.json) and return its kid.

    An existing key is kept (and its kid returned) unless rotate=True, which makes a new
    signing key and adds it to jwks.json beside the old ones, so tokens already issued
    still verify.
    """
    katalog = Path(katalog)
    katalog.mkdir(parents=True, exist_ok=True)
    gjeldande = _gjeldande(katalog)
    if gjeldande and not rotate:
        return gjeldande[1]

    nokkel = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = RSAAlgorithm.to_jwk(nokkel.public_key(), as_dict=True)
    jwk.update(kid=kid or _thumbprint(jwk), alg="RS256", use="sig")
    gamle = json.loads((katalog / "jwks.json").read_text())["keys"] if gjeldande else []
    if any(k.get("kid") == jwk["kid"] for k in gamle):
        raise ValueError(f"kid {jwk['kid']} is already in jwks.json")

    # The public key first: if we stop in between, the old private key still matches.
    _skriv(katalog / "jwks.json", json.dumps({"keys": [*gamle, jwk]}, indent=2).encode(), 0o644)
    pem = nokkel.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    _skriv(katalog / "private.pem", pem, 0o600)
    return jwk["kid"]


def lag_token(
    katalog: Path,
    *,
    scope: str,
    org: str,
    klient_id: str,
    audience: str,
    utferdar: str = DEV_UTFERDAR,
    levetid: int = 120,
    extra: dict | None = None,
) -> str:
    """An RS256 token as Maskinporten would issue it, signed with katalog's key.

    `extra` is merged over the claims (a None value removes the claim), so tests can make
    broken tokens. Raises FileNotFoundError if there is no key in katalog yet.
    """
    gjeldande = _gjeldande(Path(katalog))
    if gjeldande is None:
        raise FileNotFoundError(f"no Maskinporten development key in {katalog}")
    nokkel, kid = gjeldande
    iat = int(time.time())
    claims: dict[str, Any] = {
        "iss": utferdar,
        "aud": audience,
        "iat": iat,
        "exp": iat + levetid,
        "jti": str(uuid.uuid4()),
        "scope": scope,
        "client_id": klient_id,
        "consumer": {"authority": CONSUMER_AUTHORITY, "ID": org},
    }
    for namn, verdi in (extra or {}).items():
        if verdi is None:
            claims.pop(namn, None)
        else:
            claims[namn] = verdi
    return jwt.encode(claims, nokkel, algorithm="RS256", headers={"kid": kid})
