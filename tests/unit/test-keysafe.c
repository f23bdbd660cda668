#include <criterion/criterion.h>

#include <nkp/nkp.h>

Test(keysafe, placeholder) { cr_assert(true); }
