-- The append-only domain event log: one row per fact about an invoice.
CREATE TABLE invoice_events (
    invoice_id  text        NOT NULL,
    sequence    integer     NOT NULL CHECK (sequence > 0),
    kind        text        NOT NULL,
    occurred_at timestamptz NOT NULL,
    data        jsonb       NOT NULL DEFAULT '{}',
    recorded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (invoice_id, sequence)
);
CREATE INDEX invoice_events_kind ON invoice_events (kind, occurred_at);

CREATE FUNCTION refuse_event_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'invoice_events is append-only: % refused', TG_OP;
END $$;
CREATE TRIGGER invoice_events_append_only BEFORE UPDATE OR DELETE ON invoice_events
    FOR EACH ROW EXECUTE FUNCTION refuse_event_change();

-- Every notice the service tried to send, keyed by workflow and step, so a retry never sends twice.
CREATE TABLE notice_deliveries (
    idempotency_key text        PRIMARY KEY,
    invoice_id      text        NOT NULL,
    kind            text        NOT NULL,
    recipient       text        NOT NULL,
    message_id      text        NOT NULL,
    status          text        NOT NULL CHECK (status IN ('sending', 'sent', 'failed')),
    attempts        integer     NOT NULL DEFAULT 1,
    error           text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    sent_at         timestamptz
);

-- Decisions to suspend and restore a customer's service, one row per workflow step.
CREATE TABLE service_actions (
    idempotency_key              text        PRIMARY KEY,
    customer_id                  text        NOT NULL,
    invoice_id                   text        NOT NULL,
    action                       text        NOT NULL CHECK (action IN ('suspend', 'restore')),
    remote_disconnect_authorized boolean     NOT NULL,
    equipment_ids                text[]      NOT NULL DEFAULT '{}',
    reason                       text        NOT NULL,
    recorded_at                  timestamptz NOT NULL DEFAULT now()
);

-- A customer is blocked while any of its invoices was suspended and not restored since.
CREATE VIEW customer_blocks AS
SELECT customer_id, array_agg(invoice_id ORDER BY invoice_id) AS suspended_invoices
FROM (
    SELECT DISTINCT ON (invoice_id) customer_id, invoice_id, action
    FROM service_actions
    ORDER BY invoice_id, recorded_at DESC
) latest
WHERE action = 'suspend'
GROUP BY customer_id;
