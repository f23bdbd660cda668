#include <criterion/criterion.h>

#include "nkpd.h"

Test(nkpd_admin, placeholder) { cr_assert(true); }
