-- One row per sak (household case). Person details stay in this database.
CREATE TABLE sak (
    sak_id          text PRIMARY KEY,
    reg_nummer      text NOT NULL,
    kategori        text NOT NULL,
    sakstype        text NOT NULL,
    vedtaksdato     date NOT NULL,
    personar        jsonb NOT NULL,
    status          text NOT NULL,
    kommunenummer   text,
    busetjingsdato  date,
    avslatt_av      text[] NOT NULL DEFAULT '{}',
    mottak_id       text,
    bustadkommune   text,
    correlationid   uuid NOT NULL,
    oppretta_at     timestamptz NOT NULL DEFAULT now(),
    endra_at        timestamptz NOT NULL DEFAULT now(),
    bosatt_at       timestamptz
);
CREATE INDEX sak_status ON sak (status);
CREATE INDEX sak_fordelingsklar ON sak (vedtaksdato, sak_id) WHERE status = 'fordelingsklar';

-- Kommune reference data (Statistics Norway's numbers).
CREATE TABLE kommune (
    kommunenummer text PRIMARY KEY,
    namn          text NOT NULL,
    fylke         text NOT NULL,
    innbyggjarar  integer NOT NULL
);

-- Decided places (vedtaksplassar) and places in use per kommune and group, in persons.
CREATE TABLE kapasitet (
    kommunenummer text NOT NULL REFERENCES kommune,
    kategori      text NOT NULL,
    plassar       integer NOT NULL CHECK (plassar >= 0),
    brukt         integer NOT NULL DEFAULT 0 CHECK (brukt >= 0),
    PRIMARY KEY (kommunenummer, kategori)
);
