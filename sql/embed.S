/*
 * embed.S - the SQL files, embedded in the binary as NUL-terminated
 * strings so that a single binary can create and upgrade its queue.
 */
	.section .rodata
	.global sql_schema_text
sql_schema_text:
	.incbin "sql/schema.sql"
	.byte 0
	.global sql_views_text
sql_views_text:
	.incbin "sql/views.sql"
	.byte 0
	.global sql_upgrade2_text
sql_upgrade2_text:
	.incbin "sql/upgrade-2.sql"
	.byte 0
	.global sql_upgrade3_text
sql_upgrade3_text:
	.incbin "sql/upgrade-3.sql"
	.byte 0
	.global sql_upgrade4_text
sql_upgrade4_text:
	.incbin "sql/upgrade-4.sql"
	.byte 0
	.global sql_upgrade5_text
sql_upgrade5_text:
	.incbin "sql/upgrade-5.sql"
	.byte 0
	.global sql_upgrade6_text
sql_upgrade6_text:
	.incbin "sql/upgrade-6.sql"
	.byte 0
	.global sql_upgrade7_text
sql_upgrade7_text:
	.incbin "sql/upgrade-7.sql"
	.byte 0
	.global sql_upgrade8_text
sql_upgrade8_text:
	.incbin "sql/upgrade-8.sql"
	.byte 0
	.global sql_upgrade9_text
sql_upgrade9_text:
	.incbin "sql/upgrade-9.sql"
	.byte 0
	.global sql_pg_schema_text
sql_pg_schema_text:
	.incbin "sql/pg-schema.sql"
	.byte 0
	.global sql_pg_views_text
sql_pg_views_text:
	.incbin "sql/pg-views.sql"
	.byte 0
	.global sql_pg_upgrade2_text
sql_pg_upgrade2_text:
	.incbin "sql/pg-upgrade-2.sql"
	.byte 0
	.section .note.GNU-stack,"",@progbits
