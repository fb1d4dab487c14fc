-- Wake the relay when events are written: one notification per statement that writes to
-- the outbox (a river's batch writes all its events in one), not one per event. PostgreSQL
-- folds identical notifications of a transaction into one and delivers them at commit.
-- The relay still polls now and then, in case one is missed (a reconnect).
CREATE FUNCTION outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('outbox', '');
    RETURN NULL;
END
$$;

CREATE TRIGGER outbox_written AFTER INSERT ON outbox FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify();
