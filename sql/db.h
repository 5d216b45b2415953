/*
 * db.h - the only door to SQLite.  No other module calls sqlite3_*.
 *
 * A `struct db` is one connection and its prepared statements.  It belongs
 * to one thread at a time (connections are opened without SQLite's mutex):
 * the queue's writer thread owns the write connection, and each reader
 * (delivery thread, CLI) opens its own.
 *
 * Functions that can fail return RES_OK or RES_TEMP and fill `why` with an
 * enhanced status code and text suitable for an SMTP reply:
 * "4.3.1 Insufficient system storage" when the disk or the database is
 * full, "4.3.0 Queue write error (...)" for anything else.
 */
#ifndef SLUICE_DB_H
#define SLUICE_DB_H

#include <stddef.h>
#include <stdint.h>

#include "envelope.h"
#include "util.h"

#define DB_SCHEMA_VERSION 2

struct db;

/*
 * Open (creating if needed) the queue at `path`: WAL mode,
 * synchronous=FULL, foreign keys on; creates or upgrades the schema and
 * re-creates the views.  NULL on failure with `why`.
 */
struct db *db_open(const char *path, char *why);

/*
 * A second read-write connection to a queue that db_open has already
 * set up (no schema work, no prepared statements): for checkpoints.
 */
struct db *db_open_helper(const char *path, char *why);

/* Open an existing queue read-only (CLI, tests).  NULL with `why`. */
struct db *db_open_readonly(const char *path, char *why);

void db_close(struct db *db);

enum res db_begin(struct db *db, char *why);
enum res db_commit(struct db *db, char *why);
void db_rollback(struct db *db);

/* Store chunk `seq` of message `id`. */
enum res db_put_chunk(struct db *db, const char *id, int seq, const void *data,
    size_t len, char *why);

/* Record that message `id` is being received (its chunks are partial). */
enum res db_put_incoming(
    struct db *db, const char *id, int64_t started_at, char *why);

/*
 * Insert the message row and its recipients and clear its `incoming` row:
 * after the transaction commits the message is queued mail.
 */
enum res db_put_message(struct db *db, const struct envelope *env, char *why);

/* Delete the chunks and `incoming` row of a message never accepted. */
enum res db_drop_incoming(struct db *db, const char *id, char *why);

/*
 * Call `fn(arg, id)` for every message in `incoming`; for each one where it
 * returns non-zero, delete its chunks and row.  Returns how many were
 * deleted, or -1 on error.  Runs in its own transaction.
 */
int db_reclaim_incoming(
    struct db *db, int (*fn)(void *, const char *), void *arg, char *why);

/*
 * Checkpoint the WAL into the database file without blocking the writer
 * (PRAGMA wal_checkpoint(PASSIVE)).  Used by the queue's checkpointer
 * thread on its own connection, so that the writer never pays for a
 * checkpoint in the middle of a commit (see db_disable_autocheckpoint).
 */
enum res db_checkpoint(struct db *db, char *why);

/* Turn off SQLite's automatic checkpoints on this connection. */
void db_disable_autocheckpoint(struct db *db);

/* "ok" or the first problem reported by PRAGMA integrity_check. */
enum res db_integrity_check(struct db *db, char *why);

#endif
