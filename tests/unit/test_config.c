/*
 * test_config.c - configuration parsing: defaults, every value type, and
 * error reporting with line numbers.
 */
#include "config.h"
#include "unit.h"

#include <netinet/in.h>
#include <stdlib.h>
#include <unistd.h>

/* Load `len` octets of `text` as a file. */
static struct config *
load_bytes(const char *text, size_t len, char *errs, size_t errlen, int *nerr)
{
	char path[] = "/tmp/sluice-test-config-XXXXXX";
	int fd = mkstemp(path);
	FILE *e = fmemopen(errs, errlen, "w");
	struct config *cfg;

	(void)!write(fd, text, len);
	close(fd);
	memset(errs, 0, errlen);
	cfg = config_load(path, e, nerr);
	fclose(e);
	unlink(path);
	return cfg;
}

static struct config *
load_text(const char *text, char *errs, size_t errlen, int *nerr)
{
	return load_bytes(text, strlen(text), errs, errlen, nerr);
}

static void
test_defaults(void)
{
	struct config *c = config_defaults();

	CHECK(
	    c->nlisten == 1 && strcmp(c->listen[0].text, "127.0.0.1:2525") == 0,
	    "default listen");
	CHECK(strcmp(c->queue_path, "var/queue.db") == 0, "default queue");
	CHECK(c->max_message_size == 26214400, "default max_message_size");
	CHECK(c->max_recipients == 1000, "default max_recipients");
	CHECK(c->command_timeout == 300 && c->data_timeout == 180,
	    "RFC 5321 4.5.3.2 timeouts");
	CHECK(c->min_data_rate == 500 && c->max_errors == 10 &&
	          c->max_received_headers == 50,
	    "default limits");
	CHECK(!c->bare_newline_normalize, "bare_newline = reject");
	CHECK(c->nrelay_networks == 2 && c->nrelay_domains == 0,
	    "default relay settings");
	CHECK(c->hostname != NULL && c->hostname[0] != '\0',
	    "hostname from the system");
	config_free(c);
}

static void
test_values(void)
{
	char errs[2048];
	int nerr;
	struct config *c = load_text(
	    "# comment\n"
	    "hostname = mx.example.com   # trailing comment\n"
	    "listen = 127.0.0.1:25, [::1]:587/submission 0.0.0.0:465/smtps\n"
	    "max_message_size = 10m\n"
	    "command_timeout = 2m\n"
	    "data_timeout = 90\n"
	    "relay_networks = 10.0.0.0/8 2001:db8::/32\n"
	    "relay_domains = Example.COM, *.lab.example\n"
	    "bare_newline = normalize\n",
	    errs, sizeof(errs), &nerr);

	CHECK(c != NULL && nerr == 0, "valid file loads (%s)", errs);
	if (c == NULL)
		return;
	CHECK(strcmp(c->hostname, "mx.example.com") == 0, "hostname");
	CHECK(c->nlisten == 3 && c->listen[1].kind == LISTEN_SUBMISSION &&
	          c->listen[1].ss.ss_family == AF_INET6 &&
	          c->listen[2].kind == LISTEN_SMTPS &&
	          c->listen[0].kind == LISTEN_SMTP,
	    "listen list with kinds");
	CHECK(c->max_message_size == 10 * 1024 * 1024, "size suffix");
	CHECK(c->command_timeout == 120 && c->data_timeout == 90, "durations");
	CHECK(c->nrelay_networks == 2, "networks");
	CHECK(c->nrelay_domains == 2 &&
	          strcmp(c->relay_domains[0], "example.com") == 0,
	    "domains lower-cased");
	CHECK(config_domain_listed(
	          c->relay_domains, c->nrelay_domains, "EXAMPLE.com"),
	    "domain match ignores case");
	CHECK(config_domain_listed(
	          c->relay_domains, c->nrelay_domains, "a.lab.example") &&
	          !config_domain_listed(
	              c->relay_domains, c->nrelay_domains, "lab.example") &&
	          !config_domain_listed(
	              c->relay_domains, c->nrelay_domains, "xlab.example") &&
	          !config_domain_listed(
	              c->relay_domains, c->nrelay_domains, "sub.example.com"),
	    "wildcard matches subdomains only");
	CHECK(c->bare_newline_normalize, "bare_newline = normalize");
	config_free(c);
}

