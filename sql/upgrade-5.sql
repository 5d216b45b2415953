-- Upgrade a version 4 queue to version 5: what each attempt's TLS proved
-- (attempts.security: none, encrypted, verified, dane) and why
-- (attempts.security_why: the TLSA record that matched, or why a weaker
-- level applied).
ALTER TABLE attempts ADD COLUMN security TEXT;
ALTER TABLE attempts ADD COLUMN security_why TEXT;
