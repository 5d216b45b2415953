/*
 * vocab.h - the words of mail (envelope.h's enums and bits) as text: the
 * one table that spells them, as SMTP does and as the queue's schema
 * stores them (sql/schema.sql's CHECK lists say the same).  Used at the
 * edges only: the SQL backend, the outbound SMTP client, the queue CLI.
 * A name that is not one of them parses as false (or 0 bits, RET_NONE).
 *
 * Threads: pure functions over constant tables; callable from any thread.
 */
#ifndef SLUICE_VOCAB_H
#define SLUICE_VOCAB_H

#include <stdbool.h>
#include <stddef.h>

#include "envelope.h"

const char *rcpt_state_name(enum rcpt_state st);
bool rcpt_state_parse(const char *name, enum rcpt_state *st);
const char *body_type_name(enum body_type b);
bool body_type_parse(const char *name, enum body_type *b);
const char *dsn_ret_name(enum dsn_ret r); /* NULL for RET_NONE */

/* attempts.status after an attempt that left its recipient in `st`:
 * "sent" (delivered), "bounced" or "deferred". */
const char *attempt_status_name(enum rcpt_state st);
enum dsn_ret dsn_ret_parse(const char *name);

/* NOTIFY bits as "SUCCESS,FAILURE" into buf[len] ("" for 0), and back. */
#define NOTIFY_TEXT_MAX 32
void notify_text(unsigned bits, char *buf, size_t len);
unsigned notify_parse(const char *text);

#endif
