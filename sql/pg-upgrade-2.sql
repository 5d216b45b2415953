-- PostgreSQL queue schema version 2: autovacuum keeps up with the tables
-- that churn.  Every delivery updates a recipients row and finished mail
-- loses its body_chunks rows: with the default scale factor (0.2),
-- autovacuum waits until a fifth of a table is dead (docs/benchmark.md,
-- "The PostgreSQL queue").
ALTER TABLE recipients SET (autovacuum_vacuum_scale_factor = 0.02,
    autovacuum_analyze_scale_factor = 0.05);
ALTER TABLE body_chunks SET (autovacuum_vacuum_scale_factor = 0.02);
ALTER TABLE attempts SET (autovacuum_vacuum_scale_factor = 0.05);
