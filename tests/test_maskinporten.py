"""Maskinporten token verification and the development key tooling, with real keys and
signatures (no mocks): every way a token is refused has its own reason."""

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import shlex
import time

import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from typer.testing import CliRunner

from shared.maskinporten import (
    ALGORITHMS,
    DEV_UTFERDAR,
    Klient,
    TokenAvvist,
    Verifikator,
    lag_nokkel,
    lag_token,
)
from sim.maskinporten_cli import app

AUD = "https://kompetanse.test"
ORG = "0192:889640782"


def b64(data: dict | bytes) -> str:
    raw = data if isinstance(data, bytes) else json.dumps(data).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def segment(token: str, i: int) -> dict:
    part = token.split(".")[i]
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


@pytest.fixture
def katalog(tmp_path):
    lag_nokkel(tmp_path / "dev")
    return tmp_path / "dev"


@pytest.fixture
def verifikator(katalog):
    return Verifikator({DEV_UTFERDAR: str(katalog / "jwks.json")}, AUD)


def token(katalog, **kw) -> str:
    kw = {"scope": "chain:kompetanse.read chain:kompetanse.write", "org": ORG, "klient_id": "k-123", "audience": AUD, **kw}
    return lag_token(katalog, **kw)


async def avvist(verifikator: Verifikator, tok: str) -> str:
    with pytest.raises(TokenAvvist) as exc:
        await verifikator.verifiser(tok)
    return exc.value.grunn


# The good case and the dev tooling ------------------------------------------------------


async def test_valid_token_gives_the_klient(katalog, verifikator):
    tok = token(katalog)
    klient = await verifikator.verifiser(tok)
    assert klient == Klient(
        org=ORG,
        klient_id="k-123",
        scopes=frozenset({"chain:kompetanse.read", "chain:kompetanse.write"}),
        utferdar=DEV_UTFERDAR,
        token_id=segment(tok, 1)["jti"],
    )
    assert klient.token_id


def test_lag_nokkel_files_and_idempotence(tmp_path):
    katalog = tmp_path / "a" / "b"
    kid = lag_nokkel(katalog)
    assert (katalog / "private.pem").stat().st_mode & 0o777 == 0o600
    assert b"BEGIN PRIVATE KEY" in (katalog / "private.pem").read_bytes()  # PKCS8
    (jwk,) = json.loads((katalog / "jwks.json").read_text())["keys"]
    assert (jwk["kid"], jwk["alg"], jwk["use"], jwk["kty"]) == (kid, "RS256", "sig", "RSA")
    assert "d" not in jwk  # public only
    pem = (katalog / "private.pem").read_bytes()
    assert lag_nokkel(katalog) == kid  # kept, not replaced
    assert (katalog / "private.pem").read_bytes() == pem
    assert lag_nokkel(tmp_path / "c", kid="eigen") == "eigen"


async def test_rotation_in_files_keeps_old_tokens_valid(katalog, verifikator):
    gammal = token(katalog)
    kid1 = segment(gammal, 0)["kid"]
    kid2 = lag_nokkel(katalog, rotate=True)
    assert kid2 != kid1
    assert [k["kid"] for k in json.loads((katalog / "jwks.json").read_text())["keys"]] == [kid1, kid2]
    ny = token(katalog)
    assert segment(ny, 0)["kid"] == kid2
    fersk = Verifikator({DEV_UTFERDAR: (katalog / "jwks.json").as_uri()}, AUD)  # file:// URL
    assert (await fersk.verifiser(gammal)).org == ORG
    assert (await fersk.verifiser(ny)).org == ORG


def _counting(verifikator: Verifikator, monkeypatch) -> list[str]:
    """Record each full check (signature and claims) the verifikator makes."""
    calls, real = [], verifikator._verifiser

    async def counted(tok):
        calls.append(tok)
        return await real(tok)

    monkeypatch.setattr(verifikator, "_verifiser", counted)
    return calls


async def test_a_verified_token_is_checked_again_after_a_minute(katalog, verifikator, monkeypatch):
    calls = _counting(verifikator, monkeypatch)
    tok = token(katalog)
    for _ in range(3):
        assert (await verifikator.verifiser(tok)).org == ORG
    assert len(calls) == 1
    now = time.time()
    monkeypatch.setattr(time, "time", lambda: now + Verifikator.GODKJEND_SEKUND + 1)
    await verifikator.verifiser(tok)
    assert len(calls) == 2


