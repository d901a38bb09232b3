/* Test plugin: test.rec@2.0.0, the recorder of rec_impl.h (canary tests
 * next to rec1.so). */
#define REC_VERSION "2.0.0"
#define REC_PLUGIN "rec2"
#include "rec_impl.h"
