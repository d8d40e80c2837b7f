-- Events the projector cannot apply (activities/projections.py): each waits here with its error
-- while projection goes on past it. The read models skip them (an invoice with one shows
-- quarantined_events > 0), `dunning projections quarantine retry` tries them again, `rebuild`
-- skips them. A quarantined event stays in the log: this table only says "not projected".
CREATE TABLE projection_quarantine (
    position       bigint      PRIMARY KEY,  -- of invoice_events (no foreign key: it would stand in
                                             -- front of the log's own TRUNCATE refusal)
    invoice_id     text        NOT NULL,
    sequence       integer     NOT NULL,
    kind           text        NOT NULL,
    error          text        NOT NULL,
    attempts       integer     NOT NULL DEFAULT 1,
    quarantined_at timestamptz NOT NULL DEFAULT now(),
    last_tried_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX projection_quarantine_invoice ON projection_quarantine (invoice_id);

-- The projector quarantines and its retry releases (as 006's default privileges would grant).
GRANT SELECT, INSERT, UPDATE, DELETE ON projection_quarantine TO dunning_service;
