-- Every operator action that changes anything (replay, redrive, drop, rebuild): who, what,
-- with which parameters, when, and what came of it. Append-only, like an audit log.
CREATE TABLE operasjon (
    id         bigserial PRIMARY KEY,
    tid        timestamptz NOT NULL DEFAULT now(),
    operator   text NOT NULL,
    kommando   text NOT NULL,
    parametrar jsonb NOT NULL,
    resultat   jsonb
);

CREATE FUNCTION operasjon_berre_tillegg() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND OLD.resultat IS NULL AND NEW.resultat IS NOT NULL
       AND (OLD.tid, OLD.operator, OLD.kommando, OLD.parametrar) = (NEW.tid, NEW.operator, NEW.kommando, NEW.parametrar) THEN
        RETURN NEW;  -- an operation's result is recorded once, when it finishes
    END IF;
    RAISE EXCEPTION 'the operations journal is append-only';
END $$;
CREATE TRIGGER operasjon_berre_tillegg BEFORE UPDATE OR DELETE ON operasjon
    FOR EACH ROW EXECUTE FUNCTION operasjon_berre_tillegg();
