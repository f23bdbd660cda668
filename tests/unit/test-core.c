#include <criterion/criterion.h>

#include <nkp/nkp.h>

TestSuite(core, .init = NULL);
Test(core, placeholder) { cr_assert(true); }
