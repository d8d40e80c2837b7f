-- Payments the service received but could not apply to an invoice (unknown invoice, or, from the
-- provider's webhook, one the invoice refused): kept and shown until ops apply them, never lost.
CREATE TABLE unapplied_payments (
    payment_id         text        PRIMARY KEY,
    invoice_id         text        NOT NULL,  -- the invoice reference as the payer gave it
    amount_minor       bigint      NOT NULL CHECK (amount_minor > 0),
    currency           text        NOT NULL,
    received_at        timestamptz NOT NULL,
    source             text        NOT NULL CHECK (source IN ('api', 'webhook')),
    reason             text        NOT NULL,
    recorded_at        timestamptz NOT NULL DEFAULT now(),
    applied_invoice_id text,                  -- set once the payment was recorded on an invoice
    applied_at         timestamptz,
    CHECK ((applied_invoice_id IS NULL) = (applied_at IS NULL))
);
CREATE INDEX unapplied_payments_open ON unapplied_payments (recorded_at, payment_id) WHERE applied_at IS NULL;

-- Verified notifications from the payment provider's webhook. A replay of the same signed
-- notification is answered from here, without asking the invoice again.
CREATE TABLE payment_notifications (
    signature   text        PRIMARY KEY,  -- hex HMAC-SHA256 of "<timestamp>.<body>"
    payment_id  text        NOT NULL,
    signed_at   timestamptz NOT NULL,
    status_code integer     NOT NULL,
    response    jsonb       NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX payment_notifications_payment ON payment_notifications (payment_id);
