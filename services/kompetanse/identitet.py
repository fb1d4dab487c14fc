"""Fødselsnummer at rest, with no I/O: encrypted (AES-256-GCM) and found by a keyed hash.

The store never holds a fødselsnummer in clear. A lookup hashes the number with HMAC-SHA256
under a secret key, so the index cannot be reversed by hashing all 11-digit numbers (which
a plain hash could). The ciphertext is bound to its person id (GCM associated data), so a
row's ciphertext copied to another person does not decrypt. Both keys derive from one
configured key (CHAIN_KOMPETANSE_FNR_KEY) with HKDF; `versjon` names the key a row was
written with, so the key can be rotated by re-encrypting rows (not built yet).
"""

import base64
import hashlib
import hmac
import os
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

VEKTER_1 = (3, 7, 6, 1, 8, 9, 4, 5, 2)
VEKTER_2 = (5, 4, 3, 2, 7, 6, 5, 4, 3, 2)


def gyldig(fnr: str) -> bool:
    """An 11-digit fødselsnummer or D-number with valid mod-11 control digits."""
    if len(fnr) != 11 or not fnr.isdigit():
        return False
    d = [int(c) for c in fnr]
    for vekter, pos in ((VEKTER_1, 9), (VEKTER_2, 10)):
        k = 11 - sum(v * x for v, x in zip(vekter, d, strict=False)) % 11
        if k == 11:
            k = 0
        if k == 10 or k != d[pos]:
            return False
    return True


def med_kontrollsiffer(ni: str) -> str | None:
    """The fødselsnummer with these nine first digits, or None if they have none (for synthetic data)."""
    d = [int(c) for c in ni]
    for vekter in (VEKTER_1, VEKTER_2):
        k = 11 - sum(v * x for v, x in zip(vekter, d, strict=False)) % 11
        if k == 10:
            return None
        d.append(0 if k == 11 else k)
    return "".join(map(str, d))


@dataclass(frozen=True)
class Nokkelsett:
    versjon: int
    krypter: bytes
    oppslag: bytes


def nokkelsett(master_b64: str, versjon: int = 1) -> Nokkelsett:
    master = base64.b64decode(master_b64, validate=True)
    if len(master) < 32:
        raise ValueError("CHAIN_KOMPETANSE_FNR_KEY must be at least 32 bytes, base64")

    def avleidd(formal: bytes) -> bytes:
        return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"chain-kompetanse-fnr/" + formal).derive(master)

    return Nokkelsett(versjon, avleidd(b"krypter"), avleidd(b"oppslag"))


def oppslagsnokkel(n: Nokkelsett, fnr: str) -> bytes:
    return hmac.new(n.oppslag, fnr.encode(), hashlib.sha256).digest()


def krypter(n: Nokkelsett, fnr: str, person_id: str) -> bytes:
    nonce = os.urandom(12)
    return nonce + AESGCM(n.krypter).encrypt(nonce, fnr.encode(), person_id.encode())


def dekrypter(n: Nokkelsett, blob: bytes, person_id: str) -> str:
    return AESGCM(n.krypter).decrypt(blob[:12], blob[12:], person_id.encode()).decode()
