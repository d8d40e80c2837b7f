-- Switches that stop every equipment cut and restore: scope 'global', or one customer's id.
CREATE TABLE equipment_kill_switches (
    scope  text        PRIMARY KEY,
    reason text        NOT NULL,
    set_by text        NOT NULL,
    set_at timestamptz NOT NULL DEFAULT now()
);

-- Every cut and restore the service did, pretended (dry run) or refused, with who asked and why.
CREATE TABLE equipment_actions (
    id              bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    idempotency_key text        NOT NULL,
    equipment_id    text        NOT NULL,
    customer_id     text        NOT NULL,
    invoice_id      text        NOT NULL,
    action          text        NOT NULL CHECK (action IN ('suspend', 'restore')),
    requested_by    text        NOT NULL,
    reason          text        NOT NULL,
    outcome         text        NOT NULL
        CHECK (outcome IN ('changed', 'unchanged', 'dry_run', 'refused', 'kill_switch', 'failed')),
    state_read_back text,
    dry_run         boolean     NOT NULL,
    detail          text,
    at              timestamptz NOT NULL DEFAULT now()
);
-- One completed action per workflow step: a retry finds it and does not act again.
CREATE UNIQUE INDEX equipment_actions_completed ON equipment_actions (idempotency_key)
    WHERE outcome IN ('changed', 'unchanged', 'dry_run');
CREATE INDEX equipment_actions_by_equipment ON equipment_actions (equipment_id, at);

CREATE FUNCTION refuse_equipment_action_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'equipment_actions is append-only: % refused', TG_OP;
END $$;
CREATE TRIGGER equipment_actions_append_only BEFORE UPDATE OR DELETE ON equipment_actions
    FOR EACH ROW EXECUTE FUNCTION refuse_equipment_action_change();
