-- The full case lifecycle: withdrawal, deadlines (each event at most once), privatbuande.
ALTER TABLE sak
    ADD COLUMN privatbuande             boolean NOT NULL DEFAULT false,
    ADD COLUMN frist                    date,
    ADD COLUMN frist_naermar_sendt      boolean NOT NULL DEFAULT false,
    ADD COLUMN frist_overskriden_sendt  boolean NOT NULL DEFAULT false,
    ADD COLUMN oppheva_hos              text[] NOT NULL DEFAULT '{}';  -- kommunar whose pending allocation was cancelled
UPDATE sak SET frist = vedtaksdato + interval '6 months' WHERE frist IS NULL;
ALTER TABLE sak ALTER COLUMN frist SET NOT NULL;
-- The deadline watch scans open cases whose next deadline event may be due.
CREATE INDEX sak_frist_open ON sak (frist) WHERE status NOT IN ('bosatt', 'trukke') AND NOT frist_overskriden_sendt;

-- Kommune reference data grows: county number, offers, and its latest capacity report.
ALTER TABLE kommune
    ADD COLUMN fylkesnummer        text NOT NULL DEFAULT '',
    ADD COLUMN vidaregaande        boolean NOT NULL DEFAULT false,
    ADD COLUMN sjukehus            boolean NOT NULL DEFAULT false,
    ADD COLUMN mindrearig_teneste  boolean NOT NULL DEFAULT false,
    ADD COLUMN sektorar            text[] NOT NULL DEFAULT '{}',
    ADD COLUMN tilbod_rapportert   boolean NOT NULL DEFAULT false,  -- the kommune's own offers win over the shipped file
    ADD COLUMN tek_imot            boolean NOT NULL DEFAULT true,
    ADD COLUMN ledige_bustader     integer,
    ADD COLUMN rapportert_dato     date;

-- IMDi's yearly request (anmodning) per kommune and group, and the kommune's decision
-- (vedtak) on it, in persons. The current year's decision is also `kapasitet.plassar`.
CREATE TABLE anmodning (
    ar             integer NOT NULL,
    kommunenummer  text NOT NULL REFERENCES kommune,
    kategori       text NOT NULL,
    anmoda         integer CHECK (anmoda >= 0),
    vedtatt        integer CHECK (vedtatt >= 0),
    endra_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (ar, kommunenummer, kategori)
);

-- Capacity reports over time (from HTTP or `kommune.kapasitet_rapportert` events).
CREATE TABLE kapasitetsrapport (
    rapport_id       bigserial PRIMARY KEY,
    kommunenummer    text NOT NULL REFERENCES kommune,
    dato             date NOT NULL,
    ledige_bustader  integer,
    tek_imot         boolean,
    ar               integer,
    vedtaksplassar   jsonb,
    kjelde           text NOT NULL,
    mottatt_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX kapasitetsrapport_kommune ON kapasitetsrapport (kommunenummer, mottatt_at);

-- One row per allocation batch: what was solved, how well, and the capacity shadow prices
-- that explain why a kommune was not chosen.
CREATE TABLE fordelingsrunde (
    runde_id      bigserial PRIMARY KEY,
    kjort_at      timestamptz NOT NULL DEFAULT now(),
    algoritme     text NOT NULL,
    arsdel        double precision NOT NULL,
    saker         integer NOT NULL,
    personar      integer NOT NULL,
    foreslatt     integer NOT NULL,
    utsett        integer NOT NULL,
    objektiv      double precision NOT NULL,
    ovre_grense   double precision NOT NULL,
    gap           double precision NOT NULL,
    sekund        double precision NOT NULL,
    kandidatar    integer NOT NULL,
    skuggeprisar  jsonb NOT NULL
);

-- Proposals: the optimiser proposes, a caseworker confirms or overrides, and only then is
-- `bosetting.fordelt` emitted. An open proposal reserves its places (in kapasitet.brukt).
CREATE TABLE forslag (
    sak_id         text NOT NULL REFERENCES sak,
    runde_id       bigint NOT NULL REFERENCES fordelingsrunde,
    kommunenummer  text NOT NULL,
    kategori       text NOT NULL,
    personar       integer NOT NULL,
    score          double precision NOT NULL,
    ledd           jsonb NOT NULL,
    alternativ     jsonb NOT NULL,
    bindande       jsonb NOT NULL,
    status         text NOT NULL DEFAULT 'open',  -- open, stadfesta, overstyrt, forelda
    avgjort_at     timestamptz,
    PRIMARY KEY (sak_id, runde_id)
);
CREATE UNIQUE INDEX forslag_eitt_ope ON forslag (sak_id) WHERE status = 'open';

-- Caseworkers' decisions with their reasons: who confirmed, overrode or withdrew what.
CREATE TABLE sakshandsamarlogg (
    logg_id    bigserial PRIMARY KEY,
    tid        timestamptz NOT NULL DEFAULT now(),
    sak_id     text NOT NULL,
    handling   text NOT NULL,
    utfort_av  text NOT NULL,
    grunn      text,
    detaljar   jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX sakshandsamarlogg_sak ON sakshandsamarlogg (sak_id, tid);
