/*
 * ctl/fidbusctl.h -- what the parts of fidbusctl share (private).
 *
 * main.c holds main, the global options, the command dispatch and the
 * exit-code conventions every command reports through;
 * publish.c is the `publish` command, control.c the
 * commands sent to the control socket; json_cbor.c, render.c and prom.c
 * are the static core the tests link too (fidbusctl_core). fidbusctl is a
 * program of its own: its names start with fbctl_ (the daemon's control
 * commands are fb_ctl_), and it shares code with fidbusd only through
 * libfidbus (trusted_dir.h there, too).
 */
#ifndef FBCTL_FIDBUSCTL_H
#define FBCTL_FIDBUSCTL_H

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

#include <fidbus/client.h>

enum {
    EXIT_OK = 0,
    EXIT_BUS = 1, /* the bus answered with an error */
    EXIT_USAGE = 2,
    EXIT_CONN = 3, /* cannot connect, connection lost, timeout */
};

struct ctl {
    const char *socket; /* control socket */
    const char *bus;
    const char *key_file; /* --key-file, else $FIDBUS_KEY_FILE; may be NULL */
    bool json;
    char socket_buf[4096];
    char bus_buf[4096];
};

/*
 * getopt values of the options main takes and every command takes again
 * (--json, --bus, --socket); below the commands' own values, which start
 * at 1000.
 */
enum {
    CTL_OPT_SOCKET = 900,
    CTL_OPT_BUS,
    CTL_OPT_JSON,
    CTL_OPT_KEY_FILE,
};

/* Their struct option entries, for main's table and every command's: a
 * global option works after the command too (the control commands accept
 * --key-file though the control socket never needs a key). */
#define CTL_GLOBAL_OPTIONS                                                               \
    {"socket", required_argument, NULL, CTL_OPT_SOCKET},                                 \
        {"bus", required_argument, NULL, CTL_OPT_BUS},                                   \
        {"json", no_argument, NULL, CTL_OPT_JSON},                                       \
    {                                                                                    \
        "key-file", required_argument, NULL, CTL_OPT_KEY_FILE                            \
    }

/* One line "fidbusctl: ..." on stderr; returns status. */
int fbctl_fail(int status, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Why fidbus_client_connect failed with rc: "CODE: the daemon's message"
 * when the daemon refused the connection, else fidbus_strerror(rc).
 * Valid until the next call. */
const char *fbctl_connect_why(int rc);

/* getopt's complaint, in our one-line form. */
int fbctl_bad_option(int c, char **argv);

/* Applies c when it is one of CTL_OPT_*; false for any other option. */
bool fbctl_global_option(struct ctl *ctl, int c);

/* The whole of path ('-' = stdin); `what` names it in errors. */
int fbctl_read_file(const char *what, const char *path, struct fidbus_buf *out);

/* Prints obj as one line of compact JSON and drops it (NULL-safe). */
void fbctl_print_json(json_t *obj);

/*
 * The daemon answered `words` ("publish", "route add", ...) with error
 * `code` and message `msg`: the --json error object (with "result" when
 * has_result) and the stderr line; returns EXIT_BUS.
 */
int fbctl_refused(const struct ctl *ctl, const char *words, int code, const char *msg,
                  bool has_result, uint64_t result);

/*
 * `words` failed without an answer from the `peer` ("bus", "daemon") at
 * addr: timeout, connection closed or any other error; returns EXIT_CONN.
 */
int fbctl_lost(const char *words, const char *peer, const char *addr, int rc);

/* Flushes stdout; a failed write turns a success into EXIT_CONN. */
int fbctl_flush(int status);

int fbctl_publish(struct ctl *ctl, int argc, char **argv);

/* `top [--once]` (top.c): the live view. Returns the exit status. */
int fbctl_top(struct ctl *ctl, int argc, char **argv);
/* tail (tail.c): a tap's events, one line each, until SIGINT/SIGTERM. */
int fbctl_tail(struct ctl *ctl, int argc, char **argv);

/* True when word starts a control command (status, plugin, route ...). */
bool fbctl_is_control_group(const char *word);
int fbctl_control(struct ctl *ctl, int argc, char **argv);

/*
 * The control socket, for commands that send more than one REQUEST
 * (control.c). fbctl_control_open connects *out (closed by the caller
 * with fidbus_client_close); on failure it has said why and returns the
 * exit status. fbctl_control_request sends `command` with args (NULL or
 * an object) and parses the REPLY's result into *result (the caller's,
 * NULL on failure); a failure is reported as one line under `words` and
 * its exit status returned -- except that with code non-NULL a refusal
 * by the daemon is not reported: *code gets its protocol code, the
 * message is fidbus_client_last_error(cl), and EXIT_BUS is returned.
 */
int fbctl_control_open(const struct ctl *ctl, struct fidbus_client **out);
int fbctl_control_request(const struct ctl *ctl, struct fidbus_client *cl,
                          const char *words, const char *command, const json_t *args,
                          json_t **result, int *code);

/* {funcID: canonical} of every loaded function (func.list on cl), or NULL
 * when it cannot be had: names are a help for people, never a failure. */
json_t *fbctl_func_names(const struct ctl *ctl, struct fidbus_client *cl);

/*
 * `route weight ROUTE TARGET=WEIGHT...` (route_weight.c): pos[0] the
 * route, pos[1..npos-1] the new weights. Returns the exit status.
 */
int fbctl_route_weight(const struct ctl *ctl, const char *words, char **pos, int npos);

#endif
