/*
 * Error messages for the caller's buffer: most daemon functions that can
 * fail take (char *err, size_t errlen) and say there what went wrong, in
 * one line, for the log or a control client's ERROR.
 */
#ifndef FB_ERR_H
#define FB_ERR_H

#include <stddef.h>

/* printf into err; an err that is NULL or errlen 0 gets nothing (so a
 * caller that does not want the text passes NULL, 0). Truncates. */
void fb_set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
