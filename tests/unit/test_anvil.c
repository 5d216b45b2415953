/*
 * test_anvil.c - per-client keys (prefixes), connection counts, sliding
 * rates, and the bound on the table.
 */
#include "anvil.h"
#include "unit.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>

static struct sockaddr_storage
addr(const char *ip)
{
	struct sockaddr_storage ss;

	memset(&ss, 0, sizeof(ss));
	if (strchr(ip, ':') != NULL) {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;

		s6->sin6_family = AF_INET6;
		inet_pton(AF_INET6, ip, &s6->sin6_addr);
	} else {
		struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;

		s4->sin_family = AF_INET;
		inet_pton(AF_INET, ip, &s4->sin_addr);
	}
	return ss;
}

static struct anvil_key
key(const char *ip, int v4, int v6)
{
	struct sockaddr_storage ss = addr(ip);
	struct anvil_key k;

	anvil_key((struct sockaddr *)&ss, v4, v6, &k);
	return k;
}

static const struct {
	const char *a, *b;
	int v4, v6;
	bool same;
	const char *text; /* of a */
} keys[] = {
    {"192.0.2.7", "192.0.2.7", 32, 64, true, "192.0.2.7"},
    {"192.0.2.7", "192.0.2.8", 32, 64, false, "192.0.2.7"},
    {"192.0.2.7", "192.0.2.200", 24, 64, true, "192.0.2.0/24"},
    {"192.0.2.7", "192.0.3.7", 24, 64, false, "192.0.2.0/24"},
    {"192.0.2.7", "192.0.2.6", 31, 64, true, "192.0.2.6/31"},
    {"2001:db8:1:2::1", "2001:db8:1:2:ffff::9", 32, 64, true,
        "2001:db8:1:2::/64"},
    {"2001:db8:1:2::1", "2001:db8:1:3::1", 32, 64, false, "2001:db8:1:2::/64"},
    {"2001:db8:1:2::1", "2001:db8:1:3::1", 32, 48, true, "2001:db8:1::/48"},
    {"2001:db8::1", "2001:db8::1", 32, 128, true, "2001:db8::1"},
    {"2001:db8::1", "2001:db8::2", 32, 128, false, "2001:db8::1"},
    /* A v4-mapped client is the IPv4 client. */
    {"::ffff:192.0.2.7", "192.0.2.7", 32, 64, true, "192.0.2.7"},
    /* Families never mix. */
    {"::", "0.0.0.0", 32, 64, false, "::/64"},
};

static void
test_keys(void)
{
	size_t i;

	for (i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
		struct anvil_key a = key(keys[i].a, keys[i].v4, keys[i].v6);
		struct anvil_key b = key(keys[i].b, keys[i].v4, keys[i].v6);
		char text[80];

		anvil_key_text(&a, keys[i].v4, keys[i].v6, text, sizeof(text));
		CHECK((memcmp(&a, &b, sizeof(a)) == 0) == keys[i].same,
		    "key %s %s %s (/%d, /%d)", keys[i].a,
		    keys[i].same ? "==" : "!=", keys[i].b, keys[i].v4,
		    keys[i].v6);
		CHECK(strcmp(text, keys[i].text) == 0, "key text %s: %s",
		    keys[i].a, text);
	}
}

static void
test_counts(void)
{
	struct anvil *a = anvil_new(100);
	struct anvil_key k = key("192.0.2.7", 32, 64);
	int n, i;

	for (i = 0; i < 3; i++)
		CHECK(anvil_connect(a, &k, 3, 0, 60000, 1000, &n) == ANVIL_OK &&
		          n == i + 1,
		    "connection %d of 3 admitted (%d open)", i + 1, n);
	CHECK(anvil_connect(a, &k, 3, 0, 60000, 1000, &n) == ANVIL_TOO_MANY &&
	          n == 3,
	    "the fourth is refused (%d open)", n);
	anvil_disconnect(a, &k, 1000);
	CHECK(anvil_connect(a, &k, 3, 0, 60000, 1000, &n) == ANVIL_OK,
	    "a slot freed is a slot to use");
	CHECK(anvil_connect(a, &k, 0, 0, 60000, 1000, &n) == ANVIL_OK && n == 4,
	    "limit 0 is no limit (%d open)", n);
	anvil_free(a);
}

