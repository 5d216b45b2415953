/*
 * test_store.c - the storage interface on a temporary SQLite queue: a
 * message written with store_put_mail (chunk boundaries across parts)
 * reads back byte for byte; due recipients, leases and attempts move a
 * recipient through its states; the CLI's hold, release, bounce and
 * purge; queue IDs; the errors a caller sees.
 */
#include "queueid.h"
#include "store.h"
#include "unit.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static char dir[64] = "/tmp/sluice-unit-store-XXXXXX";
static char path[128];

/* What store_read_body passes: the octets and the size of each chunk. */
struct body {
	unsigned char *p;
	size_t len;
	size_t sizes[16];
	int nchunks;
};

static int
collect(void *arg, const void *data, size_t len)
{
	struct body *b = arg;

	b->p = realloc(b->p, b->len + len);
	memcpy(b->p + b->len, data, len);
	b->len += len;
	if (b->nchunks < 16)
		b->sizes[b->nchunks] = len;
	b->nchunks++;
	return 0;
}

static void
test_queue_ids(void)
{
	char a[QUEUE_ID_LEN + 1], b[QUEUE_ID_LEN + 1];

	queue_id_make(a, 1000000, 7);
	queue_id_make(b, 2000000, 7);
	CHECK(strlen(a) == QUEUE_ID_LEN && queue_id_valid(a),
	    "a made queue ID (%s) is valid", a);
	CHECK(strcmp(a, b) < 0, "queue IDs sort by time (%s < %s)", a, b);
	CHECK(!queue_id_valid("0123456789ABCDEI"), "I is not in the alphabet");
	CHECK(!queue_id_valid("0123456789abcdef"), "lower case is refused");
	CHECK(!queue_id_valid("0123456789ABCDE"), "15 characters are refused");
	CHECK(!queue_id_valid("0123456789ABCDEFG"), "17 are refused");
}

/* Two recipients, the body in three parts after one streamed chunk. */
static void
put_message(struct store *s, const char *id, int64_t now, unsigned char *all,
    size_t *all_len)
{
	static const struct envelope_rcpt rcpts[] = {
	    {"a@one.example", "one.example", 0, NULL},
	    {"b@two.example", "two.example", NOTIFY_FAILURE,
	        "rfc822;b@two.example"},
	};
	struct envelope env = {0};
	struct store_part parts[3];
	char why[WHY_MAX] = "";
	size_t sizes[3] = {70000, 100000, 5};
	size_t off = 10;
	enum res r;
	int i;

	for (i = 0; i < 10 + 170005; i++)
		all[i] = (unsigned char)('a' + i % 26);
	for (i = 0; i < 3; i++) {
		parts[i] = (struct store_part){all + off, sizes[i]};
		off += sizes[i];
	}
	*all_len = off;
	snprintf(env.id, sizeof(env.id), "%s", id);
	env.received_at = now;
	env.sender = "s@sender.example";
	env.rcpts = rcpts;
	env.nrcpts = 2;
	env.size = env.stored_size = (int64_t)off;
	env.body_type = BODY_8BITMIME;
	env.dsn_ret = RET_HDRS;
	env.client_ip = "127.0.0.1";
	env.helo = "client.example";
	env.protocol = "ESMTP";
	r = store_begin(s, why);
	if (r == RES_OK)
		r = store_put_incoming(s, id, now, why);
	if (r == RES_OK)
		r = store_put_chunk(s, id, 0, all, 10, why);
	if (r == RES_OK)
		r = store_put_mail(s, &env, 1, parts, 3, why);
	if (r == RES_OK)
		r = store_commit(s, why);
	CHECK(r == RES_OK, "store_put_mail commits (%s)", why);
}

static void
test_body(
    struct store *s, const char *id, const unsigned char *all, size_t all_len)
{
	struct body b = {0};
	char why[WHY_MAX] = "";
	int i, over = 0;

