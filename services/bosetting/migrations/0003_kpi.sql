-- The KPI projection (issue 7): per case, the record `kpi.apply` folds from the events
-- bosetting consumes (vedtak.*, kartlegging.*) and those it emits (bosetting.*, consumed
-- back from the bus, so the projection is built from events exactly as a rebuild from the
-- event log would build it). The KPIs are computed from these records (`kpi.rapport`).
CREATE TABLE kpi_sak (
    sak_id   text PRIMARY KEY,
    data     jsonb NOT NULL,
    endra_at timestamptz NOT NULL DEFAULT now()
);
