-- AMQP headers an event is published with, for routing by headers exchanges (kompetanse's
-- per-consumer notification queues bind on `policy`, `kommunenummer`, `fylkesnummer`).
ALTER TABLE outbox ADD COLUMN headers jsonb;
