-- Upgrade a version 6 queue to version 7: REQUIRETLS (RFC 8689) per
-- message: asked with MAIL FROM, or waived by a "TLS-Required: No" field.
ALTER TABLE messages ADD COLUMN requiretls INTEGER NOT NULL DEFAULT 0;
ALTER TABLE messages ADD COLUMN tls_required_no INTEGER NOT NULL DEFAULT 0;
