/*
 * libFuzzer target for the config parser: the input is a config file's
 * text, parsed and validated as `fidbusd -c` would (libinih plus every
 * value rule of config.c). Whatever loads must load again from the same
 * text to the same hash, and free cleanly.
 *
 * A config may name a TCP key file; the loader then reads it. Inputs that
 * point at real files read them (read-only) and fail or succeed like the
 * daemon would, which is what we want to exercise.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "config/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 64 * 1024)
        return 0; /* long inputs only slow the fuzzer: lines are 200 bytes */
    char *text = malloc(size + 1);
    if (!text)
        return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    char err[512];
    struct fb_config *c = NULL;
    if (fb_config_load_string(text, "fuzz.conf", &c, err, sizeof err) == 0) {
        struct fb_config *again = NULL;
        if (fb_config_load_string(text, "fuzz.conf", &again, err, sizeof err) != 0)
            abort(); /* deterministic: the same text loads twice */
        if (strcmp(c->hash, again->hash) != 0 || c->nroutes != again->nroutes ||
            c->nplugins != again->nplugins)
            abort();
        fb_config_free(again);
    } else if (!memchr(err, '\0', sizeof err) || err[0] == '\0') {
        abort(); /* a refusal always says why */
    }
    fb_config_free(c);
    free(text);
    return 0;
}
