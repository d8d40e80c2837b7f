-- A payment id names one payment per customer across all its invoices (issue 19, cash application).
-- The API claims the id for its target before recording: an invoice ('invoice:<id>') or the customer's
-- own payment path ('customer'); the same id for another target is refused (409), so concurrent posts
-- of one payment to two invoices credit it once. A claim whose recording was refused is removed.
CREATE TABLE payment_claims (
    customer_id  text        NOT NULL,
    payment_id   text        NOT NULL,
    target       text        NOT NULL,
    amount_minor bigint      NOT NULL,
    currency     text        NOT NULL,
    claimed_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (customer_id, payment_id)
);
REVOKE UPDATE ON payment_claims FROM dunning_service;

-- A kept payment is reserved for one target (an invoice, or 'customer:<id>') before it is applied: concurrent
-- applications to different targets apply it once (the row update decides) and the others get 409.
ALTER TABLE unapplied_payments ADD COLUMN reserved_for text;
