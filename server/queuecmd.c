/* queuecmd.c - placeholder, being written. */
#include "cmds.h"

#include <stdio.h>

int
queue_cmd(int argc, char **argv)
{
	(void)argc;
	fprintf(stderr, "sluice: %s: not written yet\n", argv[0]);
	return 2;
}
