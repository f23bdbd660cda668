#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <sodium.h>

#include <nkp/nkp.h>

#include "internal.h"
#include "wire.pb-c.h"

#define KEY_LEN 32u
#define ID_LEN 16u

static void setup(void)
{
	cr_assert_eq(nkp_init(), NKP_OK);
}

TestSuite(arena, .init = setup);

/* The bytes of version v of provider p in a push made from `seed`:
 * distinct for every (seed, p, v, i), never all zero. */
static void key_bytes(uint32_t seed, size_t p, size_t v, uint8_t out[KEY_LEN])
{
	for (size_t i = 0; i < KEY_LEN; i++) {
		out[i] = (uint8_t)(0x80u | ((seed * 7u + p * 13u + v * 3u + i) & 0x7fu));
	}
	out[0] = (uint8_t)seed;
	out[1] = (uint8_t)p;
	out[2] = (uint8_t)v;
}

/* A packed Message carrying a Push of `np` providers of `nv` versions
 * each, the provider names `name_len` bytes long. Caller frees. */
static uint8_t *push_pack(uint32_t seed, size_t np, size_t nv, size_t name_len, size_t *len)
{
	Nkp__Wire__DesiredState m = NKP__WIRE__DESIRED_STATE__INIT;
	Nkp__Wire__ProviderKeys *pk = calloc(np, sizeof(*pk));
	Nkp__Wire__ProviderKeys **pks = calloc(np, sizeof(*pks));
	Nkp__Wire__VersionKey *vk = calloc(np * nv, sizeof(*vk));
	Nkp__Wire__VersionKey **vks = calloc(np * nv, sizeof(*vks));
	uint8_t *keys = calloc(np * nv, KEY_LEN);
	uint8_t *ids = calloc(np, ID_LEN);
	char *names = calloc(np, name_len + 1);
	uint8_t *out;

	cr_assert(pk && pks && vk && vks && keys && ids && names);
	for (size_t p = 0; p < np; p++) {
		nkp__wire__provider_keys__init(&pk[p]);
		memset(ids + p * ID_LEN, (int)(p + 1), ID_LEN);
		pk[p].id = (ProtobufCBinaryData){ID_LEN, ids + p * ID_LEN};
		memset(names + p * (name_len + 1), 'a' + (int)(p % 26), name_len);
		pk[p].name = names + p * (name_len + 1);
		pk[p].backed_up = true;
		pk[p].n_versions = nv;
		pk[p].versions = vks + p * nv;
		for (size_t v = 0; v < nv; v++) {
			size_t i = p * nv + v;

			nkp__wire__version_key__init(&vk[i]);
			vk[i].version = (uint32_t)v + 1;
			vk[i].state = v + 1 == nv ? 1 : 2;
			key_bytes(seed, p, v, keys + i * KEY_LEN);
			vk[i].key = (ProtobufCBinaryData){KEY_LEN, keys + i * KEY_LEN};
			vk[i].created_unix = 1700000000u + seed;
			vks[i] = &vk[i];
		}
		pks[p] = &pk[p];
	}
	m.epoch = 1;
	m.counter = seed;
	m.n_providers = np;
	m.providers = pks;
	*len = nkp__wire__desired_state__get_packed_size(&m);
	out = malloc(*len);
	cr_assert_not_null(out);
	cr_assert_eq(nkp__wire__desired_state__pack(&m, out), *len);
	free(pk);
	free(pks);
	free(vk);
	free(vks);
	free(keys);
	free(ids);
	free(names);
	return out;
}

