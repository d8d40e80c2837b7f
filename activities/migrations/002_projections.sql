-- Read models (projections) built from invoice_events by activities/projections.py.
-- Every projected_* table is derived: `dunning projections rebuild` recomputes it from the events.

-- Global order of appends. Existing rows are numbered in the order they were recorded.
ALTER TABLE invoice_events ADD COLUMN position bigint;
ALTER TABLE invoice_events DISABLE TRIGGER invoice_events_append_only;
UPDATE invoice_events e SET position = numbered.n
FROM (SELECT invoice_id, sequence, row_number() OVER (ORDER BY recorded_at, invoice_id, sequence) AS n
      FROM invoice_events) numbered
WHERE e.invoice_id = numbered.invoice_id AND e.sequence = numbered.sequence;
ALTER TABLE invoice_events ENABLE TRIGGER invoice_events_append_only;
CREATE SEQUENCE invoice_events_position_seq OWNED BY invoice_events.position;
SELECT setval('invoice_events_position_seq', coalesce(max(position), 0) + 1, false) FROM invoice_events;
ALTER TABLE invoice_events
    ALTER COLUMN position SET DEFAULT nextval('invoice_events_position_seq'),
    ALTER COLUMN position SET NOT NULL;
CREATE UNIQUE INDEX invoice_events_position ON invoice_events (position);

-- Appends take turns: a position becomes visible only after every smaller one has committed or
-- aborted, so the projector can read "position > checkpoint" without skipping a late commit.
CREATE FUNCTION serialize_event_appends() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(4150002);
    RETURN NULL;
END $$;
CREATE TRIGGER invoice_events_in_order BEFORE INSERT ON invoice_events
    FOR EACH STATEMENT EXECUTE FUNCTION serialize_event_appends();

-- Wake the projector when events are committed (one notification per transaction).
CREATE FUNCTION notify_invoice_events() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('invoice_events', '');
    RETURN NULL;
END $$;
CREATE TRIGGER invoice_events_notify AFTER INSERT ON invoice_events
    FOR EACH STATEMENT EXECUTE FUNCTION notify_invoice_events();

-- How far the projections have read.
CREATE TABLE projection_checkpoint (
    name       text        PRIMARY KEY,
    position   bigint      NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO projection_checkpoint (name) VALUES ('projections');

-- One row per invoice: its state, amounts and next action.
CREATE TABLE projected_invoices (
    invoice_id            text        PRIMARY KEY,
    customer_id           text        NOT NULL,
    currency              text        NOT NULL,
    service               text,
    invoice               jsonb       NOT NULL,
    issue_date            date        NOT NULL,
    due_date              date        NOT NULL,
    state                 text        NOT NULL,
    escalation            text        NOT NULL,
    stage_index           integer     NOT NULL,
    last_stage            text,
    amount_minor          bigint      NOT NULL,
    fees_minor            bigint      NOT NULL,
    paid_minor            bigint      NOT NULL,
    credited_minor        bigint      NOT NULL,
    discount_minor        bigint      NOT NULL,
    written_off_minor     bigint      NOT NULL,
    balance_minor         bigint      NOT NULL,
    overpaid_minor        bigint      NOT NULL,
    disputed              boolean     NOT NULL,
    on_payment_plan       boolean     NOT NULL,
    paused                interval    NOT NULL,
    paused_since          timestamptz,
    suspended             boolean     NOT NULL,
    suspended_service     text,
    sent_to_agency        boolean     NOT NULL,
    factored_to           text,
    legal_review_again_at timestamptz,
    rejected_payments     integer     NOT NULL,
    failed_notices        integer     NOT NULL,
    next_action           text,
    next_action_at        timestamptz,
    closed_at             timestamptz,
    closed_on             date,
    last_sequence         integer     NOT NULL,
    updated_at            timestamptz NOT NULL
);
CREATE INDEX projected_invoices_customer ON projected_invoices (customer_id);
CREATE INDEX projected_invoices_state ON projected_invoices (state);

-- Each escalation stage an invoice reached (the collections funnel).
CREATE TABLE projected_invoice_stages (
    invoice_id text        NOT NULL,
    stage      text        NOT NULL,
    reached_at timestamptz NOT NULL,
    PRIMARY KEY (invoice_id, stage)
);

-- Every change to what an invoice's client owes us, dated in the client's time zone: the
-- receivable at any date is the sum up to it (AR aging and DSO as of a date).
CREATE TABLE projected_receivables (
    position     bigint PRIMARY KEY,
    invoice_id   text   NOT NULL,
    effective_on date   NOT NULL,
    amount_minor bigint NOT NULL,
    reason       text   NOT NULL
);
CREATE INDEX projected_receivables_invoice ON projected_receivables (invoice_id, effective_on);
