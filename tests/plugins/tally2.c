/* Test plugin: test.tally@2.0.0, the counter of tally_impl.h (zero-loss
 * soak, next to tally1.so). */
#define TALLY_VERSION "2.0.0"
#define TALLY_PLUGIN "tally2"
#include "tally_impl.h"
