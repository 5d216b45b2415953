/* admin.h - the queue CLI's SQL (placeholder, being written). */
#ifndef SLUICE_ADMIN_H
#define SLUICE_ADMIN_H
#endif
