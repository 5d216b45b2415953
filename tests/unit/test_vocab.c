/*
 * test_vocab.c - the words of mail as text and back: every recipient
 * state, body type and RET value round-trips, names are exact, NOTIFY
 * bits make the list SMTP and the queue use and parse back whole items.
 */
#include "unit.h"
#include "vocab.h"

static void
test_vocabulary(void)
{
	char buf[NOTIFY_TEXT_MAX];
	enum rcpt_state st = RCPT_QUEUED;
	enum body_type b = BODY_7BIT;
	int i, round = 0;

	for (i = 0; i < RCPT_NSTATES; i++)
		round += rcpt_state_parse(rcpt_state_name(i), &st) &&
		         st == (enum rcpt_state)i;
	CHECK(round == RCPT_NSTATES, "every state's name parses back");
	CHECK(!rcpt_state_parse("Held", &st) && !rcpt_state_parse("", &st),
	    "state names are exact");
	CHECK(body_type_parse("BINARYMIME", &b) && b == BODY_BINARYMIME &&
	          strcmp(body_type_name(BODY_8BITMIME), "8BITMIME") == 0,
	    "body types both ways");
	CHECK(dsn_ret_name(RET_NONE) == NULL &&
	          dsn_ret_parse("HDRS") == RET_HDRS &&
	          dsn_ret_parse("") == RET_NONE,
	    "RET both ways, absent as NULL");
	notify_text(NOTIFY_DELAY | NOTIFY_SUCCESS, buf, sizeof(buf));
	CHECK(
	    strcmp(buf, "SUCCESS,DELAY") == 0, "NOTIFY bits as text: %s", buf);
	notify_text(
	    NOTIFY_NEVER | NOTIFY_SUCCESS | NOTIFY_FAILURE | NOTIFY_DELAY, buf,
	    sizeof(buf));
	CHECK(notify_parse(buf) == 0xf, "all four fit and parse: %s", buf);
	CHECK(
	    notify_parse("FAILURE,DELAY") == (NOTIFY_FAILURE | NOTIFY_DELAY) &&
	        notify_parse("XFAILURE,DELAYS") == 0 && notify_parse("") == 0,
	    "NOTIFY text parses whole items only");
}

int
main(void)
{
	test_vocabulary();
	UNIT_DONE();
}
