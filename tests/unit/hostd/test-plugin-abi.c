/* libnkp-hostd.so as a hypervisor's host daemon links it: this test
 * includes <nkp/hostd.h> and nothing else of nkp, and links the shared
 * library alone (no static archive, no libnkp, no private tier), so it
 * sees what an integrator sees: the exported symbols, the log sink setter,
 * the event log named by path, a state directory used end to end without
 * a service. */
#include <criterion/criterion.h>

#include <sys/stat.h>

#include <dirent.h>
#include <dlfcn.h>
#include <elf.h>
#include <link.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <nkp/hostd.h>

/* ---- the exported symbols ---- */

/* Every symbol `path` exports, as the dynamic linker sees them (defined,
 * global or weak, in .dynsym), one per line with a newline before each:
 * "\nname1\nname2\n". Absolute symbols (a version node's) are prefixed
 * with '@'. Free the result. */
static char *exported_symbols(const char *path)
{
	FILE *f = fopen(path, "rb");
	uint8_t *buf;
	long len;
	char *out = NULL;
	size_t outlen = 0;
	FILE *o = open_memstream(&out, &outlen);
	const ElfW(Ehdr) * eh;
	const ElfW(Shdr) * sh;

	cr_assert_not_null(f, "cannot open %s", path);
	cr_assert_not_null(o);
	cr_assert_eq(fseek(f, 0, SEEK_END), 0);
	len = ftell(f);
	cr_assert_gt(len, (long)sizeof(ElfW(Ehdr)));
	rewind(f);
	buf = malloc((size_t)len);
	cr_assert_not_null(buf);
	cr_assert_eq(fread(buf, 1, (size_t)len, f), (size_t)len);
	fclose(f);
	eh = (const ElfW(Ehdr) *)buf;
	cr_assert_eq(memcmp(eh->e_ident, ELFMAG, SELFMAG), 0, "%s is not ELF", path);
	cr_assert_leq(eh->e_shoff + (uint64_t)eh->e_shnum * sizeof(ElfW(Shdr)), (uint64_t)len);
	sh = (const ElfW(Shdr) *)(buf + eh->e_shoff);
	fputc('\n', o);
	for (size_t i = 0; i < eh->e_shnum; i++) {
		const ElfW(Shdr) * str;
		const ElfW(Sym) * syms;
		size_t n;

		if (sh[i].sh_type != SHT_DYNSYM) {
			continue;
		}
		cr_assert_lt(sh[i].sh_link, eh->e_shnum);
		str = &sh[sh[i].sh_link];
		cr_assert_leq(sh[i].sh_offset + sh[i].sh_size, (uint64_t)len);
		cr_assert_leq(str->sh_offset + str->sh_size, (uint64_t)len);
		syms = (const ElfW(Sym) *)(buf + sh[i].sh_offset);
		n = sh[i].sh_size / sizeof(ElfW(Sym));
		for (size_t j = 1; j < n; j++) {
			unsigned bind = syms[j].st_info >> 4;

			if (syms[j].st_shndx == SHN_UNDEF || bind == STB_LOCAL) {
				continue;
			}
			cr_assert_lt(syms[j].st_name, str->sh_size);
			fprintf(o, "%s%s\n", syms[j].st_shndx == SHN_ABS ? "@" : "",
				(const char *)buf + str->sh_offset + syms[j].st_name);
		}
	}
	fclose(o);
	free(buf);
	return out;
}

/* The names of `list` (exported_symbols()) that do not start with
 * `prefix`, comma separated, absolute ones left out. Free the result. */
static char *names_outside(const char *list, const char *prefix)
{
	char *out = NULL;
	size_t outlen = 0;
	FILE *o = open_memstream(&out, &outlen);

	cr_assert_not_null(o);
	for (const char *p = list + 1; *p != '\0'; p = strchr(p, '\n') + 1) {
		size_t n = strcspn(p, "\n");

		if (*p != '@' && strncmp(p, prefix, strlen(prefix)) != 0) {
			fprintf(o, "%.*s, ", (int)n, p);
		}
	}
	fclose(o);
	return out;
}