async def test_a_remembered_token_is_checked_again_once_expired(katalog, verifikator, monkeypatch):
    calls = _counting(verifikator, monkeypatch)
    now = int(time.time())
    tok = token(katalog, extra={"iat": now - 60, "exp": now + 5})
    await verifikator.verifiser(tok)
    monkeypatch.setattr(time, "time", lambda: now + 6)
    with contextlib.suppress(TokenAvvist):
        await verifikator.verifiser(tok)
    assert len(calls) == 2


# Refused, each with its reason ----------------------------------------------------------


async def test_untrusted_issuer(katalog, verifikator):
    # Signed by a key we trust, but claims another issuer: the issuer decides the keys.
    assert await avvist(verifikator, token(katalog, utferdar="https://maskinporten.evil/")) == "issuer is not trusted"


async def test_other_key_with_same_kid_is_bad_signature(katalog, verifikator, tmp_path):
    kid = lag_nokkel(katalog)
    lag_nokkel(tmp_path / "falsk", kid=kid)
    tok = token(tmp_path / "falsk")
    assert segment(tok, 0)["kid"] == kid
    assert await avvist(verifikator, tok) == "bad signature"


async def test_unknown_kid(verifikator, tmp_path):
    lag_nokkel(tmp_path / "annan", kid="ukjend")
    assert await avvist(verifikator, token(tmp_path / "annan")) == "unknown signing key"


async def test_missing_kid(katalog, verifikator):
    tok = token(katalog)
    key = (katalog / "private.pem").read_bytes()
    utan_kid = jwt.encode(segment(tok, 1), key, algorithm="RS256")
    assert await avvist(verifikator, utan_kid) == "unknown signing key"


async def test_wrong_audience(katalog, verifikator):
    assert await avvist(verifikator, token(katalog, audience="https://anna.api")) == "wrong audience"


async def test_expired(katalog, verifikator):
    now = int(time.time())
    # Past the 30 s leeway.
    tok = token(katalog, extra={"iat": now - 300, "exp": now - 180})
    assert await avvist(verifikator, tok) == "token expired"


async def test_within_leeway_is_accepted(katalog, verifikator):
    now = int(time.time())
    tok = token(katalog, extra={"iat": now - 130, "exp": now - 10})
    assert (await verifikator.verifiser(tok)).org == ORG


@pytest.mark.parametrize("claim", ["iat", "nbf"])
async def test_not_yet_valid(katalog, verifikator, claim):
    now = int(time.time())
    tok = token(katalog, extra={claim: now + 300, "exp": now + 400})
    assert await avvist(verifikator, tok) == "token not yet valid"


async def test_lifetime_too_long(katalog, verifikator):
    assert await avvist(verifikator, token(katalog, levetid=3601)) == "token lifetime too long"
    assert (await verifikator.verifiser(token(katalog, levetid=3600))).org == ORG


async def test_alg_none_is_refused(katalog, verifikator):
    payload = segment(token(katalog), 1)
    usignert = f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(payload)}."
    assert await avvist(verifikator, usignert) == "algorithm none is not allowed"


async def test_hs256_with_public_key_as_secret_is_refused(katalog, verifikator):
    # The algorithm-confusion attack: the public key is public, so anyone could "sign" an
    # HS256 token with it; a verifier that let the header pick the algorithm would accept it.
    offentleg = jwt.PyJWK(json.loads((katalog / "jwks.json").read_text())["keys"][0]).key
    pem = offentleg.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    good = token(katalog)
    signing_input = f"{b64({'alg': 'HS256', 'typ': 'JWT', 'kid': segment(good, 0)['kid']})}.{good.split('.')[1]}"
    mac = hmac.new(pem, signing_input.encode(), hashlib.sha256).digest()
    forged = f"{signing_input}.{b64(mac)}"
    assert await avvist(verifikator, forged) == "algorithm HS256 is not allowed"


async def test_long_alg_is_clipped(katalog, verifikator):
    payload = segment(token(katalog), 1)
    tok = f"{b64({'alg': 'X' * 500})}.{b64(payload)}.c2ln"
    assert await avvist(verifikator, tok) == f"algorithm {'X' * 20} is not allowed"


async def test_key_type_must_fit_the_algorithm(katalog, verifikator):
    # ES256 header with the kid of our RSA key: the RSA key must not be used for it.
    good = token(katalog)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    tok = jwt.encode(segment(good, 1), ec_key, algorithm="ES256", headers={"kid": segment(good, 0)["kid"]})
    assert await avvist(verifikator, tok) == "signing key does not fit the algorithm"