static void
test_errors(void)
{
	char errs[4096];
	int nerr;
	struct config *c = load_text("bogus = 1\n"
	                             "workers = many\n"
	                             "listen = 127.0.0.1\n"
	                             "relay_networks = 10.0.0.1/8\n"
	                             "command_timeout = 5x\n"
	                             "workers = 3\n"
	                             "no equals sign\n"
	                             "bare_newline = maybe\n"
	                             "max_errors = 0\n",
	    errs, sizeof(errs), &nerr);

	CHECK(c == NULL && nerr == 9, "nine problems reported (%d)", nerr);
	CHECK(strstr(errs, ":1: unknown key \"bogus\"") != NULL,
	    "unknown key with line");
	CHECK(strstr(errs, ":2: bad value \"many\" for workers") != NULL,
	    "bad integer with line");
	CHECK(strstr(errs, ":3: ") != NULL, "listen without port");
	CHECK(strstr(errs, ":4: ") && strstr(errs, "host bits"),
	    "network with host bits");
	CHECK(strstr(errs, ":5: ") != NULL, "bad duration");
	CHECK(strstr(errs, ":6: workers is already set on line 2") != NULL,
	    "duplicate key");
	CHECK(strstr(errs, ":7: expected") != NULL, "no equals sign");
	CHECK(strstr(errs, ":8: bare_newline") != NULL, "bad enum");
	CHECK(strstr(errs, ":9: max_errors = 0 is out of range") != NULL,
	    "range check");
	config_free(c);
}

/* A NUL or another control octet is an error, never a cut line. */
static void
test_control_octets(void)
{
	static const char nul[] = "hostname = mail.example.com\0junk\n"
	                          "workers = 5\n";
	char errs[4096];
	int nerr;
	struct config *c =
	    load_bytes(nul, sizeof(nul) - 1, errs, sizeof(errs), &nerr);

	CHECK(
	    c == NULL && nerr == 1 &&
	        strstr(errs, ":1: control character 0x00 in the line") != NULL,
	    "NUL in a line is refused (%d errors)", nerr);
	config_free(c);
	c = load_text("user = ma\x1bil\n# \x7f\nworkers = 5\r\n"
	              "hostname =\tmail.example.com\t\n",
	    errs, sizeof(errs), &nerr);
	CHECK(c == NULL && nerr == 2 &&
	          strstr(errs, ":1: control character 0x1b") != NULL &&
	          strstr(errs, ":2: control character 0x7f") != NULL,
	    "escape and DEL are refused, even in a comment; CRLF and tabs "
	    "are fine (%d errors)",
	    nerr);
	config_free(c);
}

static void
test_helpers(void)
{
	struct listen_addr la;
	struct cidr n;
	char why[256];
	struct sockaddr_in sin;

	CHECK(config_parse_duration("0") == 0 &&
	          config_parse_duration("45s") == 45 &&
	          config_parse_duration("3m") == 180 &&
	          config_parse_duration("2h") == 7200 &&
	          config_parse_duration("1d") == 86400,
	    "durations parse");
	CHECK(config_parse_duration("") == -1 &&
	          config_parse_duration("m") == -1 &&
	          config_parse_duration("5mm") == -1 &&
	          config_parse_duration("-5") == -1,
	    "bad durations refused");
	CHECK(config_parse_listen("[::1]:2525", &la, why) == 0 &&
	          la.ss.ss_family == AF_INET6,
	    "IPv6 listen");
	CHECK(config_parse_listen("::1:2525", &la, why) != 0,
	    "IPv6 without brackets refused");
	CHECK(config_parse_listen("127.0.0.1:0", &la, why) != 0 &&
	          config_parse_listen("127.0.0.1:65536", &la, why) != 0 &&
	          config_parse_listen("127.0.0.1:25/lmtp", &la, why) != 0,
	    "bad ports and kinds refused");
	CHECK(cidr_parse("192.0.2.0/24", &n, why) == 0, "cidr parse");
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(0xC0000263); /* 192.0.2.99 */
	CHECK(cidr_match(&n, 1, (struct sockaddr *)&sin), "cidr match");
	sin.sin_addr.s_addr = htonl(0xC0000363); /* 192.0.3.99 */
	CHECK(!cidr_match(&n, 1, (struct sockaddr *)&sin), "cidr no match");
	CHECK(cidr_parse("0.0.0.0/0", &n, why) == 0 &&
	          cidr_match(&n, 1, (struct sockaddr *)&sin),
	    "/0 matches everything");
	CHECK(cidr_parse("10.0.0.0/33", &n, why) != 0 &&
	          cidr_parse("nonsense", &n, why) != 0,
	    "bad networks refused");
}

int
main(void)
{
	test_defaults();
	test_values();
	test_errors();
	test_control_octets();
	test_helpers();
	UNIT_DONE();
}