/* True if `m` is exactly what push_pack(seed, np, nv, name_len) packed. */
static bool push_matches(const Nkp__Wire__DesiredState *m, uint32_t seed, size_t np, size_t nv,
			 size_t name_len)
{
	uint8_t want[KEY_LEN];

	if (m == NULL || m->counter != seed || m->n_providers != np) {
		return false;
	}
	for (size_t p = 0; p < np; p++) {
		const Nkp__Wire__ProviderKeys *pk = m->providers[p];

		if (pk->id.len != ID_LEN || pk->id.data[0] != (uint8_t)(p + 1) ||
		    strlen(pk->name) != name_len || pk->n_versions != nv) {
			return false;
		}
		for (size_t v = 0; v < nv; v++) {
			key_bytes(seed, p, v, want);
			if (pk->versions[v]->key.len != KEY_LEN ||
			    memcmp(pk->versions[v]->key.data, want, KEY_LEN) != 0 ||
			    pk->versions[v]->version != v + 1) {
				return false;
			}
		}
	}
	return true;
}

static Nkp__Wire__DesiredState *unpack(const uint8_t *buf, size_t len)
{
	ProtobufCAllocator *a = nkpi_arena_allocator();

	cr_assert_not_null(a);
	return nkp__wire__desired_state__unpack(a, len, buf);
}

static void release(Nkp__Wire__DesiredState *m)
{
	nkp__wire__desired_state__free_unpacked(m, nkpi_arena_allocator());
}

static nkpi_arena_stats stats(void)
{
	nkpi_arena_stats s;

	nkpi_arena_stats_get(&s);
	return s;
}

static bool contains(const uint8_t *hay, size_t n, const uint8_t *needle, size_t k)
{
	for (size_t i = 0; i + k <= n; i++) {
		if (memcmp(hay + i, needle, k) == 0) {
			return true;
		}
	}
	return false;
}

Test(arena, gives_the_same_allocator_on_every_call_of_a_thread)
{
	ProtobufCAllocator *a = nkpi_arena_allocator();

	cr_assert_not_null(a);
	cr_assert_eq(nkpi_arena_allocator(), a);
	cr_assert_eq(stats().live, 0);
	cr_assert_geq(stats().cap, 60000);
}

Test(arena, round_trips_a_push_and_holds_its_keys_in_the_arena)
{
	size_t len;
	uint8_t *buf = push_pack(7, 1, 3, 12, &len);
	uint8_t key[KEY_LEN];
	uint8_t *seen;
	Nkp__Wire__DesiredState *m = unpack(buf, len);
	nkpi_arena_stats s = stats();

	cr_assert(push_matches(m, 7, 1, 3, 12));
	cr_assert_gt(s.live, 0);
	cr_assert_gt(s.used, 0);
	cr_assert_eq(s.blocks, 0, "a small push fits the main block");
	seen = malloc(s.used);
	cr_assert(nkpi_arena_peek(seen, s.used));
	key_bytes(7, 0, 2, key);
	cr_assert(contains(seen, s.used, key, KEY_LEN),
		  "decoded key bytes are in the locked block");
	release(m);
	cr_assert_eq(stats().live, 0);
	cr_assert_eq(stats().used, 0);
	free(seen);
	free(buf);
}

Test(arena, wipes_every_byte_used_after_the_last_free)
{
	size_t len;
	uint8_t *buf = push_pack(9, 2, 3, 20, &len);
	Nkp__Wire__DesiredState *m = unpack(buf, len);
	size_t used = stats().used;
	uint8_t *seen = malloc(used);

	cr_assert_not_null(m);
	release(m);
	cr_assert(nkpi_arena_peek(seen, used));
	cr_assert(sodium_is_zero(seen, used), "the used region reads back as zeros");
	free(seen);
	free(buf);
}

