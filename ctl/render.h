/*
 * ctl/render.h -- how fidbusctl shows a control REPLY's result.
 *
 * A result is one CBOR map with text keys (proto/control.md). It is first
 * turned into JSON -- the direct rendering `--json` prints -- and the
 * human tables are drawn from that JSON, so both outputs always agree.
 *
 * CBOR -> JSON: maps -> objects (a key that is not text becomes its JSON
 * text, e.g. 7 -> "7"), arrays -> arrays, text -> strings, integers ->
 * integers (beyond int64: a real), floats -> reals (NaN and infinities ->
 * null), true/false/null/undefined -> true/false/null/null, byte strings ->
 * lowercase hex text, tags -> their content.
 */
#ifndef FBCTL_RENDER_H
#define FBCTL_RENDER_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <jansson.h>

/*
 * Parses `len` bytes (exactly one CBOR item; len 0 means "no result" and
 * gives an empty object) into a new JSON value in *out. Returns 0, or -1
 * with a one-line reason in why.
 */
int fbctl_result_json(const uint8_t *p, size_t len, json_t **out, char *why,
                      size_t why_len);

/*
 * Writes the human-readable form of `result` for the control command
 * `command` ("status", "plugin.list", ...): a table where the command has
 * one, otherwise "key: value" lines ("ok" for an empty result). Where a
 * result lists bare funcIDs (route.test's targets, a plugin's functions)
 * each is shown as "CANONICAL (ID)" when names ({funcID: canonical},
 * borrowed, may be NULL) has it, bare otherwise; stats functions are
 * named from the reply's own `canonical`. --json output is never named.
 */
void fbctl_render_table(FILE *out, const char *command, const json_t *result,
                        const json_t *names);

#endif
