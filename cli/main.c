/*
 * main.c - the sluice binary: one table of commands, each with its usage
 * line and what it does; `sluice help` is printed from it.  Called as
 * "sendmail" (a symlink), the binary is `sluice sendmail`.
 *
 * Threads: main() runs on the main thread; only `serve` starts others.
 */
#include "cli.h"
#include "loadcfg.h"
#include "serve.h"
#include "version.h"

#include <stdio.h>
#include <string.h>

static int
version_cmd(int argc, char **argv)
{
	(void)argc;
	(void)argv;
	printf("sluice %s\n", SLUICE_VERSION);
	return 0;
}

static int help_cmd(int argc, char **argv);

static const struct command {
	const char *name;
	int (*fn)(int argc, char **argv);
	const char *args; /* its operands, for the help text */
	const char *what; /* lines of the help text */
} commands[] = {
    {"serve", serve_cmd, "", "run the relay in the foreground"},
    {"check-config", check_config_cmd, "",
        "check the configuration and report every problem"},
    {"resolve", resolve_cmd, "DOMAIN",
        "show where mail for DOMAIN would go (MX hosts and\n"
        "addresses, in the order they are tried)"},
    {"passwd", passwd_cmd, "USER",
        "hash a password read on standard input and print\n"
        "the line USER:HASH for the auth_users file"},
    {"dkim", dkim_cmd, "keygen|show ...",
        "make a DKIM key, or print the DNS record of one\n"
        "(sluice dkim help)"},
    {"tlsrpt", tlsrpt_cmd, "show [--date YYYY-MM-DD]",
        "print the TLS-RPT reports of a day (default yesterday)"},
    {"queue", queue_cmd, "...",
        "list, show and change queued mail (sluice queue help)"},
    {"sendmail", sendmail_cmd, "[-t] [-f SENDER] [-i] [RCPT...]",
        "submit a message read on standard input"},
    {"health", health_cmd, "",
        "exit 0 when the relay answers SMTP and its queue is\n"
        "writable (for HEALTHCHECK and monitoring)"},
    {"version", version_cmd, "", "print the version"},
    {"help", help_cmd, "", "print this help"},
};

enum { NCOMMANDS = sizeof(commands) / sizeof(commands[0]) };

/*
 * Two spaces, the command and its arguments, then each line of `what` in
 * one column (below, when the command line is too long to share it).
 */
static void
usage(FILE *f)
{
	size_t i;

	fprintf(f, "usage: sluice COMMAND [ARGS] [-c FILE]\n\ncommands:\n");
	for (i = 0; i < NCOMMANDS; i++) {
		const char *w = commands[i].what, *nl;
		int n;

		n = fprintf(f, "  %s%s%s", commands[i].name,
		    commands[i].args[0] != '\0' ? " " : "", commands[i].args);
		if (n > 14)
			fprintf(f, "\n%16s", "");
		else
			fprintf(f, "%*s", 16 - n, "");
		while ((nl = strchr(w, '\n')) != NULL) {
			fprintf(f, "%.*s\n%16s", (int)(nl - w), w, "");
			w = nl + 1;
		}
		fprintf(f, "%s\n", w);
	}
	fprintf(f,
	    "\nThe configuration is FILE, else $SLUICE_CONFIG, else %s;\n"
	    "when none of these exists, the built-in defaults are used.\n"
	    "Any key can also be set as SLUICE_<KEY> in the environment\n"
	    "(SLUICE_RELAY_NETWORKS=...), which wins over the file.\n",
	    DEFAULT_CONFIG);
}

static int
help_cmd(int argc, char **argv)
{
	(void)argc;
	(void)argv;
	usage(stdout);
	return 0;
}

int
main(int argc, char **argv)
{
	const char *name = strrchr(argv[0], '/');
	size_t i;

	name = name != NULL ? name + 1 : argv[0];
	if (strcmp(name, "sendmail") == 0)
		return sendmail_cmd(argc, argv);
	if (argc < 2) {
		usage(stderr);
		return 2;
	}
	if (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0)
		return help_cmd(argc - 1, argv + 1);
	for (i = 0; i < NCOMMANDS; i++)
		if (strcmp(argv[1], commands[i].name) == 0)
			return commands[i].fn(argc - 1, argv + 1);
	fprintf(stderr, "sluice: unknown command \"%s\"\n", argv[1]);
	usage(stderr);
	return 2;
}
