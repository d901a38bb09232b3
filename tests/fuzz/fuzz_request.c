/*
 * libFuzzer target for the control socket's REQUEST path, without a
 * daemon: the input is a frame body, decoded as the control socket does
 * (fidbus_msg_decode + check); a REQUEST's args (or, for any other input,
 * the whole input, so the fuzzer reaches the maps quickly) go through
 * fb_ctl_args_load and then every decoder a command hands them to: the
 * route map of route.add, the add/del arrays of route.apply (also nested
 * under route.test's `apply`), the plugin map of plugin.load, and the
 * text arguments. Every route and plugin map that decodes is encoded with
 * the state file's encoder and must decode again (control socket and
 * state.cbor share these shapes).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cbor.h>
#include <fidbus/proto.h>

#include "control/control_cmds.h"
#include "config/route_spec.h"
#include "config/spec_cbor.h"

static struct fidbus_msg msg;

static cbor_item_t *reload(const cbor_item_t *it)
{
    unsigned char *buf = NULL;
    size_t cap = 0;
    size_t n = cbor_serialize_alloc(it, &buf, &cap);
    if (!n)
        abort();
    struct cbor_load_result res;
    cbor_item_t *back = cbor_load(buf, n, &res);
    free(buf);
    if (!back)
        abort();
    return back;
}

static void try_route(const cbor_item_t *map)
{
    char err[512];
    struct fb_route_spec r;
    if (fb_route_from_cbor(map, &r, err, sizeof err) == 0) {
        cbor_item_t *enc = fb_route_to_cbor(&r);
        if (!enc)
            abort();
        cbor_item_t *back = reload(enc);
        struct fb_route_spec r2;
        if (fb_route_from_cbor(back, &r2, err, sizeof err) != 0)
            abort(); /* a route we accept and save must load again */
        if (strcmp(r.name, r2.name) != 0)
            abort();
        fb_route_spec_clear(&r2);
        cbor_decref(&back);
        cbor_decref(&enc);
    }
    fb_route_spec_clear(&r);
}

static void try_plugin(const cbor_item_t *map)
{
    char err[512];
    struct fb_plugin_conf pc;
    if (fb_plugin_conf_from_cbor(map, &pc, err, sizeof err) == 0 && pc.name) {
        cbor_item_t *enc = fb_plugin_conf_to_cbor(&pc);
        if (!enc)
            abort();
        cbor_item_t *back = reload(enc);
        struct fb_plugin_conf pc2;
        if (fb_plugin_conf_from_cbor(back, &pc2, err, sizeof err) != 0)
            abort();
        if (pc2.nkeys != pc.nkeys)
            abort();
        fb_plugin_conf_clear(&pc2);
        cbor_decref(&back);
        cbor_decref(&enc);
    }
    fb_plugin_conf_clear(&pc);
}

static void try_apply(const cbor_item_t *apply)
{
    if (!apply || !cbor_isa_map(apply))
        return;
    cbor_item_t *add = fb_ctl_arg(apply, "add");
    if (add && cbor_isa_array(add))
        for (size_t i = 0; i < cbor_array_size(add); i++) {
            cbor_item_t *it = cbor_array_get(add, i);
            try_route(it);
            cbor_decref(&it);
        }
}

static void try_args(struct fidbus_slice args)
{
    char err[512];
    cbor_item_t *map = NULL;
    if (fb_ctl_args_load(args, &map, err, sizeof err) != 0)
        return;
    static const char *const texts[] = {"name", "path", "event", "id"};
    for (size_t i = 0; i < sizeof texts / sizeof *texts; i++) {
        char *v = NULL;
        (void)fb_ctl_arg_text(map, texts[i], false, &v, err, sizeof err);
        free(v);
    }
    cbor_item_t *route = fb_ctl_arg(map, "route");
    if (route)
        try_route(route);
    try_apply(map);
    try_apply(fb_ctl_arg(map, "apply"));
    try_plugin(map);
    cbor_decref(&map);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (fidbus_msg_decode(data, size, FIDBUS_MAX_DEPTH_DEFAULT, &msg) == 0 &&
        fidbus_msg_check(&msg) == 0 && msg.type == FIDBUS_MSG_REQUEST) {
        try_args(msg.args);
        return 0;
    }
    try_args((struct fidbus_slice){.ptr = data, .len = size});
    return 0;
}