	CHECK(store_read_body(s, id, collect, &b, why) == RES_OK,
	    "the body reads back (%s)", why);
	CHECK(b.len == all_len && memcmp(b.p, all, all_len) == 0,
	    "byte for byte (%zu of %zu octets)", b.len, all_len);
	for (i = 0; i < b.nchunks && i < 16; i++)
		over += b.sizes[i] > STORE_CHUNK;
	CHECK(b.nchunks == 4 && b.sizes[0] == 10 && b.sizes[1] == STORE_CHUNK &&
	          b.sizes[2] == STORE_CHUNK && b.sizes[3] == 170005 - 2 * 65536,
	    "the streamed chunk, then full chunks across the parts, then the "
	    "rest (%d chunks)",
	    b.nchunks);
	CHECK(over == 0, "no chunk is larger than STORE_CHUNK");
	free(b.p);
}

static void
test_delivery(struct store *s, const char *id, int64_t now)
{
	struct store_due due[8];
	struct store_counts c;
	struct store_attempt a = {0};
	char why[WHY_MAX] = "";
	int n;

	n = store_list_due(s, now, due, 8, why);
	CHECK(n == 2, "both recipients are due (%d)", n);
	CHECK(store_lease(s, id, 0, now + 60, why) == RES_OK, "lease one");
	n = store_list_due(s, now, due, 8, why);
	CHECK(n == 1 && due[0].rcpt_no == 1, "a leased recipient is not due");
	a.msg_id = id;
	a.rcpt_no = 0;
	a.at = now;
	a.mx_host = "mx.one.example";
	a.ip = "127.0.0.1";
	a.port = 25;
	a.reply = "250 ok";
	a.state = RCPT_DELIVERED;
	CHECK(store_record_attempt(s, &a, why) == RES_OK, "record delivered");
	a.rcpt_no = 1;
	a.reply = "451 later";
	a.state = RCPT_DEFERRED;
	a.next_at = now + 100;
	CHECK(store_record_attempt(s, &a, why) == RES_OK, "record deferred");
	n = store_list_due(s, now, due, 8, why);
	CHECK(n == 0, "nothing is due before the retry (%d)", n);
	CHECK(store_next_due(s) == now + 100, "the next due time is the retry");
	CHECK(store_queue_counts(s, &c, why) == RES_OK && c.delivered == 1 &&
	          c.deferred == 1 && c.queued == 0 && c.oldest_pending == now,
	    "counts: 1 delivered, 1 deferred, oldest pending at arrival");
}

static void
test_cli(const char *id, int64_t now)
{
	struct store_change ch = {.id = id};
	struct store_msg m = {0};
	struct store_counts c;
	char why[WHY_MAX] = "";
	struct store *s = store_open_admin(path, true, why);

	CHECK(s != NULL, "the CLI opens the queue (%s)", why);
	if (s == NULL)
		return;
	CHECK(store_load(s, id, now, &m, why) == RES_OK && m.nrcpts == 2 &&
	          m.rcpts[1].state == RCPT_DEFERRED &&
	          strcmp(m.sender, "s@sender.example") == 0,
	    "load shows the message and its recipients");
	store_msg_clear(&m);
	CHECK(store_change(s, STORE_HOLD, &ch, 1, now, why) == RES_OK &&
	          ch.changed == 1,
	    "hold changes the pending recipient");
	CHECK(store_queue_counts(s, &c, why) == RES_OK && c.held == 1 &&
	          c.deferred == 0,
	    "it is held");
	CHECK(store_change(s, STORE_RELEASE, &ch, 1, now, why) == RES_OK &&
	          store_queue_counts(s, &c, why) == RES_OK && c.deferred == 1,
	    "release makes it deferred again (attempted before)");
	CHECK(store_change(s, STORE_BOUNCE, &ch, 1, now, why) == RES_OK &&
	          ch.notice == 1 && strcmp(ch.sender, "s@sender.example") == 0,
	    "bounce returns it, with a notice to the sender");
	ch = (struct store_change){.id = "0000000000000000"};
	CHECK(store_change(s, STORE_HOLD, &ch, 1, now, why) == RES_PERM &&
	          !ch.found,
	    "an unknown ID changes nothing (RES_PERM)");
	store_close(s);
}