Test(arena, keeps_two_messages_alive_at_once)
{
	size_t la, lb;
	uint8_t *a = push_pack(1, 2, 3, 8, &la);
	uint8_t *b = push_pack(2, 3, 2, 9, &lb);
	Nkp__Wire__DesiredState *ma = unpack(a, la);
	size_t used_a = stats().used, live_a = stats().live;
	Nkp__Wire__DesiredState *mb = unpack(b, lb);
	size_t used = stats().used, live = stats().live;
	uint8_t *seen = malloc(used + used_a);

	cr_assert(push_matches(ma, 1, 2, 3, 8));
	cr_assert(push_matches(mb, 2, 3, 2, 9));
	release(ma);
	cr_assert_eq(stats().live, live - live_a);
	cr_assert_eq(stats().used, used, "nothing is reused while a message is alive");
	cr_assert(push_matches(mb, 2, 3, 2, 9), "freeing the first leaves the second intact");
	ma = unpack(a, la);
	cr_assert(push_matches(ma, 1, 2, 3, 8));
	cr_assert_eq(stats().used, used + used_a);
	release(mb);
	cr_assert(push_matches(ma, 1, 2, 3, 8));
	release(ma);
	cr_assert_eq(stats().live, 0);
	cr_assert(nkpi_arena_peek(seen, used + used_a));
	cr_assert(sodium_is_zero(seen, used + used_a));
	free(seen);
	free(a);
	free(b);
}

Test(arena, decodes_a_message_bigger_than_the_arena_and_frees_it)
{
	size_t len;
	/* About 200 KiB once decoded: overflow blocks. */
	uint8_t *buf = push_pack(3, 300, 3, 40, &len);
	Nkp__Wire__DesiredState *m = unpack(buf, len);
	nkpi_arena_stats s = stats();

	cr_assert(push_matches(m, 3, 300, 3, 40));
	cr_assert_gt(s.blocks, 0, "allocations past the main block go to overflow blocks");
	release(m);
	s = stats();
	cr_assert_eq(s.live, 0);
	cr_assert_eq(s.blocks, 0, "overflow blocks are freed with their last allocation");
	cr_assert_eq(s.used, 0);
	free(buf);
}

Test(arena, gives_a_large_field_a_block_of_its_own)
{
	size_t len;
	/* One provider name of 100 KiB: larger than the whole arena. */
	uint8_t *buf = push_pack(4, 2, 3, 100u << 10, &len);
	Nkp__Wire__DesiredState *m = unpack(buf, len);

	cr_assert(push_matches(m, 4, 2, 3, 100u << 10));
	cr_assert_eq(stats().blocks, 2);
	cr_assert_lt(stats().used, 4096, "small allocations still share the main block");
	release(m);
	cr_assert_eq(stats().blocks, 0);
	cr_assert_eq(stats().live, 0);
	free(buf);
}

/* Index of the key of version v of provider p in a packed push. */
static size_t key_at(const uint8_t *buf, size_t len, uint32_t seed, size_t p, size_t v)
{
	uint8_t key[KEY_LEN];

	key_bytes(seed, p, v, key);
	for (size_t i = 0; i + KEY_LEN <= len; i++) {
		if (memcmp(buf + i, key, KEY_LEN) == 0) {
			return i;
		}
	}
	cr_assert_fail("key not found in the packed push");
	return 0;
}

Test(arena, refuses_garbage_and_keeps_no_allocation)
{
	uint8_t junk[512];
	uint8_t seen[8192];
	uint8_t key[KEY_LEN];
	size_t len, at;
	uint8_t *buf = push_pack(5, 4, 3, 10, &len);

	memset(junk, 0x0f, sizeof(junk)); /* field 1, wire type 7: never valid */
	cr_assert_null(unpack(junk, sizeof(junk)));
	cr_assert_eq(stats().live, 0);
	for (size_t cut = 1; cut < len; cut += 7) {
		/* A cut at a field boundary leaves a shorter, valid state. */
		Nkp__Wire__DesiredState *m = unpack(buf, len - cut);

		if (m != NULL) {
			cr_assert_lt(m->n_providers, 4, "truncated by %zu", cut);
			release(m);
		}
		cr_assert_eq(stats().live, 0, "truncated by %zu", cut);
	}
	/* Broken in the last version of the last provider: the keys before
	 * it were decoded when unpack fails, and must not stay behind. */
	at = key_at(buf, len, 5, 3, 2);
	cr_assert_eq(buf[at - 2], 0x1a, "tag of VersionKey.key");
	buf[at - 2] = 0x1f; /* wire type 7 */
	cr_assert_null(unpack(buf, len));
	cr_assert_eq(stats().live, 0);
	cr_assert_eq(stats().used, 0);
	cr_assert(nkpi_arena_peek(seen, sizeof(seen)));
	key_bytes(5, 0, 0, key);
	cr_assert_not(contains(seen, sizeof(seen), key, KEY_LEN), "no decoded key stays behind");
	free(buf);
}

