/*
 * queue.h - the only door to the mail queue.
 *
 * Accepting a message: the session creates a `struct queue_msg`, writes the
 * message octets to it as they arrive (they are streamed to the database in
 * chunks of QUEUE_CHUNK bytes, so no session holds a whole message), then
 * commits it with its envelope.  queue_msg_commit returns RES_OK only once
 * the transaction holding the message is durable on disk: only then may
 * the session answer 250.
 *
 * One writer thread owns the write connection and commits the work of every
 * waiting session in one transaction (group commit).  If that transaction
 * fails, each piece of work is retried in its own transaction, so one
 * session's failure (a full disk during a large message) does not fail the
 * others.
 *
 * Threads: queue_open/queue_close from the main thread; queue_msg_* from
 * the thread running the session that owns the queue_msg (one at a time:
 * a session moves between workers through the pool's lock); the writer
 * thread is internal.
 */
#ifndef SLUICE_QUEUE_H
#define SLUICE_QUEUE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "envelope.h"
#include "util.h"

#define QUEUE_CHUNK (64 * 1024)

struct queue;
struct queue_msg;

/*
 * Open the queue database at `path` (creating it and its schema), reclaim
 * partial messages left by a previous run, and start the writer thread.
 * NULL with `why` on failure.
 */
struct queue *queue_open(const char *path, char *why);

/*
 * Finish all submitted work, stop the writer thread and close the
 * database.  Every queue_msg must have been freed.
 */
void queue_close(struct queue *q);

/* Begin a new message with a fresh queue ID.  Never fails. */
struct queue_msg *queue_msg_new(struct queue *q);

/* The message's queue ID (QUEUE_ID_LEN characters). */
const char *queue_msg_id(const struct queue_msg *m);

/*
 * Append message octets.  May block while earlier chunks are being
 * written (bounded memory).  Returns RES_TEMP with `why` ("4.3.1 ..." or
 * "4.3.0 ...") once storing this message failed; the caller should keep
 * reading the client's data and then report the failure.
 */
enum res queue_msg_write(
    struct queue_msg *m, const void *data, size_t len, char *why);

/*
 * The session is about to wait for more of the message without a worker
 * (parked): what it has buffered goes to the writer as a chunk when it is
 * QUEUE_PARK_MIN octets or more, and a smaller buffer shrinks to its
 * contents, so that a waiting message holds at most QUEUE_PARK_MIN octets
 * (chunks are then smaller than QUEUE_CHUNK; readers concatenate them in
 * order).  May wait, as queue_msg_write does, for earlier chunks.  NULL is
 * a no-op.
 */
#define QUEUE_PARK_MIN 4096
void queue_msg_park(struct queue_msg *m);

/*
 * Make the message queued mail: store the remaining octets, the envelope
 * (env->id must be queue_msg_id(m)) and its recipients, and wait until the
 * transaction is durable.  RES_OK means the client may be told 250.
 */
enum res queue_msg_commit(
    struct queue_msg *m, const struct envelope *env, char *why);

/*
 * The SMTP reply code for the failure queue_msg_write or queue_msg_commit
 * reported: 452 when storage is full ("4.3.1"), else 451.
 */
int queue_msg_reply_code(struct queue_msg *m);

/*
 * Release the message.  When it was not committed, its partial data is
 * deleted (in the background).  NULL is a no-op.
 */
void queue_msg_free(struct queue_msg *m);

struct store;

/*
 * Run fn(db, arg, why) on the writer thread inside its next transaction
 * and wait until that transaction committed: for the delivery side, whose
 * claims and results must not race the intake.  fn may run twice (when
 * its batch fails it is retried alone), so it must start from scratch
 * each time.  Returns fn's result, or the commit's failure.
 */
enum res queue_run(struct queue *q,
    enum res (*fn)(struct store *, void *, char *), void *arg, char *why);

/*
 * New-mail signalling for the delivery dispatcher: queue_mail_seq counts
 * committed messages; queue_wait_mail returns when it differs from `seen`,
 * when `deadline_ms` (now_ms() clock) passes, or when *stop is set and
 * queue_wake called (in that order: the waiter checks *stop under the
 * lock queue_wake takes, so no wake is lost).
 */
uint64_t queue_mail_seq(struct queue *q);

/*
 * A shared queue (PostgreSQL): have the other nodes' new mail counted too
 * (a listener thread, LISTEN/NOTIFY), for a node that delivers; nothing
 * for SQLite.  From the main thread, once.
 */
void queue_listen_others(struct queue *q);
void queue_wait_mail(struct queue *q, uint64_t seen, int64_t deadline_ms,
    const atomic_bool *stop);
void queue_wake(struct queue *q);

/* Generate a queue ID into `buf` (QUEUE_ID_LEN + 1 bytes). */
void queue_new_id(char *buf);

#endif
