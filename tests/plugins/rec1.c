/* Test plugin: test.rec@1.0.0, the recorder of rec_impl.h (canary tests
 * next to rec2.so). */
#define REC_VERSION "1.0.0"
#define REC_PLUGIN "rec1"
#include "rec_impl.h"