static bool lists(const char *list, const char *name)
{
	char line[128];

	snprintf(line, sizeof(line), "\n%s\n", name);
	return strstr(list, line) != NULL;
}

Test(plugin_abi, the_plugin_exports_only_nkp_hostd_symbols_in_its_version)
{
	char *list = exported_symbols(NKP_HOSTD_SO);
	char *outside = names_outside(list, "nkp_hostd_");
	char node[32];

	cr_expect_str_empty(outside, "%s exports %s", NKP_HOSTD_SO, outside);
	/* One absolute symbol: the version node, which follows the header. */
	snprintf(node, sizeof(node), "@NKP_HOSTD_%u", NKP_HOSTD_ABI_VERSION);
	cr_expect(lists(list, node), "no version node %s in:%s", node + 1, list);
	cr_expect_eq(strchr(list, '@'), strrchr(list, '@'), "more than one absolute symbol:%s",
		     list);
	cr_expect(lists(list, "nkp_hostd_open"));
	cr_expect(lists(list, "nkp_hostd_set_log_sink"));
	/* Out of the ABI since version 2, and the in-tree tier never in it. */
	cr_expect_not(lists(list, "nkp_hostd_eventlog"));
	cr_expect_not(lists(list, "nkpi_hostd_eventlog"));
	free(outside);
	free(list);
}

Test(plugin_abi, libnkp_exports_only_nkp_symbols_and_no_test_hook)
{
	char *list = exported_symbols(NKP_SO);
	char *outside = names_outside(list, "nkp_");

	cr_expect_str_empty(outside, "%s exports %s", NKP_SO, outside);
	cr_expect(lists(list, "nkp_log_set_sink"));
	cr_expect_not(lists(list, "nkp_file_fail_next_writes"));
	cr_expect_not(lists(list, "nkpi_file_fail_next_writes"));
	cr_expect_null(strstr(list, "\nnkp_hostd_"));
	free(outside);
	free(list);
}

Test(plugin_abi, this_process_holds_no_libnkp_symbol_but_the_plugins)
{
	/* The test links libnkp-hostd.so alone: the libnkp inside it stays
	 * hidden, and so do the test hooks and the in-tree API. */
	cr_expect_not_null(dlsym(RTLD_DEFAULT, "nkp_hostd_open"));
	cr_expect_null(dlsym(RTLD_DEFAULT, "nkp_log_set_sink"));
	cr_expect_null(dlsym(RTLD_DEFAULT, "nkp_eventlog_open"));
	cr_expect_null(dlsym(RTLD_DEFAULT, "nkp_hostd_eventlog"));
	cr_expect_null(dlsym(RTLD_DEFAULT, "nkpi_hostd_eventlog"));
	cr_expect_null(dlsym(RTLD_DEFAULT, "nkp_file_fail_next_writes"));
	cr_expect_null(dlsym(RTLD_DEFAULT, "nkpi_file_fail_next_writes"));
}

/* ---- a state directory used end to end ---- */

typedef struct sink_log {
	unsigned locked;    /* NKP-HOSTD-LOCKED */
	unsigned vm_locked; /* the vm.locked event */
	unsigned bad_input; /* the input.bad event */
	char last_locked[1024];
} sink_log;

static void sink(nkp_log_level level, const char *msgid, const char *msg, void *arg)
{
	sink_log *l = arg;

	(void)level;
	if (strcmp(msgid, "NKP-HOSTD-LOCKED") == 0) {
		l->locked++;
		snprintf(l->last_locked, sizeof(l->last_locked), "%s", msg);
	} else if (strcmp(msgid, "vm.locked") == 0) {
		l->vm_locked++;
	} else if (strcmp(msgid, "input.bad") == 0) {
		l->bad_input++;
	}
}

static char *tmp;

static void remove_tree(const char *path)
{
	DIR *d = opendir(path);
	struct dirent *e;

	while (d != NULL && (e = readdir(d)) != NULL) {
		char sub[1024];
		struct stat st;

		if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) {
			continue;
		}
		snprintf(sub, sizeof(sub), "%s/%s", path, e->d_name);
		if (lstat(sub, &st) == 0 && S_ISDIR(st.st_mode)) {
			remove_tree(sub);
		} else {
			unlink(sub);
		}
	}
	if (d != NULL) {
		closedir(d);
	}
	rmdir(path);
}