async def test_jwk_without_alg_takes_the_family_of_its_key_type(katalog, tmp_path):
    # Many JWKS omit "alg": then any RSA algorithm fits an RSA key, but no EC algorithm does.
    jwks = json.loads((katalog / "jwks.json").read_text())
    del jwks["keys"][0]["alg"]
    (tmp_path / "utan-alg.json").write_text(json.dumps(jwks))
    v = Verifikator({DEV_UTFERDAR: str(tmp_path / "utan-alg.json")}, AUD)
    good = token(katalog)
    header, claims = segment(good, 0), segment(good, 1)
    privat = serialization.load_pem_private_key((katalog / "private.pem").read_bytes(), password=None)
    ps256 = jwt.encode(claims, privat, algorithm="PS256", headers={"kid": header["kid"]})
    assert (await v.verifiser(ps256)).org == ORG
    es256 = jwt.encode(claims, ec.generate_private_key(ec.SECP256R1()), algorithm="ES256", headers={"kid": header["kid"]})
    assert await avvist(v, es256) == "signing key does not fit the algorithm"


@pytest.mark.parametrize(
    ("extra", "grunn"),
    [
        ({"scope": None}, "missing claim scope"),
        ({"scope": ["chain:kompetanse.read"]}, "missing claim scope"),
        ({"scope": " "}, "missing claim scope"),
        ({"consumer": None}, "missing or malformed consumer"),
        ({"consumer": "0192:889640782"}, "missing or malformed consumer"),
        ({"consumer": {"authority": "iso6523-actorid-upis", "ID": "0192:12345"}}, "missing or malformed consumer"),
        ({"consumer": {"authority": "other", "ID": ORG}}, "missing or malformed consumer"),
        ({"consumer": {"authority": "iso6523-actorid-upis", "ID": "9908:889640782"}}, "missing or malformed consumer"),
        ({"client_id": None}, "missing claim client_id"),
        ({"client_id": 42}, "missing claim client_id"),
        ({"exp": None}, "missing claim exp"),
        ({"iat": None}, "missing claim iat"),
        ({"aud": None}, "missing claim aud"),
        ({"exp": "soon"}, "invalid token"),
        ({"exp": "9999999999"}, "invalid token"),
    ],
)
async def test_claims(katalog, verifikator, extra, grunn):
    assert await avvist(verifikator, token(katalog, extra=extra)) == grunn


async def test_tampered_payload(katalog, verifikator):
    lesar = token(katalog, scope="chain:kompetanse.read")
    skrivar = token(katalog, scope="chain:kompetanse.write")
    header, _, sig = lesar.split(".")
    tampered = f"{header}.{skrivar.split('.')[1]}.{sig}"
    assert await avvist(verifikator, tampered) == "bad signature"


@pytest.mark.parametrize("garbage", ["", "garbage", "a.b.c", "Bearer x.y.z", f"{b64({'alg': 'RS256'})}.{b64(b'[1]')}.c2ln"])
async def test_garbage(verifikator, garbage):
    assert await avvist(verifikator, garbage) == "malformed token"


async def test_reason_never_contains_claims(katalog, verifikator):
    tok = token(katalog, audience="https://anna.api")
    with pytest.raises(TokenAvvist) as exc:
        await verifikator.verifiser(tok)
    assert ORG not in str(exc.value) and "k-123" not in str(exc.value) and tok not in str(exc.value)


def test_algorithms_are_asymmetric():
    assert "none" not in ALGORITHMS and not any(a.startswith("HS") for a in ALGORITHMS)


# JWKS over HTTP: fetch, rotation, rate limit, failure -------------------------------------


class JwksServer:
    def __init__(self):
        self.jwks: dict = {"keys": []}
        self.requests = 0
        self.status = 200
        self.url = ""

    async def handle(self, _request):
        self.requests += 1
        if self.status != 200:
            return web.Response(status=self.status)
        return web.json_response(self.jwks)


@pytest.fixture
async def server():
    srv = JwksServer()
    webapp = web.Application()
    webapp.router.add_get("/jwk", srv.handle)
    runner = web.AppRunner(webapp)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    srv.url = f"http://{host}:{port}/jwk"
    yield srv
    await runner.cleanup()


def serve(server, katalog):
    server.jwks = json.loads((katalog / "jwks.json").read_text())


