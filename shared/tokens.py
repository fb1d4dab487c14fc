"""Signed access tokens for the HTTP APIs of caseworkers (IMDi) and kommunar.

A token is `<subject>.<signature>`, where the subject names who calls (`imdi:<caseworker>`,
`kommune:<kommunenummer>`, `mottak:<mottak_id>` (a reception centre's system),
`fylke:<fylkesnummer>` (a county's career guidance) or `person:<person_id>` (self-registration)) and the signature is an HMAC-SHA256 of the subject under
`CHAIN_TOKEN_SECRET`. Operators issue them with `chain token`. They are stateless and
cannot be forged without the secret; partner agencies get Maskinporten JWTs instead
(kompetanse). Rotating the secret revokes every token.
"""

import base64
import hashlib
import hmac
import re

SUBJECT = re.compile(r"^(imdi:[a-z0-9-]{1,40}|kommune:[0-9]{4}|mottak:[a-z0-9-]{1,40}|fylke:[0-9]{2}|person:p-[0-9a-f]{16,64})$")


def _sign(secret: str, subject: str) -> str:
    digest = hmac.new(secret.encode(), subject.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def issue(secret: str, subject: str) -> str:
    if not SUBJECT.match(subject):
        raise ValueError("subject must be imdi:<id>, kommune:<kommunenummer> or mottak:<mottak_id>")
    return f"{subject}.{_sign(secret, subject)}"


def verify(secret: str, token: str) -> str | None:
    """The token's subject if its signature is valid, else None."""
    subject, _, signature = token.rpartition(".")
    if not SUBJECT.match(subject):
        return None
    return subject if hmac.compare_digest(signature, _sign(secret, subject)) else None