static void setup(void)
{
	char tmpl[] = "/tmp/nkp-test-plugin-abi-XXXXXX";

	cr_assert_not_null(mkdtemp(tmpl));
	tmp = strdup(tmpl);
	cr_assert_not_null(tmp);
}

static void teardown(void)
{
	nkp_hostd_set_log_sink(NULL, NULL);
	remove_tree(tmp);
	free(tmp);
}

/* Lines of `path` that hold `what`; -1 if there is no such file. */
static int lines_with(const char *path, const char *what)
{
	char line[2048];
	int n = 0;
	FILE *f = fopen(path, "r");

	if (f == NULL) {
		return -1;
	}
	while (fgets(line, sizeof(line), f) != NULL) {
		n += strstr(line, what) != NULL;
	}
	fclose(f);
	return n;
}

/* The keysafe of tests/vectors/keysafe-v1.txt: provider
 * 000102...0f, version 1, which this host was never given. */
static uint8_t *vector_keysafe(size_t *len)
{
	FILE *f = fopen(NKP_VECTORS_DIR "/keysafe-v1.bin", "rb");
	uint8_t *buf = malloc(4096);

	cr_assert_not_null(f);
	cr_assert_not_null(buf);
	*len = fread(buf, 1, 4096, f);
	cr_assert_gt(*len, 0);
	cr_assert(feof(f));
	fclose(f);
	return buf;
}

TestSuite(plugin_host, .init = setup, .fini = teardown);