async def test_jwks_over_http_is_cached(katalog, server):
    serve(server, katalog)
    v = Verifikator({DEV_UTFERDAR: server.url}, AUD)
    for _ in range(3):
        assert (await v.verifiser(token(katalog))).klient_id == "k-123"
    assert server.requests == 1


async def test_rotation_is_picked_up_by_refetch(katalog, server):
    serve(server, katalog)
    v = Verifikator({DEV_UTFERDAR: server.url}, AUD, refresh_interval=0.0)
    await v.verifiser(token(katalog))
    assert server.requests == 1
    lag_nokkel(katalog, rotate=True)
    serve(server, katalog)  # the issuer publishes the new key
    assert (await v.verifiser(token(katalog))).org == ORG
    assert server.requests == 2


async def test_unknown_kids_refetch_at_most_once_per_interval(katalog, server, tmp_path):
    serve(server, katalog)
    v = Verifikator({DEV_UTFERDAR: server.url}, AUD, refresh_interval=0.3)
    await v.verifiser(token(katalog))
    assert server.requests == 1
    await asyncio.sleep(0.35)  # the first fetch is now older than refresh_interval
    lag_nokkel(tmp_path / "x", kid="x1")
    lag_nokkel(tmp_path / "y", kid="y1")
    assert await avvist(v, token(tmp_path / "x")) == "unknown signing key"
    assert await avvist(v, token(tmp_path / "y")) == "unknown signing key"
    assert server.requests == 2  # one refetch for the two unknown kids
    # Concurrent unknown kids share the (rate-limited) refetch too.
    await asyncio.sleep(0.35)
    grunnar = await asyncio.gather(*(avvist(v, token(tmp_path / "x")) for _ in range(5)))
    assert set(grunnar) == {"unknown signing key"}
    assert server.requests == 3
    assert (await v.verifiser(token(katalog))).org == ORG  # known keys still work, no fetch
    assert server.requests == 3


async def test_jwks_unavailable(katalog, server, tmp_path):
    server.status = 500
    v = Verifikator({DEV_UTFERDAR: server.url}, AUD, refresh_interval=60.0)
    assert await avvist(v, token(katalog)) == "issuer keys unavailable"
    # A failed fetch counts toward the rate limit: a broken issuer is not hammered either.
    assert await avvist(v, token(katalog)) == "issuer keys unavailable"
    assert server.requests == 1
    saknar = Verifikator({DEV_UTFERDAR: str(tmp_path / "finst-ikkje.json")}, AUD)
    assert await avvist(saknar, token(katalog)) == "issuer keys unavailable"


# The CLI ----------------------------------------------------------------------------------


async def test_cli_nokkel_and_token_verifies(tmp_path):
    runner = CliRunner()
    katalog = tmp_path / "mp"
    result = runner.invoke(app, ["nokkel", "--katalog", str(katalog)])
    assert result.exit_code == 0, result.output
    # The printed line is what the operator pastes into the shell: it must trust this JWKS.
    trust = next(line for line in result.stdout.splitlines() if line.startswith("CHAIN_MASKINPORTEN_UTFERDARAR="))
    utferdarar = json.loads(shlex.split(trust.partition("=")[2])[0])
    assert utferdarar == {DEV_UTFERDAR: str((katalog / "jwks.json").resolve())}

    args = ["token", "--scope", "chain:kompetanse.read", "--org", ORG, "--klient", "k-9", "--audience", AUD]
    result = runner.invoke(app, [*args, "--katalog", str(katalog)])
    assert result.exit_code == 0, result.output
    tok = result.stdout.strip()
    assert "\n" not in tok  # only the token, so $(chain maskinporten token ...) works
    klient = await Verifikator(utferdarar, AUD).verifiser(tok)
    assert (klient.org, klient.klient_id, klient.scopes) == (ORG, "k-9", frozenset({"chain:kompetanse.read"}))


def test_cli_token_without_key(tmp_path):
    result = CliRunner().invoke(
        app, ["token", "--scope", "s", "--org", ORG, "--klient", "k", "--katalog", str(tmp_path / "tom")]
    )
    assert result.exit_code == 2
    assert "chain maskinporten nokkel" in result.stderr
    assert result.stdout == ""


def test_cli_token_bad_org(katalog):
    result = CliRunner().invoke(app, ["token", "--scope", "s", "--org", "889640782", "--klient", "k", "--katalog", str(katalog)])
    assert result.exit_code == 2
    assert "0192:" in result.stderr
