/* metrics.c - placeholder, being written. */
#include "metrics.h"

#include <stdlib.h>
#include <string.h>

void
metrics_add(enum metric m, int64_t n)
{
	(void)m;
	(void)n;
}

void
metrics_observe(enum metric_hist h, double value)
{
	(void)h;
	(void)value;
}

char *
metrics_render(const struct metrics_gauges *g, size_t *len)
{
	(void)g;
	*len = 0;
	return strdup("");
}
