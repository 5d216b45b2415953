/* httpd.c - placeholder, being written. */
#include "httpd.h"
#include "util.h"

struct httpd *
httpd_start(const struct config *cfg, struct server *srv, char *why)
{
	(void)cfg;
	(void)srv;
	why_set(why, "metrics_listen is not supported yet");
	return NULL;
}

void
httpd_stop(struct httpd *h)
{
	(void)h;
}
