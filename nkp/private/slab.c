/* Locked slabs (nkp/private/internal.h): fixed-size slots of locked memory.
 *
 * A sodium_malloc block costs five system calls to make (mmap, two
 * mprotects for the guard pages, mlock, madvise), four to free, and three
 * mappings while it lives. Secrets that come and go by the thousand (a
 * host's primaries, session keys) instead take slots from
 * chunks of NKPI_SLAB_SLOTS, each chunk one sodium_allocarray block (guard
 * pages around the chunk, locked, out of core dumps). Chunks are kept for
 * the life of the process and their slots reused. A free slot is always
 * wiped; the first bytes of a free slot link the free list. */
#include <string.h>

#include <sodium.h>

#include "internal.h"

void *nkpi_slab_get(nkpi_slab *s)
{
	uint8_t *slot = NULL;

	pthread_mutex_lock(&s->lock);
	if (s->free_list == NULL) {
		uint8_t *chunk = sodium_allocarray(NKPI_SLAB_SLOTS, s->slot_bytes);

		for (size_t i = 0; chunk != NULL && i < NKPI_SLAB_SLOTS; i++) {
			uint8_t *p = chunk + i * s->slot_bytes;

			sodium_memzero(p, s->slot_bytes);
			memcpy(p, &s->free_list, sizeof(s->free_list));
			s->free_list = p;
		}
	}
	if (s->free_list != NULL) {
		slot = s->free_list;
		memcpy(&s->free_list, slot, sizeof(s->free_list));
		sodium_memzero(slot, s->slot_bytes);
	}
	pthread_mutex_unlock(&s->lock);
	return slot;
}

void nkpi_slab_put(nkpi_slab *s, void *slot)
{
	if (slot == NULL) {
		return;
	}
	sodium_memzero(slot, s->slot_bytes);
	pthread_mutex_lock(&s->lock);
	memcpy(slot, &s->free_list, sizeof(s->free_list));
	s->free_list = slot;
	pthread_mutex_unlock(&s->lock);
}