Test(plugin_host, a_host_without_a_service_logs_records_refuses_and_reports)
{
	static const uint8_t want_provider[NKP_ID_BYTES] = {0, 1, 2,  3,  4,  5,  6,  7,
							    8, 9, 10, 11, 12, 13, 14, 15};
	static const nkp_vm_identity vm = {.vm_uuid = "0b5e6f4a-1c2d-4e3f-8a9b-0c1d2e3f4a5b",
					   .vm_name = "abi-vm"};
	char state[512], events[512], dflt[600];
	nkp_hostd_config cfg = {.state_dir = state, .host_name = "abi-host", .events_path = events};
	uint8_t service[NKP_HOSTD_PUBKEY_BYTES], pub[NKP_HOSTD_PUBKEY_BYTES], zero[32] = {0};
	uint8_t dek[NKP_KEY_BYTES], untouched[NKP_KEY_BYTES], junk[48] = {0};
	uint8_t *ks, *out = NULL, *reply = NULL;
	size_t kslen, outlen = 0, replylen = 0;
	nkp_hostd *h = NULL, *h2 = NULL;
	nkp_hostd_status *st = NULL;
	nkp_hostd_vm_check chk;
	sink_log log = {0};
	char pid[32];

	snprintf(state, sizeof(state), "%s/state", tmp);
	snprintf(events, sizeof(events), "%s/host-events.jsonl", tmp);
	snprintf(dflt, sizeof(dflt), "%s/events.jsonl", state);
	nkp_hostd_set_log_sink(sink, &log);

	/* Enrol under a made-up service key, then open. */
	memset(service, 0x5a, sizeof(service));
	cr_assert_eq(nkp_hostd_init(&cfg, service, pub), NKP_OK);
	cr_assert_neq(memcmp(pub, zero, sizeof(pub)), 0);
	cr_assert_eq(nkp_hostd_open(&cfg, &h), NKP_OK);
	cr_assert_eq(memcmp(nkp_hostd_public_key(h), pub, sizeof(pub)), 0);
	cr_assert_eq(memcmp(nkp_hostd_service_key(h), service, sizeof(service)), 0);

	/* One handle per directory: a second open and an enrolment are
	 * refused, and the log sink hears who holds it. */
	cr_assert_eq(nkp_hostd_open(&cfg, &h2), NKP_ERR_STATE);
	cr_assert_null(h2);
	cr_assert_eq(nkp_hostd_init(&cfg, service, pub), NKP_ERR_STATE);
	cr_assert_eq(log.locked, 2);
	snprintf(pid, sizeof(pid), "pid %ld ", (long)getpid());
	cr_assert_not_null(strstr(log.last_locked, pid), "%s", log.last_locked);

	/* No provider yet: no VM key can be made, and a keysafe made
	 * elsewhere is locked here; each refusal is an event, in the file
	 * named and through the sink. */
	cr_assert_eq(nkp_hostd_vm_create(h, NULL, &vm, &out, &outlen), NKP_ERR_NOT_FOUND);
	cr_assert_null(out);
	ks = vector_keysafe(&kslen);
	cr_assert_eq(nkp_hostd_vm_check_keysafe(h, ks, kslen, &chk), NKP_OK);
	cr_assert(chk.locked);
	cr_assert_not(chk.provider_known);
	cr_assert_eq(memcmp(chk.provider_id, want_provider, NKP_ID_BYTES), 0);
	cr_assert_eq(chk.version, 1);
	memset(dek, 0xa5, sizeof(dek));
	memcpy(untouched, dek, sizeof(dek));
	cr_assert_eq(nkp_hostd_vm_unwrap(h, ks, kslen, "vm-home", dek), NKP_ERR_KEY_MISSING);
	cr_assert_eq(memcmp(dek, untouched, sizeof(dek)), 0, "a failed unwrap wrote the DEK");
	cr_assert_eq(nkp_hostd_vm_rewrap(h, ks, kslen, &out, &outlen), NKP_ERR_KEY_MISSING);
	cr_assert_null(out);
	cr_assert_eq(nkp_hostd_vm_unwrap(h, ks, kslen / 2, "vm-home", dek), NKP_ERR_PARSE);
	cr_assert_geq(log.vm_locked, 2);
	cr_assert_eq(lines_with(events, "\"kind\":\"vm.locked\""), (int)log.vm_locked);

	/* A frame from nobody: no reply, counted, one summary event. */
	cr_assert_neq(nkp_hostd_handle_frame(h, junk, sizeof(junk), &reply, &replylen), NKP_OK);
	cr_assert_null(reply);
	cr_assert_eq(log.bad_input, 1);
	cr_assert_eq(lines_with(events, "\"kind\":\"input.bad\""), 1);

	cr_assert_eq(nkp_hostd_status_get(h, &st), NKP_OK);
	cr_assert_eq(st->generation, 0);
	cr_assert_eq(st->n_providers, 0);
	cr_assert_str_eq(st->host_name, "abi-host");
	cr_assert_eq(st->dropped_frames, 1);
	nkp_hostd_status_free(st);

	/* The service side's listener, on loopback. */
	cr_assert_eq(nkp_hostd_set_listen_limits(h, 4, 2, 1000), NKP_OK);
	cr_assert_null(nkp_hostd_listen_url(h));
	cr_assert_eq(nkp_hostd_listen(h, "tcp://127.0.0.1:0"), NKP_OK);
	cr_assert_not_null(nkp_hostd_listen_url(h));
	cr_assert_eq(strncmp(nkp_hostd_listen_url(h), "tcp://127.0.0.1:", 16), 0);
	cr_assert_neq(strcmp(nkp_hostd_listen_url(h), "tcp://127.0.0.1:0"), 0);
	cr_assert_eq(nkp_hostd_set_listen_limits(h, 0, 0, 0), NKP_ERR_STATE);

	cr_assert_eq(nkp_hostd_flush(h), NKP_OK);
	nkp_hostd_close(h);
	cr_assert_eq(lines_with(dflt, "kind"), -1, "STATE_DIR/events.jsonl written too");

	/* Closed: the directory opens again. Silenced: nothing more is
	 * heard. */
	nkp_hostd_set_log_sink(NULL, NULL);
	cr_assert_eq(nkp_hostd_open(&cfg, &h), NKP_OK);
	cr_assert_eq(nkp_hostd_open(&cfg, &h2), NKP_ERR_STATE);
	cr_assert_eq(log.locked, 2);
	nkp_hostd_close(h);

	nkp_hostd_close(NULL);
	nkp_hostd_buf_free(NULL, 0);
	cr_assert_not_null(nkp_hostd_strerror(NKP_ERR_KEY_MISSING));
	free(ks);
}