#define THREADS 8
#define ROUNDS 400

typedef struct {
	uint32_t seed;
	const ProtobufCAllocator *alloc;
	bool ok;
} worker;

static pthread_barrier_t all_done;

static void *work(void *arg)
{
	worker *w = arg;
	size_t la, lb;
	uint8_t *a = push_pack(w->seed, 1 + w->seed % 4, 3, 8, &la);
	uint8_t *b = push_pack(w->seed + 100, 2, 3, 8, &lb);

	w->ok = true;
	w->alloc = nkpi_arena_allocator();
	for (int i = 0; i < ROUNDS && w->ok; i++) {
		Nkp__Wire__DesiredState *ma = unpack(a, la);
		Nkp__Wire__DesiredState *mb = unpack(b, lb);

		w->ok = push_matches(ma, w->seed, 1 + w->seed % 4, 3, 8) &&
			push_matches(mb, w->seed + 100, 2, 3, 8);
		release(mb);
		release(ma);
		w->ok = w->ok && stats().live == 0 && stats().used == 0;
	}
	free(a);
	free(b);
	/* Every worker stays alive until all are done: a thread that ended
	 * could leave its thread-local arena's address to the next one. */
	pthread_barrier_wait(&all_done);
	return NULL;
}

Test(arena, serves_many_threads_each_with_its_own_arena)
{
	pthread_t t[THREADS];
	worker w[THREADS];

	cr_assert_eq(pthread_barrier_init(&all_done, NULL, THREADS), 0);
	for (int i = 0; i < THREADS; i++) {
		w[i] = (worker){.seed = (uint32_t)i + 1};
		cr_assert_eq(pthread_create(&t[i], NULL, work, &w[i]), 0);
	}
	for (int i = 0; i < THREADS; i++) {
		cr_assert_eq(pthread_join(t[i], NULL), 0);
	}
	pthread_barrier_destroy(&all_done);
	for (int i = 0; i < THREADS; i++) {
		cr_assert(w[i].ok, "thread %d decoded its own messages", i);
		for (int j = 0; j < i; j++) {
			cr_assert_neq(w[i].alloc, w[j].alloc, "one arena per thread");
		}
	}
}

/* ---- misuse aborts ----
 * Each misuse must end in abort() with the arena's own message: the body
 * runs in a forked child whose stderr is captured, and the test checks the
 * signal and the text, so that any other abort (a sanitizer report, a
 * failed assertion) is a failure, not a pass. The bodies use no cr_assert:
 * they run outside Criterion's own test process. */

#define CHILD_CHECK(x)                                                                             \
	do {                                                                                       \
		if (!(x)) {                                                                        \
			fprintf(stderr, "child check failed: %s\n", #x);                           \
			_exit(3);                                                                  \
		}                                                                                  \
	} while (0)

static void expect_misuse(void (*body)(void), const char *what)
{
	char out[8192], want[256];
	size_t len = 0;
	int fds[2], st = 0;
	ssize_t n;
	pid_t pid;

	cr_assert_eq(pipe(fds), 0);
	fflush(NULL);
	pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		close(fds[0]);
		dup2(fds[1], STDERR_FILENO);
		close(fds[1]);
		body();
		fprintf(stderr, "the misuse did not abort\n");
		_exit(0);
	}
	close(fds[1]);
	while (len < sizeof(out) - 1 && (n = read(fds[0], out + len, sizeof(out) - 1 - len)) != 0) {
		if (n < 0) {
			cr_assert_eq(errno, EINTR);
			continue;
		}
		len += (size_t)n;
	}
	out[len] = '\0';
	close(fds[0]);
	cr_assert_eq(waitpid(pid, &st, 0), pid);
	cr_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGABRT,
		  "expected SIGABRT, got status 0x%x; stderr:\n%s", st, out);
	snprintf(want, sizeof(want), "nkp: arena misuse: %s\n", what);
	cr_assert_str_eq(out, want, "stderr is not exactly the arena's message");
}

