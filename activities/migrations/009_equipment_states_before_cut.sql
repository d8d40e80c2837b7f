-- What each cut found before changing anything (each port's ifAdminStatus, a system's PowerState, a
-- controller's state), under the suspend's idempotency key. The first reading of a key stays: a
-- suspend retried after a crash reads the state the cut itself left. A restore puts back only what
-- differs from the latest cut's reading. (Numbered 007 so it follows every 006.)
CREATE TABLE equipment_states_before_cut (
    id              bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    idempotency_key text        NOT NULL UNIQUE,
    equipment_id    text        NOT NULL,
    customer_id     text        NOT NULL,
    invoice_id      text        NOT NULL,
    state           jsonb       NOT NULL CHECK (jsonb_typeof(state) = 'object'),
    recorded_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX equipment_states_before_cut_by_equipment ON equipment_states_before_cut (equipment_id, id);

CREATE FUNCTION refuse_state_before_cut_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'equipment_states_before_cut keeps the first reading: % refused', TG_OP;
END $$;
CREATE TRIGGER equipment_states_before_cut_kept BEFORE UPDATE OR DELETE ON equipment_states_before_cut
    FOR EACH ROW EXECUTE FUNCTION refuse_state_before_cut_change();
