/* Test plugin: test.tally@1.0.0, the counter of tally_impl.h (zero-loss
 * soak, next to tally2.so). */
#define TALLY_VERSION "1.0.0"
#define TALLY_PLUGIN "tally1"
#include "tally_impl.h"