static void *free_elsewhere(void *arg)
{
	release(arg);
	return NULL;
}

static void free_on_another_thread(void)
{
	size_t len;
	uint8_t *buf = push_pack(6, 1, 3, 8, &len);
	Nkp__Wire__DesiredState *m = unpack(buf, len);
	pthread_t t;

	CHILD_CHECK(m != NULL);
	CHILD_CHECK(pthread_create(&t, NULL, free_elsewhere, m) == 0);
	pthread_join(t, NULL);
}

Test(arena, aborts_when_a_message_is_freed_on_another_thread)
{
	expect_misuse(free_on_another_thread,
		      "a message unpacked on one thread was freed on another");
}

static void *alloc_elsewhere(void *arg)
{
	const ProtobufCAllocator *a = arg;

	a->alloc(a->allocator_data, 16);
	return NULL;
}

static void use_another_threads_allocator(void)
{
	pthread_t t;

	CHILD_CHECK(pthread_create(&t, NULL, alloc_elsewhere, (void *)nkpi_arena_allocator()) == 0);
	pthread_join(t, NULL);
}

Test(arena, aborts_when_a_thread_uses_another_threads_allocator)
{
	expect_misuse(use_another_threads_allocator,
		      "a thread allocated from another thread's arena");
}

static void *exit_with_live_message(void *arg)
{
	size_t len;
	uint8_t *buf = push_pack(8, 1, 3, 8, &len);

	(void)arg;
	CHILD_CHECK(unpack(buf, len) != NULL);
	free(buf);
	return NULL;
}

static void thread_exits_with_live_message(void)
{
	pthread_t t;

	CHILD_CHECK(pthread_create(&t, NULL, exit_with_live_message, NULL) == 0);
	pthread_join(t, NULL);
}

Test(arena, aborts_when_a_thread_exits_with_a_message_not_freed)
{
	expect_misuse(thread_exits_with_live_message,
		      "a thread exited with unpacked messages not yet freed");
}

static void double_free(void)
{
	size_t la, lb;
	uint8_t *a = push_pack(10, 1, 3, 8, &la);
	uint8_t *b = push_pack(11, 1, 3, 8, &lb);
	Nkp__Wire__DesiredState *keep = unpack(b, lb);
	Nkp__Wire__DesiredState *m = unpack(a, la);
	const ProtobufCAllocator *al = nkpi_arena_allocator();

	CHILD_CHECK(keep != NULL);
	CHILD_CHECK(m != NULL);
	al->free(al->allocator_data, m->providers[0]);
	al->free(al->allocator_data, m->providers[0]);
}

Test(arena, aborts_on_a_double_free)
{
	expect_misuse(double_free, "freed a block the arena did not hand out, or freed it twice");
}

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>

/* ASan still sees a read of a decoded message after its free: the bytes
 * are poisoned again (checked directly, so the test passes whether ASan
 * is set to exit or to abort on a report). */
Test(arena, lets_asan_report_a_use_after_free)
{
	size_t len;
	uint8_t *buf = push_pack(12, 1, 3, 8, &len);
	Nkp__Wire__DesiredState *m = unpack(buf, len);
	const uint8_t *key;

	cr_assert_not_null(m);
	key = m->providers[0]->versions[0]->key.data;
	cr_assert_not(__asan_address_is_poisoned(key), "a live message is readable");
	release(m);
	cr_assert(__asan_address_is_poisoned(key), "a freed message's bytes are poisoned");
	free(buf);
}
#endif
