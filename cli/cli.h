/*
 * cli.h - the sluice commands (cli/main.c dispatches on argv[1]).  Each
 * takes its own arguments, argv[0] being the command's name, and returns
 * the process exit status (2: a usage error).
 */
#ifndef SLUICE_CLI_H
#define SLUICE_CLI_H

/* sluice queue SUBCOMMAND ... (cli/queue.c) */
int queue_cmd(int argc, char **argv);

/* sluice sendmail [-t] [-f sender] [-i] [rcpt...] (cli/sendmail.c);
 * also how the binary runs when called as "sendmail". */
int sendmail_cmd(int argc, char **argv);

/* sluice health [-c FILE] (cli/health.c) */
int health_cmd(int argc, char **argv);

/* sluice passwd USER (cli/passwd.c) */
int passwd_cmd(int argc, char **argv);

/* sluice check-config [-c FILE] (cli/check.c) */
int check_config_cmd(int argc, char **argv);

/* sluice dkim keygen|show DOMAIN SELECTOR --key FILE ... (cli/dkim.c) */
int dkim_cmd(int argc, char **argv);
int tlsrpt_cmd(int argc, char **argv);

/* sluice resolve DOMAIN [-c FILE] (cli/resolve.c) */
int resolve_cmd(int argc, char **argv);

#endif
