-- Payments from bank statements (camt.053/054) and the Stripe adapter (docs/payments-formats.md).

-- Kept payments now also come from statements and Stripe; a Stripe refund is kept as a flagged
-- item (kind 'refund'), shown with the unapplied payments but never applied to an invoice.
ALTER TABLE unapplied_payments DROP CONSTRAINT unapplied_payments_source_check;
ALTER TABLE unapplied_payments ADD CONSTRAINT unapplied_payments_source_check
    CHECK (source IN ('api', 'webhook', 'statement', 'stripe'));
ALTER TABLE unapplied_payments ADD COLUMN kind text NOT NULL DEFAULT 'payment' CHECK (kind IN ('payment', 'refund'));

-- Every statement line imported once: a line seen again (the same file, or the same credit in a
-- camt.054 notification and the day's camt.053) is reported as a duplicate and records nothing.
CREATE TABLE statement_lines (
    payment_id   text        PRIMARY KEY,  -- derived from the line's own ids (api/camt.py)
    statement_id text        NOT NULL,
    invoice_id   text,                     -- the invoice it was applied to, if any
    status       text        NOT NULL CHECK (status IN ('matched', 'unmatched')),
    imported_at  timestamptz NOT NULL DEFAULT now()
);

-- Verified Stripe events, by Stripe's event id: a redelivery gets the first answer.
CREATE TABLE stripe_events (
    event_id    text        PRIMARY KEY,
    event_type  text        NOT NULL,
    status_code integer     NOT NULL,
    response    jsonb       NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now()
);
REVOKE UPDATE, DELETE ON statement_lines, stripe_events FROM dunning_service;
