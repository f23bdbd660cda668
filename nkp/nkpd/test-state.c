#include <criterion/criterion.h>

#include "nkpd.h"

Test(nkpd_state, placeholder) { cr_assert(true); }
