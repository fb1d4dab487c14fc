-- Every read of individual data, in an append-only, hash-chained audit log (issue 5).
-- Each row's hash is SHA-256 over a canonical serialisation of its fields and the
-- previous row's hash (services/kompetanse/revisjon.py); the first row chains from a
-- fixed genesis value. Appends are serialised on the chain head (one row, locked FOR
-- UPDATE in the reading transaction), so seq has no holes and the chain never forks.
CREATE TABLE revisjonslogg (
    seq           bigint PRIMARY KEY CHECK (seq > 0),
    tid           timestamptz NOT NULL,
    konsument_org text NOT NULL,
    klient        text NOT NULL,
    person_id     text NOT NULL,
    felt          text[] NOT NULL,
    formal        text NOT NULL,
    request_id    uuid NOT NULL,
    utfall        text NOT NULL,
    prev_hash     text NOT NULL,
    hash          text NOT NULL
);
CREATE INDEX revisjonslogg_person ON revisjonslogg (person_id, seq);

-- The chain head: the last seq and hash. Also lets `chain audit-verify` notice rows cut
-- off the end of the log.
CREATE TABLE revisjonslogg_hode (
    id   smallint PRIMARY KEY CHECK (id = 1),
    seq  bigint NOT NULL,
    hash text NOT NULL
);
INSERT INTO revisjonslogg_hode (id, seq, hash) VALUES (1, 0, repeat('0', 64));

-- Append-only in the database: UPDATE, DELETE and TRUNCATE are refused. (A superuser can
-- still disable the trigger: the hash chain is what detects that.)
CREATE FUNCTION revisjonslogg_berre_tillegg() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP USING ERRCODE = 'insufficient_privilege';
END;
$$;
CREATE TRIGGER revisjonslogg_berre_tillegg BEFORE UPDATE OR DELETE ON revisjonslogg
    FOR EACH ROW EXECUTE FUNCTION revisjonslogg_berre_tillegg();
CREATE TRIGGER revisjonslogg_ingen_truncate BEFORE TRUNCATE ON revisjonslogg
    FOR EACH STATEMENT EXECUTE FUNCTION revisjonslogg_berre_tillegg();

-- The unchained log of 0001 is kept (no longer written, append-only too) and, with the
-- new log, still readable as `tilgangslogg`.
ALTER TABLE tilgangslogg RENAME TO tilgangslogg_0001;
CREATE TRIGGER tilgangslogg_0001_berre_tillegg BEFORE UPDATE OR DELETE ON tilgangslogg_0001
    FOR EACH ROW EXECUTE FUNCTION revisjonslogg_berre_tillegg();
CREATE TRIGGER tilgangslogg_0001_ingen_truncate BEFORE TRUNCATE ON tilgangslogg_0001
    FOR EACH STATEMENT EXECUTE FUNCTION revisjonslogg_berre_tillegg();
CREATE VIEW tilgangslogg AS
    SELECT tidspunkt, konsument, person_id, felt, formal, request_id, utfall FROM tilgangslogg_0001
    UNION ALL
    SELECT tid, konsument_org, person_id, felt, formal, request_id, utfall FROM revisjonslogg;
