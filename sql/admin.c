/* admin.c - the queue CLI's SQL (placeholder, being written). */
#include "admin.h"
