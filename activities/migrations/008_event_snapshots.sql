-- Events carry the workflow's decisions (release v5): the last event of each batch the workflow
-- appends holds the invoice's snapshot (workflows/events.py InvoiceSnapshot), and the read
-- models copy it with set-based SQL (activities/projections.py). Rows written before have no
-- snapshot: `format` 1. The projector upcasts them once (workflows/upcast.py) into
-- upcast_snapshots, a cache derived from the log alone.
ALTER TABLE invoice_events
    ADD COLUMN snapshot jsonb,
    ADD COLUMN format smallint NOT NULL DEFAULT 1;
CREATE INDEX invoice_events_to_upcast ON invoice_events (position) WHERE format = 1;
CREATE INDEX invoice_events_snapshots ON invoice_events (position) WHERE snapshot IS NOT NULL;

CREATE TABLE upcast_snapshots (
    invoice_id text    NOT NULL,
    sequence   integer NOT NULL,
    position   bigint  NOT NULL,
    snapshot   jsonb   NOT NULL,
    PRIMARY KEY (invoice_id, sequence)
);
CREATE INDEX upcast_snapshots_position ON upcast_snapshots (position);

-- The read models, now copies of the snapshots: rebuilt from the first event.
DROP TABLE projected_invoices, projected_invoice_stages, projected_receivables;

-- One row per invoice: its latest snapshot.
CREATE TABLE projected_invoices (
    invoice_id               text        PRIMARY KEY,
    customer_id              text        NOT NULL,
    currency                 text        NOT NULL,
    service                  text,
    time_zone                text        NOT NULL,
    issue_date               date        NOT NULL,
    due_date                 date        NOT NULL,
    state                    text        NOT NULL,
    escalation               text        NOT NULL,
    last_stage               text,
    amount_minor             bigint      NOT NULL,
    fees_minor               bigint      NOT NULL,
    paid_minor               bigint      NOT NULL,
    credited_minor           bigint      NOT NULL,
    discount_minor           bigint      NOT NULL,
    written_off_minor        bigint      NOT NULL,
    balance_minor            bigint      NOT NULL,
    overpaid_minor           bigint      NOT NULL,
    discount_available_minor bigint      NOT NULL,
    disputed                 boolean     NOT NULL,
    on_payment_plan          boolean     NOT NULL,
    suspended                boolean     NOT NULL,
    suspended_service        text,
    sent_to_agency           boolean     NOT NULL,
    factored_to              text,
    equipment_held           text[]      NOT NULL,
    legal_review_again_at    timestamptz,
    legal_summary            jsonb,
    rejected_payments        integer     NOT NULL,
    failed_notices           integer     NOT NULL,
    next_action              text,
    next_action_kind         text,
    next_action_at           timestamptz,
    closed_at                timestamptz,
    closed_on                date,
    last_sequence            integer     NOT NULL,
    updated_at               timestamptz NOT NULL
);
CREATE INDEX projected_invoices_customer ON projected_invoices (customer_id);
CREATE INDEX projected_invoices_state ON projected_invoices (state);

-- Each escalation stage an invoice reached (the collections funnel), from the facts.
CREATE TABLE projected_invoice_stages (
    invoice_id text        NOT NULL,
    stage      text        NOT NULL,
    reached_at timestamptz NOT NULL,
    PRIMARY KEY (invoice_id, stage)
);

-- Every change to what an invoice's client owes, dated in the client's time zone by the
-- workflow: the receivable at any date is the sum up to it (AR aging and DSO as of a date).
CREATE TABLE projected_receivables (
    invoice_id   text    NOT NULL,
    sequence     integer NOT NULL,
    effective_on date    NOT NULL,
    amount_minor bigint  NOT NULL,
    reason       text    NOT NULL,
    PRIMARY KEY (invoice_id, sequence)
);
CREATE INDEX projected_receivables_effective ON projected_receivables (effective_on);

-- The story told in the Temporal UI and by the status, line by line.
CREATE TABLE projected_invoice_story (
    invoice_id text        NOT NULL,
    sequence   integer     NOT NULL,
    line       integer     NOT NULL,
    at         timestamptz NOT NULL,
    what       text        NOT NULL,
    PRIMARY KEY (invoice_id, sequence, line)
);

UPDATE projection_checkpoint SET position = 0, updated_at = now();
