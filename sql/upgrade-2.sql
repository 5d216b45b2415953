-- Upgrade a version 1 queue to version 2: recipients get a delivery lease.
-- A recipient whose lease_until is in the future is being delivered by a
-- delivery thread; an expired lease (a thread that died) makes it due again.
ALTER TABLE recipients ADD COLUMN lease_until INTEGER;
