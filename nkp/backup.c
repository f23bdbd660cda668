#include <nkp/nkp.h>
