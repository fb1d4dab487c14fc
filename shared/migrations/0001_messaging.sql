-- Idempotent inbox: one row per consumed event (CloudEvents source + id identify an event).
CREATE TABLE inbox (
    source      text        NOT NULL,
    event_id    uuid        NOT NULL,
    type        text        NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source, event_id)
);

-- Highest sequence applied per producer and case: events past a gap wait (delayed retry).
CREATE TABLE inbox_sequence (
    source        text   NOT NULL,
    subject       text   NOT NULL,
    last_sequence bigint NOT NULL,
    PRIMARY KEY (source, subject)
);

-- Transactional outbox: written in the same transaction as the state change it reports.
CREATE TABLE outbox (
    position     bigserial   PRIMARY KEY,
    event_id     uuid        NOT NULL UNIQUE,
    type         text        NOT NULL,
    subject      text        NOT NULL,
    sequence     bigint      NOT NULL,
    body         text        NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz
);
CREATE INDEX outbox_unpublished ON outbox (position) WHERE published_at IS NULL;

-- Next sequence number per case for the events this service emits.
CREATE TABLE outbox_sequence (
    subject       text   PRIMARY KEY,
    last_sequence bigint NOT NULL
);
