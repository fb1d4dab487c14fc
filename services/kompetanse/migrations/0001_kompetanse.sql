-- Read model: one competence profile per pseudonymous person id.
CREATE TABLE profil (
    person_id        text PRIMARY KEY,
    kartleggingstype text,
    utdanning        jsonb,
    arbeid           jsonb NOT NULL DEFAULT '[]',
    sprak            jsonb NOT NULL DEFAULT '[]',
    kommunenummer    text,
    bosatt           boolean NOT NULL DEFAULT false,
    endra_at         timestamptz NOT NULL DEFAULT now()
);

-- Every access to individual data, append-only (a hash chain comes with Maskinporten access).
CREATE TABLE tilgangslogg (
    id          bigserial PRIMARY KEY,
    tidspunkt   timestamptz NOT NULL DEFAULT now(),
    konsument   text NOT NULL,
    person_id   text NOT NULL,
    felt        text[] NOT NULL,
    formal      text NOT NULL,
    request_id  uuid NOT NULL,
    utfall      text NOT NULL
);
CREATE INDEX tilgangslogg_person ON tilgangslogg (person_id, tidspunkt);
