/* Opening and closing a service on its state directory: paths, the
 * sealing key, the state store (the sealed file), the identity and the
 * event log (not the state itself: see nkpd_state_load). Messages for people go to stderr. */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "core/core.h"
#include "internal.h"

static int path_in(char *out, size_t size, const char *dir, const char *name)
{
	return (size_t)snprintf(out, size, "%s/%s", dir, name) >= size ? -1 : 0;
}

nkp_err nkpd_svc_open(nkpd_svc *s, const char *dir, bool create)
{
	const nkpd_keys_at_rest none = {0};

	return nkpd_svc_open_at(s, dir, &none, create);
}

nkp_err nkpd_svc_open_at(nkpd_svc *s, const char *dir, const nkpd_keys_at_rest *at, bool create)
{
	const nkpi_atrest_opts o = {.dir = dir, .seal_key_path = at->seal_key_path, .tpm = at->tpm};
	nkp_err err;

	memset(s, 0, sizeof(*s));
	pthread_mutex_init(&s->lock, NULL);
	nkpi_mono_cond_init(&s->round_cond);
	nkpd_util_copy_str(s->dir, sizeof(s->dir), dir);
	if (path_in(s->state_path, sizeof(s->state_path), dir, "state.nkp") != 0 ||
	    path_in(s->events_path, sizeof(s->events_path), dir, "events.jsonl") != 0) {
		return NKP_ERR_INVALID;
	}
	s->heartbeat_ms = 5000;
	s->attest_interval_ms = NKPD_ATTEST_INTERVAL_MS;
	s->attest_pcrs = NKPD_ATTEST_PCRS;
	s->backup_params = nkp_backup_params_moderate();
	s->started_unix = nkpi_now();
	s->keys = nkpd_keysource_native();
	/* nkpi_atrest_* say why on failure (NKP-SEAL-KEY). */
	err = create ? nkpi_atrest_init(&o, &s->seal_key, &s->at_rest)
		     : nkpi_atrest_open(&o, &s->seal_key, &s->at_rest);
	if (err != NKP_OK) {
		return err;
	}
	err = nkpd_store_file_new(s->state_path, s->seal_key, &s->store);
	if (err != NKP_OK) {
		fprintf(stderr, "nkpd: cannot set up the state store %s: %s\n", s->state_path,
			nkp_strerror(err));
		return err;
	}
	err = nkpd_identity_load(dir, s->seal_key, create, s->at_rest == NKPI_ATREST_FILE,
				 &s->identity);
	if (err != NKP_OK) {
		return err;
	}
	err = nkp_eventlog_open(s->events_path, &s->events);
	if (err != NKP_OK) {
		fprintf(stderr, "nkpd: cannot open the event log %s: %s\n", s->events_path,
			nkp_strerror(err));
	}
	return err;
}

nkp_err nkpd_svc_lock_dir(const char *dir, nkp_file_lock **out)
{
	char path[PATH_MAX];
	nkp_err err;

	if (path_in(path, sizeof(path), dir, "nkpd.lock") != 0) {
		fprintf(stderr, "nkpd: state directory path too long: %s\n", dir);
		return NKP_ERR_INVALID;
	}
	err = nkp_file_lock_take(path, 0, out);
	if (err == NKP_ERR_STATE) {
		fprintf(stderr,
			"nkpd: %s is in use by another nkpd (pid %ld holds %s); one nkpd "
			"per state directory: stop it first\n",
			dir, nkp_file_lock_holder(path), path);
	} else if (err == NKP_ERR_NOT_FOUND) {
		fprintf(stderr,
			"nkpd: no state directory %s; run `nkpd init --state-dir %s` first\n", dir,
			dir);
	} else if (err != NKP_OK) {
		fprintf(stderr, "nkpd: cannot take the lock %s: %s\n", path, nkp_strerror(err));
	}
	return err;
}

void nkpd_svc_close(nkpd_svc *s)
{
	/* Snapshots left by nkpd_sync_follow() without an engine (the engine
	 * releases its own when it stops). */
	nkpd_desired_release(s->snap);
	s->snap = NULL;
	nkpd_desired_release(s->snap_trusted);
	s->snap_trusted = NULL;
	nkpd_model_free(s);
	if (s->store.close != NULL) {
		s->store.close(s->store.ctx);
	}
	nkp_eventlog_close(s->events);
	nkp_identity_free(s->identity);
	nkpd_sealpol_release(s->sealpol);
	s->sealpol = NULL;
	nkp_key_free(s->policy_key);
	nkp_key_free(s->seal_key);
	pthread_cond_destroy(&s->round_cond);
	pthread_mutex_destroy(&s->lock);
}
