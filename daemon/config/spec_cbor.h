/*
 * Route specs and plugin sections as CBOR maps: the shape route.add,
 * route.apply and plugin.load take over the control socket
 * (proto/control.md) and the shape state.cbor stores them in, so both read them with one
 * decoder and the state file holds exactly what an operator could send.
 *
 * A route map: {name, event, tags (map text => text), to (array of text
 * "ns.name[@MAJOR.MINOR.PATCH][:WEIGHT]"), mode ("all" | "split"),
 * split_by, signature (64 hex digits), priority (int)}; name, event and to
 * are required, split_by and signature may be null or absent. A plugin map:
 * {name, path, config (map text => text; integers and booleans are taken
 * as their decimal / true|false text)}.
 *
 * The decoders accept exactly what the config file accepts, value by
 * value, so config.export can always write the running set back as a
 * config file that reads back the same: a value the config parser could
 * not read (a control character, leading or trailing blanks, a ';' after a
 * blank, a ',' or '=' inside a tag, a "key = value" line past the parser's
 * 198 bytes, an unknown key in a route map, a wrong type) is refused with
 * FIDBUS_INVALID and a message naming the route or plugin and the key.
 *
 * Routes are in spec_cbor.c, plugins in plugin_cbor.c, and the CBOR
 * helpers both use in cbor_util.c.
 */
#ifndef FB_SPEC_CBOR_H
#define FB_SPEC_CBOR_H

#include <stddef.h>

#include <cbor.h>

#include "config/config.h"
#include "config/route_spec.h"

/*
 * Decodes one route map into *out (zeroed first; owned strings, release
 * with fb_route_spec_clear) and validates it with fb_route_spec_validate.
 * Returns 0, FIDBUS_INVALID with err set ("route NAME: ..." or "route:
 * ..." when the name itself is missing or bad), or -ENOMEM.
 */
int fb_route_from_cbor(const cbor_item_t *map, struct fb_route_spec *out, char *err,
                       size_t errlen);

/* The map for spec, in the shape above (every key present; null for an
 * absent split_by / signature). NULL on allocation failure. */
cbor_item_t *fb_route_to_cbor(const struct fb_route_spec *spec);

/*
 * Decodes one plugin map into *out (zeroed first; owned; release with
 * fb_plugin_conf_clear). name may be absent (out->name NULL: the caller
 * picks one) but when present must be a valid instance name; path is
 * required and must be absolute or is taken as given (the caller resolves
 * it). out->keys holds "path" first, then the config map's entries, as
 * config.c fills a [plugin NAME] section; "path" inside config is refused.
 * Returns 0, FIDBUS_INVALID with err set, or -ENOMEM.
 */
int fb_plugin_conf_from_cbor(const cbor_item_t *map, struct fb_plugin_conf *out,
                             char *err, size_t errlen);

/* {name, path, config}: config holds every key but "path". NULL on
 * allocation failure. */
cbor_item_t *fb_plugin_conf_to_cbor(const struct fb_plugin_conf *pc);

/* Deep copy (dst zeroed first); 0 or -ENOMEM. And the matching release,
 * which leaves pc zeroed. */
int fb_plugin_conf_copy(struct fb_plugin_conf *dst, const struct fb_plugin_conf *src);
void fb_plugin_conf_clear(struct fb_plugin_conf *pc);

#endif
