/* Output of the known-answer tests for the regeneration tool.
 *
 * NKP_VECTORS_OUT=DIR (set by tests/vectors/regen, never needed otherwise):
 * the tests also write the bytes they computed into DIR, and print the
 * derived values of the .txt files on stderr, for the tool to copy into
 * tests/vectors. A test always compares against the checked-in vectors,
 * whatever the environment: it never writes into tests/vectors and never
 * passes against bytes it wrote itself. Needs NKP_VECTORS_DIR. */
#ifndef NKP_TEST_VECOUT_H
#define NKP_TEST_VECOUT_H

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>

#include <criterion/criterion.h>

static inline const char *vec_out_dir(void)
{
	const char *v = getenv("NKP_VECTORS_OUT");

	return v != NULL && v[0] != '\0' ? v : NULL;
}

/* Writes `name` into NKP_VECTORS_OUT when it is set (never tests/vectors). */
static inline void vec_emit(const char *name, const void *buf, size_t len)
{
	char out[1024], real_out[PATH_MAX], real_src[PATH_MAX];
	const char *dir = vec_out_dir();
	FILE *f;

	if (dir == NULL) {
		return;
	}
	cr_assert_not_null(realpath(dir, real_out), "NKP_VECTORS_OUT=%s does not exist", dir);
	cr_assert_not_null(realpath(NKP_VECTORS_DIR, real_src));
	cr_assert_str_neq(real_out, real_src,
			  "NKP_VECTORS_OUT must not be tests/vectors: use tests/vectors/regen");
	snprintf(out, sizeof(out), "%s/%s", dir, name);
	f = fopen(out, "wb");
	cr_assert_not_null(f, "%s", out);
	cr_assert_eq(fwrite(buf, 1, len, f), len);
	cr_assert_eq(fclose(f), 0);
}

#endif
