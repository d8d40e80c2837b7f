-- Append-only for real, and the service with only the privileges it uses (docs/database-roles.md).

-- TRUNCATE fires no row triggers: the append-only tables refuse it with a statement trigger.
CREATE TRIGGER invoice_events_no_truncate BEFORE TRUNCATE ON invoice_events
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_event_change();
CREATE TRIGGER equipment_actions_no_truncate BEFORE TRUNCATE ON equipment_actions
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_equipment_action_change();

-- Migrations run as the schema's owner (only an owner may alter a table or disable its triggers,
-- as 002 does); the service logs in as a member of the group role dunning_service, which owns
-- nothing and gets only the privileges below: never TRUNCATE, REFERENCES or TRIGGER, no UPDATE or
-- DELETE on the append-only tables. Deployments create the group beforehand (the owner needs no
-- CREATEROLE then); a superuser running the migrations creates it here.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'dunning_service') THEN
        CREATE ROLE dunning_service NOLOGIN;
    END IF;
END $$;

GRANT SELECT ON schema_migrations, customer_blocks TO dunning_service;
GRANT SELECT, INSERT ON invoice_events, equipment_actions, service_actions, payment_notifications TO dunning_service;
GRANT SELECT, INSERT, UPDATE ON notice_deliveries, unapplied_payments TO dunning_service;
GRANT SELECT, UPDATE ON projection_checkpoint TO dunning_service;
GRANT SELECT, INSERT, UPDATE, DELETE
    ON projected_invoices, projected_invoice_stages, projected_receivables, equipment_kill_switches
    TO dunning_service;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO dunning_service;

-- Tables and sequences later migrations create are the service's to read and write; a later
-- append-only table revokes UPDATE and DELETE in its own migration.
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO dunning_service;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE ON SEQUENCES TO dunning_service;
