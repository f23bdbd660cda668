/* fuzz-eventlog: an event log file as nkpctl's `events` and a restarting
 * daemon read it: nkp_eventlog_read() from the start and from a later
 * sequence number, then nkp_eventlog_open() on it (the tail scan that
 * finds the last sequence number) and one append. */
#include "fuzz-util.h"

#include <fcntl.h>

static char *dir;
static char path[4096];

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void cleanup_dir(void)
{
	fz_rmrf(dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	fz_init();
	dir = fz_tmpdir();
	snprintf(path, sizeof(path), "%s/events.jsonl", dir);
	atexit(cleanup_dir);
	return 0;
}

static void count(uint64_t seq, const char *json, void *arg)
{
	size_t *n = arg;

	*n += (size_t)seq + strlen(json);
}

static void write_file(const uint8_t *data, size_t size)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);

	if (fd < 0) {
		abort();
	}
	while (size > 0) {
		ssize_t n = write(fd, data, size);

		if (n <= 0) {
			abort();
		}
		data += n;
		size -= (size_t)n;
	}
	close(fd);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	nkp_eventlog *log = NULL;
	uint64_t last;
	size_t n = 0;

	write_file(data, size);
	last = nkp_eventlog_read(path, 0, count, &n);
	(void)nkp_eventlog_read(path, last / 2, count, &n);
	if (nkp_eventlog_open(path, &log) == NKP_OK) {
		(void)nkp_event(log, NKP_EV_BAD_INPUT, "p", "h", "fuzz %zu", size);
		nkp_eventlog_close(log);
	}
	return 0;
}
