-- Statutory interest (issue 20 item 4) as its own component of the invoice row, copied from the
-- snapshot: what was posted (in the balance) and what accrued since the last posting as of the
-- snapshot (not yet owed). Snapshots written before them carry neither (copied as 0).
ALTER TABLE projected_invoices
    ADD COLUMN interest_minor          bigint NOT NULL DEFAULT 0,
    ADD COLUMN interest_accruing_minor bigint NOT NULL DEFAULT 0;
