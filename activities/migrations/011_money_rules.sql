-- Issue 20's decisions the invoice row copies from the snapshot: why late charges stopped, whether
-- escalation stopped below the minimum balance, the cut moment a delivered ultimatum named, and
-- what was recovered after a write-off. Snapshots written before them carry none (NULL, copied as
-- the defaults).
ALTER TABLE projected_invoices
    ADD COLUMN late_charges_stopped text,
    ADD COLUMN escalation_stopped   boolean NOT NULL DEFAULT false,
    ADD COLUMN cut_announced_for    timestamptz,
    ADD COLUMN recovered_minor      bigint  NOT NULL DEFAULT 0;
