/*
 * holder.h - a slot holding the current version of an immutable object
 * (credentials, a user database) that a reload may replace while threads
 * still use the old one.  Readers take a reference; the old object is
 * freed when its last reader lets go.
 *
 * Threads: every function may be called from any thread.  The mutex inside
 * is held only to copy a pointer and count a reference, never across I/O.
 */
#ifndef SLUICE_HOLDER_H
#define SLUICE_HOLDER_H

struct holder;
struct held;

/* `free_fn` frees an object once nobody holds it. */
struct holder *holder_new(void (*free_fn)(void *));
/* Frees the current object too; no reference may be outstanding. */
void holder_free(struct holder *h);

/* Make `obj` (may be NULL) the current object, releasing the old one. */
void holder_set(struct holder *h, void *obj);

/*
 * The current object (NULL when none) and a reference to it in *ref, to
 * be given back with holder_put (which accepts NULL).
 */
void *holder_get(struct holder *h, struct held **ref);
void holder_put(struct held *ref);

#endif
