-- Issue 5: what the consumer policies need in the profile, and fødselsnummer at rest.
ALTER TABLE profil
    ADD COLUMN sak_id                text,
    ADD COLUMN kategori              text,
    ADD COLUMN skjerma               boolean NOT NULL DEFAULT false,
    ADD COLUMN saerlege_behov        jsonb NOT NULL DEFAULT '[]',
    ADD COLUMN digitale_ferdigheiter text,
    ADD COLUMN forerkort             text,
    ADD COLUMN karriererettleiing    jsonb,
    ADD COLUMN kartlagt_at           timestamptz;
CREATE INDEX profil_sak ON profil (sak_id);

-- The fødselsnummer of a pseudonymous person: never in clear. `oppslag` is HMAC-SHA256
-- under a secret key (lookup), `kryptert` AES-256-GCM bound to the person id
-- (services/kompetanse/identitet.py); `nokkel_versjon` names the key.
CREATE TABLE identitet (
    person_id      text PRIMARY KEY,
    oppslag        bytea NOT NULL UNIQUE,
    kryptert       bytea NOT NULL,
    nokkel_versjon smallint NOT NULL,
    registrert_at  timestamptz NOT NULL DEFAULT now()
);
