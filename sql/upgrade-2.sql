-- Upgrade a version 1 queue to version 2: recipients get a delivery lease.
-- A recipient whose lease_until is in the future is being delivered by a
-- delivery thread; an expired lease (a thread that died) makes it due again.
-- notified: bit 1 once a bounced recipient is in a delivery status
-- notification (all failures of a message go into one, when no recipient is
-- pending); bit 2 once a delay notice was sent for it.
ALTER TABLE recipients ADD COLUMN lease_until INTEGER;
ALTER TABLE recipients ADD COLUMN notified INTEGER NOT NULL DEFAULT 0;
