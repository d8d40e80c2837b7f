-- A kill switch names the customer it stops, or none to stop every customer. The scope 'global'
-- used to stand for every customer, so a customer whose id is 'global' could neither be stopped
-- alone nor told apart from everyone. Existing 'global' rows acted as the global switch and stay so.
ALTER TABLE equipment_kill_switches ADD COLUMN customer_id text;
UPDATE equipment_kill_switches SET customer_id = scope WHERE scope <> 'global';
ALTER TABLE equipment_kill_switches DROP COLUMN scope;
CREATE UNIQUE INDEX equipment_kill_switches_customer ON equipment_kill_switches (customer_id) NULLS NOT DISTINCT;