static void
test_rate(void)
{
	struct anvil *a = anvil_new(100);
	struct anvil_key k = key("192.0.2.7", 32, 64);
	int64_t unit = 60000, t = 1000000;
	int n, i, ok = 0;

	for (i = 0; i < 10; i++)
		if (anvil_connect(a, &k, 0, 5, unit, t + i, &n) == ANVIL_OK)
			ok++;
	CHECK(ok == 5, "5 of 10 connections within a minute: %d", ok);
	CHECK(anvil_connect(a, &k, 0, 5, unit, t + 10, &n) == ANVIL_RATE &&
	          n == 5,
	    "the rate that decided is reported (%d)", n);
	/* Half a window later the 5 still weigh in full (same window). */
	CHECK(anvil_connect(a, &k, 0, 5, unit, t + unit / 2, &n) == ANVIL_RATE,
	    "still limited half a minute later");
	/* In the next window the previous one counts by its overlap: at a
	 * quarter into it, 5 * 3/4 = 3 (rounded down) of 5: two more. */
	CHECK(anvil_connect(a, &k, 0, 5, unit, t + unit + unit / 4, &n) ==
	          ANVIL_OK,
	    "a quarter into the next minute: admitted");
	CHECK(anvil_connect(a, &k, 0, 5, unit, t + unit + unit / 4, &n) ==
	          ANVIL_OK,
	    "and another");
	CHECK(anvil_connect(a, &k, 0, 5, unit, t + unit + unit / 4, &n) ==
	          ANVIL_RATE,
	    "then limited again (sliding window): %d", n);
	CHECK(anvil_connect(a, &k, 0, 5, unit, t + 3 * unit, &n) == ANVIL_OK,
	    "two minutes of quiet clear the rate");
	/* AUTH failures have their own rate. */
	for (i = 0; i < 4; i++)
		n = anvil_auth_failed(a, &k, unit, t + 3 * unit + i);
	CHECK(n == 4 && anvil_auth_rate(a, &k, unit, t + 3 * unit + 10) == 4,
	    "auth failures counted: %d", n);
	CHECK(anvil_auth_rate(a, &k, unit, t + 6 * unit) == 0,
	    "auth failures age out");
	anvil_free(a);
}

static void
test_bound(void)
{
	struct anvil *a = anvil_new(1000);
	struct anvil_key held = key("198.51.100.1", 32, 64);
	int n, i, refused = 0;
	size_t peak = 0;
	char ip[64];

	/* One client with two connections open all along. */
	anvil_connect(a, &held, 5, 0, 60000, 0, &n);
	anvil_connect(a, &held, 5, 0, 60000, 0, &n);
	/* 100,000 clients, each connecting once and leaving. */
	for (i = 0; i < 100000; i++) {
		struct anvil_key k;

		snprintf(ip, sizeof(ip), "10.%d.%d.%d", (i >> 16) & 255,
		    (i >> 8) & 255, i & 255);
		k = key(ip, 32, 64);
		if (anvil_connect(a, &k, 5, 100, 60000, i, &n) != ANVIL_OK)
			refused++;
		anvil_disconnect(a, &k, i);
		if (anvil_size(a) > peak)
			peak = anvil_size(a);
	}
	CHECK(peak <= 1000, "the table never holds more than 1000: %zu", peak);
	CHECK(refused == 0, "no client refused for lack of room: %d", refused);
	anvil_connect(a, &held, 5, 0, 60000, 100000, &n);
	CHECK(n == 3,
	    "the client with open connections kept its entry "
	    "(%d open, want 3)",
	    n);
	anvil_free(a);
}

int
main(void)
{
	test_keys();
	test_counts();
	test_rate();
	test_bound();
	UNIT_DONE();
}
