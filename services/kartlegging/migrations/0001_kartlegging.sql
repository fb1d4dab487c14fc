-- One mapping case per sak; one row per person to be mapped (content null while pending).
CREATE TABLE kartleggingssak (
    sak_id           text PRIMARY KEY,
    kartleggingstype text NOT NULL,
    correlationid    uuid NOT NULL,
    oppretta_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE kartlegging (
    sak_id       text NOT NULL REFERENCES kartleggingssak,
    person_id    text NOT NULL,
    innhald      jsonb,
    fullfort_at  timestamptz,
    PRIMARY KEY (sak_id, person_id)
);
