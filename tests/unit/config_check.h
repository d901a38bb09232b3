/*
 * What the unit tests of fidbusd.conf's sections (test_config.c,
 * test_config_remote.c) share: a text that must load, and a text that must
 * be refused with FILE:LINE and its reason. Header only: each test binary
 * is one file.
 */
#ifndef FB_UNIT_CONFIG_CHECK_H
#define FB_UNIT_CONFIG_CHECK_H

#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "config/config.h"

/* A text the loader must refuse, the line its error must name, and a piece
 * of the reason (load_refused). */
struct bad_config {
    const char *text;
    int line;
    const char *why;
};

/* The error text of the last load. */
static char err[1024];

static inline struct fb_config *load_ok(const char *text)
{
    struct fb_config *c = NULL;
    err[0] = '\0';
    int rc = fb_config_load_string(text, "t.conf", &c, err, sizeof err);
    ck_assert_msg(rc == 0, "unexpected error %d: %s", rc, err);
    ck_assert_ptr_nonnull(c);
    return c;
}

/* text (read as t.conf) is refused: -EINVAL, no config, and an error that
 * starts "t.conf:LINE: " and says why. i numbers the case in messages. */
static inline void load_refused(int i, const char *text, int line, const char *why)
{
    struct fb_config *c = (struct fb_config *)1;
    int rc = fb_config_load_string(text, "t.conf", &c, err, sizeof err);
    ck_assert_msg(rc == -EINVAL, "case %d: rc %d (%s)", i, rc, err);
    ck_assert_ptr_null(c);
    char want[32];
    snprintf(want, sizeof want, "t.conf:%d: ", line);
    ck_assert_msg(strncmp(err, want, strlen(want)) == 0,
                  "case %d: '%s' does not start with '%s'", i, err, want);
    ck_assert_msg(strstr(err, why), "case %d: '%s' lacks '%s'", i, err, why);
}

#endif
