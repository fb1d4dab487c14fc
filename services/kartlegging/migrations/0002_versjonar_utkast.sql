-- Drafts, versions, completeness, self-registration and career guidance (issue 4).
ALTER TABLE kartleggingssak ADD COLUMN privatbuande boolean NOT NULL DEFAULT false;

ALTER TABLE kartlegging
    ADD COLUMN utkast          jsonb,
    ADD COLUMN utkast_at       timestamptz,
    ADD COLUMN versjon         integer NOT NULL DEFAULT 0,
    ADD COLUMN fullstendigheit double precision,
    ADD COLUMN manglande_felt  text[] NOT NULL DEFAULT '{}';

-- Every version of a completed mapping, never overwritten: 1 is the completed mapping,
-- each correction adds the next. `innhald` holds what stays here (health details, wishes).
CREATE TABLE kartleggingsversjon (
    sak_id          text NOT NULL,
    person_id       text NOT NULL,
    versjon         integer NOT NULL CHECK (versjon >= 1),
    innhald         jsonb NOT NULL,
    fullstendigheit double precision,
    manglande_felt  text[] NOT NULL,
    grunn           text,
    kjelde          text NOT NULL,
    oppretta_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (sak_id, person_id, versjon),
    FOREIGN KEY (sak_id, person_id) REFERENCES kartlegging
);

-- Mappings completed before this migration are version 1.
UPDATE kartlegging SET versjon = 1 WHERE innhald IS NOT NULL;
INSERT INTO kartleggingsversjon (sak_id, person_id, versjon, innhald, fullstendigheit, manglande_felt, kjelde, oppretta_at)
SELECT sak_id, person_id, 1, innhald, NULL, '{}', 'migrert', coalesce(fullfort_at, now()) FROM kartlegging WHERE innhald IS NOT NULL;

-- The county's career-guidance note (integreringslova § 11): stays here, never on the bus.
CREATE TABLE karriererettleiing (
    sak_id       text NOT NULL,
    person_id    text NOT NULL,
    dato         date NOT NULL,
    fylkesnummer text NOT NULL,
    notat        text NOT NULL,
    oppretta_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (sak_id, person_id, dato),
    FOREIGN KEY (sak_id, person_id) REFERENCES kartlegging
);
