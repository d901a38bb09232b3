/*
 * libFuzzer target for the state file loader: the input is the bytes of a
 * state.cbor, decoded by fb_state_decode as at start-up. Whatever decodes
 * is encoded again and must decode to the same encoding (the file the
 * daemon writes next is the one it would read back).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "config/state.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct fb_state st;
    char err[512];
    int rc = fb_state_decode(data, size, &st, err, sizeof err);
    if (rc == 0) {
        uint8_t *enc = NULL, *enc2 = NULL;
        size_t len = 0, len2 = 0;
        if (fb_state_encode(&st, &enc, &len) != 0)
            abort();
        struct fb_state again;
        if (fb_state_decode(enc, len, &again, err, sizeof err) != 0)
            abort(); /* what we write we must read */
        if (fb_state_encode(&again, &enc2, &len2) != 0)
            abort();
        if (len != len2 || memcmp(enc, enc2, len) != 0)
            abort();
        fb_state_clear(&again);
        free(enc);
        free(enc2);
    } else if (rc > 0 && err[0] == '\0') {
        abort(); /* a refusal always says why */
    }
    fb_state_clear(&st);
    return 0;
}
