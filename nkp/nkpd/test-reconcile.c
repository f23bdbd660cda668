#include "test-util.h"

Test(nkpd_reconcile, placeholder)
{
	cr_assert(true);
}
