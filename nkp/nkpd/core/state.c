/* The service model, its transactions and its persistence through the
 * store port (see store/store.h); subscribers hear of every committed
 * change. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "core/core.h"
#include "internal.h"
#include "session.h"

/* ---- persistence ---- */

nkp_err nkpd_state_save(nkpd_svc *s)
{
	uint64_t rev = 0;
	nkp_err err = s->store.commit(s->store.ctx, s, s->revision, &rev);

	if (err == NKP_OK) {
		s->revision = rev;
	}
	return err;
}

static void forget_model(nkpd_svc *s)
{
	nkpd_model_free(s);
	s->generation = 0;
	s->epoch = 0;
	s->stamp_floor_ns = 0;
}

nkp_err nkpd_state_load(nkpd_svc *s)
{
	uint64_t rev = 0;
	nkp_err err = s->store.load(s->store.ctx, s, &rev);

	if (err != NKP_OK) {
		return err;
	}
	s->revision = rev;
	err = nkpd_sealpol_refresh(s);
	if (err != NKP_OK) {
		forget_model(s);
		return err;
	}
	/* Every timestamp an earlier run made is below its floor. */
	nkpi_session_raise_timestamps(s->stamp_floor_ns);
	if (s->epoch == 0) {
		/* A state written before epochs: it gets one now, written at
		 * once, so a restart cannot pick another (its hosts would all
		 * be in conflict). Hosts hold no pair from before either. */
		s->epoch = nkpd_util_new_epoch();
		err = nkpd_state_save(s);
		if (err == NKP_OK) {
			nkp_log(NKP_LOG_NOTICE, "NKPD-EPOCH", "state %s had no epoch: given one",
				s->state_path);
		} else {
			forget_model(s);
		}
	}
	return err;
}

void nkpd_state_format_message(const nkpd_svc *s, char *buf, size_t size)
{
	s->store.explain(s->store.ctx, buf, size);
}

/* An hour of timestamps: the state is written about every half hour. */
#define STAMP_RESERVE_NS (3600ull * 1000000000ull)
/* After a failed write of the floor, the next try. */
#define STAMP_RETRY_MS 5000u

/* Hosts take a handshake only with a timestamp newer than the last they
 * took (docs/PROTOCOL.md). Timestamps rise within a process whatever the
 * wall clock does; across restarts they rise because every one is below
 * the floor in the state, which the next run starts above. */
nkp_err nkpd_state_stamp_reserve(nkpd_svc *s)
{
	uint64_t high, wall = nkpi_wall_ns();
	nkp_err err;

	high = nkpi_session_last_timestamp();
	high = high > wall ? high : wall;
	if (s->stamp_floor_ns > high && s->stamp_floor_ns - high >= STAMP_RESERVE_NS / 2) {
		return NKP_OK;
	}
	if (s->stamp_retry_ms != 0 && nkpi_mono_ms() < s->stamp_retry_ms) {
		return NKP_ERR_IO; /* a failing disk is not written 20 times a second */
	}
	uint64_t before = s->stamp_floor_ns;

	s->stamp_floor_ns = high + STAMP_RESERVE_NS;
	err = nkpd_state_save(s);
	if (err != NKP_OK) {
		s->stamp_floor_ns = before;
		if (s->stamp_retry_ms == 0) {
			nkp_log(NKP_LOG_ERR, "NKPD-STAMP-FLOOR",
				"cannot write %s to keep handshake timestamps rising across "
				"restarts: %s; retrying every %u s",
				s->state_path, nkp_strerror(err), STAMP_RETRY_MS / 1000u);
		}
	}
	s->stamp_retry_ms = err != NKP_OK ? nkpi_mono_ms() + STAMP_RETRY_MS : 0;
	return err;
}

/* ---- transactions ---- */

static void free_provider_array(nkpd_provider **a, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		nkpd_model_provider_free(a[i]);
	}
	free(a);
}

nkp_err nkpd_txn_begin(nkpd_svc *s, nkpd_txn *t)
{
	nkpd_provider **copy = calloc(s->n_providers + 1, sizeof(*copy));
	nkp_err err = NKP_OK;
	size_t i;

	if (copy == NULL) {
		return NKP_ERR_NOMEM;
	}
	for (i = 0; i < s->n_providers && err == NKP_OK; i++) {
		err = nkpd_model_provider_dup(s->providers[i], &copy[i]);
	}
	if (err != NKP_OK) {
		free_provider_array(copy, i);
		return err;
	}
	t->generation = s->generation;
	t->n_providers = s->n_providers;
	t->providers = copy;
	return NKP_OK;
}

void nkpd_txn_rollback(nkpd_svc *s, nkpd_txn *t)
{
	free_provider_array(s->providers, s->n_providers);
	s->providers = t->providers;
	s->n_providers = t->n_providers;
	s->generation = t->generation;
	t->providers = NULL;
	t->n_providers = 0;
}

/* ---- subscribers ---- */

void nkpd_state_subscribe(nkpd_svc *s, nkpd_commit_fn fn, void *arg)
{
	for (size_t i = 0; i < NKPD_MAX_SUBSCRIBERS; i++) {
		if (s->subs[i].fn == NULL) {
			s->subs[i] = (nkpd_subscriber){.fn = fn, .arg = arg};
			return;
		}
	}
	nkp_log(NKP_LOG_ERR, "NKPD-BUG", "too many commit subscribers");
	abort();
}

void nkpd_state_unsubscribe(nkpd_svc *s, nkpd_commit_fn fn, void *arg)
{
	for (size_t i = 0; i < NKPD_MAX_SUBSCRIBERS; i++) {
		if (s->subs[i].fn == fn && s->subs[i].arg == arg) {
			s->subs[i] = (nkpd_subscriber){0};
		}
	}
}

/* Every subscriber hears of the change; the first error is returned. */
static nkp_err notify(nkpd_svc *s)
{
	nkp_err first = NKP_OK;

	for (size_t i = 0; i < NKPD_MAX_SUBSCRIBERS; i++) {
		if (s->subs[i].fn != NULL) {
			nkp_err err = s->subs[i].fn(s, s->subs[i].arg);

			first = first == NKP_OK ? err : first;
		}
	}
	return first;
}

nkp_err nkpd_txn_commit(nkpd_svc *s, nkpd_txn *t)
{
	nkp_err err;

	if (s->generation + 1 >= NKPI_GENERATION_MAX) {
		nkp_log(NKP_LOG_ERR, "NKPD-GENERATION-EXHAUSTED",
			"generation %llu is at the limit (2^62): no change can be committed; "
			"initialise a new service and re-pin its hosts (docs/OPERATIONS.md)",
			(unsigned long long)s->generation);
		nkpd_txn_rollback(s, t);
		return NKP_ERR_STATE;
	}
	s->generation++;
	err = nkpd_state_save(s);
	if (err != NKP_OK) {
		nkp_event(s->events, NKP_EV_STATE_WRITE_FAILED, NULL, NULL,
			  "could not write %s: %s; the change was not made", s->state_path,
			  nkp_strerror(err));
		nkpd_txn_rollback(s, t);
		return err;
	}
	free_provider_array(t->providers, t->n_providers);
	t->providers = NULL;
	t->n_providers = 0;
	return notify(s);
}