static void
test_finish(struct store *s, const char *id, int64_t now)
{
	char ids[4][QUEUE_ID_LEN + 1];
	struct store_bounced *bl = NULL;
	struct body b = {0};
	char why[WHY_MAX] = "";
	int n;

	n = store_list_unreported(s, ids, 4, why);
	CHECK(n == 1 && strcmp(ids[0], id) == 0,
	    "the CLI's bounce is unreported (%d)", n);
	n = store_unreported_bounces(s, id, &bl, why);
	CHECK(
	    n == 1 && bl != NULL && strcmp(bl[0].address, "b@two.example") == 0,
	    "its bounced recipient is listed (%d)", n);
	free(bl);
	CHECK(store_begin(s, why) == RES_OK &&
	          store_mark_reported(s, id, why) == RES_OK &&
	          store_release_finished(s, id, why) == RES_OK &&
	          store_commit(s, why) == RES_OK,
	    "mark reported and release the body (%s)", why);
	CHECK(store_list_unreported(s, ids, 4, why) == 0, "nothing unreported");
	(void)store_read_body(s, id, collect, &b, why);
	CHECK(b.len == 0, "a finished message has no body left");
	CHECK(store_begin(s, why) == RES_OK &&
	          store_prune_finished(s, now + 1, why) == 1 &&
	          store_commit(s, why) == RES_OK,
	    "prune removes the finished message");
}

static void
test_errors(void)
{
	char why[WHY_MAX] = "";
	char missing[200];

	CHECK(store_error_code(STORE_E_FULL) == 452 &&
	          store_error_code(STORE_E_WRITE) == 451 &&
	          store_error_code(STORE_E_READ) == 451,
	    "a full store answers 452, other failures 451");
	store_error_why(STORE_E_FULL, "disk", why);
	CHECK(strcmp(why, "4.3.1 Insufficient system storage") == 0,
	    "the full store's words: \"%s\"", why);
	store_error_why(STORE_E_WRITE, "disk I/O error", why);
	CHECK(strcmp(why, "4.3.0 Queue write error (disk I/O error)") == 0,
	    "a write error with its detail: \"%s\"", why);

	snprintf(missing, sizeof(missing), "%s/none.db", dir);
	CHECK(store_open_admin(missing, false, why) == NULL &&
	          strstr(why, "no queue at") != NULL,
	    "the CLI on a missing queue: \"%s\"", why);
	/* A PostgreSQL URI goes to that backend: nothing listens on port
	 * 1, and the password is not repeated in the reason. */
	CHECK(store_open("postgresql://u:secret@127.0.0.1:1/db", why) == NULL &&
	          strstr(why,
	              "cannot connect to postgresql://u:***@127.0.0.1:1/db") ==
	              why &&
	          strstr(why, "secret") == NULL,
	    "an unreachable PostgreSQL queue, password hidden: \"%s\"", why);
	CHECK(store_path_is_database("postgres://x/y") &&
	          store_path_is_database("postgresql://x/y") &&
	          !store_path_is_database("var/queue.db") &&
	          !store_path_is_database("postgresql:queue.db"),
	    "which paths are PostgreSQL queues");
}

static void
remove_dir(void)
{
	static const char *const files[] = {"", "-wal", "-shm"};
	char p[200];
	size_t i;

	for (i = 0; i < 3; i++) {
		snprintf(p, sizeof(p), "%s%s", path, files[i]);
		unlink(p);
	}
	rmdir(dir);
}

int
main(void)
{
	static unsigned char all[10 + 170005];
	char id[QUEUE_ID_LEN + 1];
	char why[WHY_MAX] = "";
	int64_t now = (int64_t)time(NULL);
	struct store *s;
	size_t all_len;

	if (mkdtemp(dir) == NULL)
		return 2;
	snprintf(path, sizeof(path), "%s/queue.db", dir);
	test_queue_ids();
	s = store_open(path, why);
	CHECK(s != NULL, "store_open creates a queue (%s)", why);
	if (s == NULL)
		UNIT_DONE();
	queue_id_make(id, (uint64_t)now * 1000000, 12345);
	put_message(s, id, now, all, &all_len);
	test_body(s, id, all, all_len);
	test_delivery(s, id, now);
	test_cli(id, now);
	test_finish(s, id, now);
	store_close(s);
	test_errors();
	remove_dir();
	UNIT_DONE();
}
