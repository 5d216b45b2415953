-- Upgrade a version 2 queue to version 3: an index of the bounced
-- recipients not yet reported to the sender.  Normally empty (delivery
-- reports a failure in the transaction that records it); it holds the
-- recipients returned with `sluice queue bounce` until the delivery side
-- sends their notice, so looking for them every second costs nothing.
CREATE INDEX recipients_unreported ON recipients (msg_id)
    WHERE state = 'bounced' AND (notified & 1) = 0;
