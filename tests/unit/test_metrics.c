/* test_metrics.c - placeholder, being written. */
#include "metrics.h"
#include "unit.h"

int
main(void)
{
	UNIT_DONE();
}
