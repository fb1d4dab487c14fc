"""`chain maskinporten ...`: play Maskinporten locally, with a development signing key and
tokens for the kompetanse API (see shared/maskinporten.py)."""

import json
import shlex
from pathlib import Path

import typer

app = typer.Typer(help="Development Maskinporten: a local signing key and tokens for the kompetanse API.")


def _katalog(katalog: Path | None) -> Path:
    from shared.config import settings

    return (katalog or Path(settings().maskinporten_dev_katalog)).resolve()


@app.command()
def nokkel(
    katalog: Path | None = typer.Option(None, help="Where to keep the key (default: CHAIN_MASKINPORTEN_DEV_KATALOG)"),
    rotate: bool = typer.Option(False, "--rotate", help="Add a new signing key; the old ones stay in the JWKS"),
) -> None:
    """Make the development signing key (kept if it exists) and show how to trust it."""
    from shared.maskinporten import DEV_UTFERDAR, lag_nokkel

    katalog = _katalog(katalog)
    kid = lag_nokkel(katalog, rotate=rotate)
    jwks = katalog / "jwks.json"
    typer.echo(f"Signing key (kid {kid}): {katalog / 'private.pem'}")
    typer.echo(f"Public keys (JWKS): {jwks}")
    typer.echo("Trust it as an issuer in the kompetanse API with:")
    typer.echo("CHAIN_MASKINPORTEN_UTFERDARAR=" + shlex.quote(json.dumps({DEV_UTFERDAR: str(jwks)})))


@app.command()
def token(
    scope: str = typer.Option(..., help="Space-separated scopes, e.g. 'chain:kompetanse.read'"),
    org: str = typer.Option(..., help="The consumer organisation, 0192:<organisasjonsnummer>"),
    klient: str = typer.Option(..., help="The client_id (the Maskinporten integration id)"),
    audience: str | None = typer.Option(None, help="The token's aud (default: CHAIN_KOMPETANSE_AUDIENCE)"),
    levetid: int = typer.Option(120, min=1, max=3600, help="Seconds the token is valid"),
    katalog: Path | None = typer.Option(None, help="Where the key is (default: CHAIN_MASKINPORTEN_DEV_KATALOG)"),
) -> None:
    """Print a token signed with the development key (only the token, for $(...))."""
    from shared.config import settings
    from shared.maskinporten import CONSUMER_ID, lag_token

    # The API would refuse it anyway; say why here rather than with a 401 later.
    if not CONSUMER_ID.fullmatch(org):
        typer.echo("error: --org must be 0192:<9-digit organisasjonsnummer>, e.g. 0192:889640782", err=True)
        raise typer.Exit(2)
    katalog = _katalog(katalog)
    try:
        typer.echo(
            lag_token(
                katalog,
                scope=scope,
                org=org,
                klient_id=klient,
                audience=audience or settings().kompetanse_audience,
                levetid=levetid,
            )
        )
    except FileNotFoundError:
        typer.echo(f"error: no development key in {katalog}; run `chain maskinporten nokkel` first", err=True)
        raise typer.Exit(2) from None
