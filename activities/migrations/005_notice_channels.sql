-- Notices go out on several channels (e-mail, a signed webhook) and the agency hand-over package
-- by e-mail: one delivery record per (step, channel), so a retry skips exactly the channels
-- already delivered. `attempts` counts the sends tried on that channel.
ALTER TABLE notice_deliveries
    ADD COLUMN channel text NOT NULL DEFAULT 'email' CHECK (channel IN ('email', 'webhook', 'agency'));
ALTER TABLE notice_deliveries DROP CONSTRAINT notice_deliveries_pkey;
ALTER TABLE notice_deliveries ADD PRIMARY KEY (idempotency_key, channel);

-- While an attempt is sending, no other attempt of the same step and channel may send; the lease
-- runs out with the activity's start-to-close timeout, so a crashed attempt does not block retries.
ALTER TABLE notice_deliveries ADD COLUMN lease_until timestamptz;
