/*
 * fidbus-serve -- hosts an unmodified plugin's functions out of fidbusd's
 * process, through libfidbus's serving API (<fidbus/client.h>,
 * fidbus_register / fidbus_serve): the plugin then crashes only this
 * process. man/fidbus-serve.1.scd is the user's description.
 *
 *     fidbus-serve [--bus ADDR] [--key-file F] [--credit N] [--timeout-ms N]
 *                  [--idempotent] [--threads N] PLUGIN.so [KEY=VALUE...]
 *
 * One thread, the main one, owns the client: it runs fidbus_serve, the
 * inline functions (in the serving callback), the timers (between serve
 * calls, fidbus_serve's timeout being the next one's due time) and every
 * publish. FIDBUS_FN_BLOCKING functions run on a small pool with a copy
 * of the event and answer with fidbus_call_done; a host->publish or
 * timer_start from a pool thread is queued for the main thread, which
 * fidbus_serve_stop wakes (the same wake-up SIGTERM uses, told apart by
 * `terminating`).
 */
#include <dlfcn.h>
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <fidbus/client.h>
#include <fidbus/funcid.h>
#include <fidbus/plugin.h>

#define EXIT_USAGE 2
#define POOL_MAX 64

static const char usage_text[] =
    "usage: fidbus-serve [--bus ADDR] [--key-file FILE] [--credit N] [--timeout-ms N]\n"
    "                    [--idempotent] [--threads N] [--name NAME] PLUGIN.so "
    "[KEY=VALUE...]\n"
    "Serves the plugin's functions over the bus; KEY=VALUE is its config.\n"
    "  --bus ADDR       unix:PATH, PATH or tcp:HOST:PORT (default: $FIDBUS_BUS, else\n"
    "                   $FIDBUS_RUNTIME_DIR/bus.sock, else /run/fidbus/bus.sock)\n"
    "  --key-file FILE  the shared key for a tcp: bus (default: $FIDBUS_KEY_FILE)\n"
    "  --credit N       calls each function holds at once (default: the daemon's)\n"
    "  --timeout-ms N   a call's deadline (default: the daemon's)\n"
    "  --idempotent     calls may run again after this process is lost\n"
    "  --threads N      threads for FIDBUS_FN_BLOCKING functions (default 4)\n"
    "  --name NAME      the client name the daemon shows (default fidbus-serve)\n";

/* ------------------------------------------------------------- state */

struct kv {
    const char *key, *value;
};

struct timer {
    uint64_t id;
    int64_t due_ms;
    uint64_t repeat_ms;
    void (*cb)(void *);
    void *arg;
};

/* A blocking call: a copy of the event, reused (its buffer only grows). */
struct job {
    struct job *next;
    const struct fidbus_function *fn;
    uint64_t token;
    struct fidbus_event ev;
    struct fidbus_tag tags[FIDBUS_MAX_TAGS];
    uint8_t *buf;
    size_t cap;
};

/* A publish from a pool thread, sent by the main thread. */
struct pub {
    struct pub *next;
    struct job copy; /* the event, as a job holds it */
};

static struct {
    const char *plugin_path;
    const struct fidbus_plugin *plugin;
    void *ctx;
    struct kv *cfg;
    size_t ncfg;
    char set_error[FIDBUS_ERROR_MAX];
    bool in_init;
    struct fidbus_client *c;
    pthread_t main_thread;

    pthread_mutex_t mu; /* timers, jobs, free jobs, pubs */
    pthread_cond_t cv;
    struct timer *timers;
    size_t ntimers, captimers;
    uint64_t next_timer_id;
    struct job *jobs_head, *jobs_tail, *free_jobs;
    struct pub *pubs, *free_pubs;
    bool pool_quit;
    pthread_t pool[POOL_MAX];
    int npool;

    atomic_int terminating;
} g = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static bool on_main(void)
{
    return pthread_equal(pthread_self(), g.main_thread);
}

/* ------------------------------------------------------------- host */

static const char *const level_names[] = {"error", "warn", "info", "debug"};

static void host_log(void *h, int level, const char *fmt, ...)
{
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    const char *lv = level >= 0 && level <= 3 ? level_names[level] : "info";
    fprintf(stderr, "fidbus-serve: %s: %s: %s\n",
            g.plugin->name ? g.plugin->name : "plugin", lv, line);
}

static const char *host_config(void *h, const char *key)
{
    if (!key)
        return NULL;
    for (size_t i = g.ncfg; i-- > 0;) /* the last KEY=VALUE wins */
        if (strcmp(g.cfg[i].key, key) == 0)
            return g.cfg[i].value;
    if (strcmp(key, "path") == 0)
        return g.plugin_path;
    return NULL;
}

static void host_set_error(void *h, const char *fmt, ...)
{
    if (!g.in_init || !on_main() || strstr(fmt, "%n"))
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g.set_error, sizeof g.set_error, fmt, ap);
    va_end(ap);
}

/* Copies an event into j (its buffer grows, never shrinks). */
static int job_fill(struct job *j, const char *id, const struct fidbus_tag *tags,
                    size_t ntags, const uint8_t *payload, size_t payload_len)
{
    size_t need = strlen(id) + 1 + payload_len;
    for (size_t i = 0; i < ntags; i++)
        need += strlen(tags[i].key) + strlen(tags[i].value) + 2;
    if (need > j->cap) {
        uint8_t *b = realloc(j->buf, need);
        if (!b)
            return -ENOMEM;
        j->buf = b;
        j->cap = need;
    }
    uint8_t *p = j->buf;
    size_t n = strlen(id) + 1;
    memcpy(p, id, n);
    j->ev.id = (const char *)p;
    p += n;
    for (size_t i = 0; i < ntags; i++) {
        n = strlen(tags[i].key) + 1;
        memcpy(p, tags[i].key, n);
        j->tags[i].key = (const char *)p;
        p += n;
        n = strlen(tags[i].value) + 1;
        memcpy(p, tags[i].value, n);
        j->tags[i].value = (const char *)p;
        p += n;
    }
    j->ev.tags = j->tags;
    j->ev.ntags = ntags;
    if (payload_len)
        memcpy(p, payload, payload_len);
    j->ev.payload = payload_len ? p : NULL;
    j->ev.payload_len = payload_len;
    return 0;
}

static int publish_now(const char *id, const struct fidbus_tag *tags, size_t ntags,
                       const uint8_t *payload, size_t payload_len)
{
    int rc = fidbus_publish(g.c, id, tags, ntags, payload, payload_len);
    return rc < 0 ? rc : 0;
}

/* The number of handlers reached is not known to a client: 0 on success. */
static int host_publish(void *h, const char *id, const struct fidbus_tag *tags,
                        size_t ntags, const uint8_t *payload, size_t payload_len)
{
    if (!id || !fidbus_event_valid(id, tags, ntags) || (payload_len && !payload))
        return -EINVAL;
    if (on_main())
        return publish_now(id, tags, ntags, payload, payload_len);
    pthread_mutex_lock(&g.mu);
    struct pub *p = g.free_pubs;
    if (p)
        g.free_pubs = p->next;
    else
        p = calloc(1, sizeof(*p));
    int rc = p ? job_fill(&p->copy, id, tags, ntags, payload, payload_len) : -ENOMEM;
    if (rc == 0) {
        p->next = g.pubs; /* reversed; the main thread restores the order */
        g.pubs = p;
    } else if (p) {
        p->next = g.free_pubs;
        g.free_pubs = p;
    }
    pthread_mutex_unlock(&g.mu);
    if (rc == 0)
        fidbus_serve_stop(g.c); /* wakes the main thread */
    return rc;
}

static int host_timer_start(void *h, uint64_t after_ms, uint64_t repeat_ms,
                            void (*cb)(void *), void *arg, uint64_t *timer_id)
{
    if (!cb)
        return -EINVAL;
    pthread_mutex_lock(&g.mu);
    if (g.ntimers == g.captimers) {
        size_t cap = g.captimers ? g.captimers * 2 : 8;
        struct timer *v = realloc(g.timers, cap * sizeof(*v));
        if (!v) {
            pthread_mutex_unlock(&g.mu);
            return -ENOMEM;
        }
        g.timers = v;
        g.captimers = cap;
    }
    uint64_t id = ++g.next_timer_id;
    g.timers[g.ntimers++] = (struct timer){.id = id,
                                           .due_ms = mono_ms() + (int64_t)after_ms,
                                           .repeat_ms = repeat_ms,
                                           .cb = cb,
                                           .arg = arg};
    pthread_mutex_unlock(&g.mu);
    if (timer_id)
        *timer_id = id;
    if (!on_main() && g.c)
        fidbus_serve_stop(g.c); /* the main thread recomputes its timeout */
    return 0;
}

static int host_timer_stop(void *h, uint64_t timer_id)
{
    int rc = -ENOENT;
    pthread_mutex_lock(&g.mu);
    for (size_t i = 0; i < g.ntimers; i++)
        if (g.timers[i].id == timer_id) {
            g.timers[i] = g.timers[--g.ntimers];
            rc = 0;
            break;
        }
    pthread_mutex_unlock(&g.mu);
    return rc;
}

static const struct fidbus_host host = {
    .log = host_log,
    .config = host_config,
    .publish = host_publish,
    .timer_start = host_timer_start,
    .timer_stop = host_timer_stop,
    .set_error = host_set_error,
};

/* Runs the timers that are due; returns ms to the next one, -1 if none. */
static int run_timers(void)
{
    for (;;) {
        int64_t now = mono_ms(), next = -1;
        struct timer t = {0};
        bool fire = false;
        pthread_mutex_lock(&g.mu);
        for (size_t i = 0; i < g.ntimers; i++) {
            if (g.timers[i].due_ms <= now) {
                t = g.timers[i];
                fire = true;
                if (t.repeat_ms)
                    g.timers[i].due_ms = now + (int64_t)t.repeat_ms;
                else
                    g.timers[i] = g.timers[--g.ntimers];
                break;
            }
            if (next < 0 || g.timers[i].due_ms - now < next)
                next = g.timers[i].due_ms - now;
        }
        pthread_mutex_unlock(&g.mu);
        if (!fire)
            return next > INT_MAX ? INT_MAX : (int)next;
        t.cb(t.arg);
    }
}

/* Sends what pool threads published, in the order they did. */
static void run_pubs(void)
{
    pthread_mutex_lock(&g.mu);
    struct pub *p = g.pubs, *rev = NULL;
    g.pubs = NULL;
    pthread_mutex_unlock(&g.mu);
    while (p) {
        struct pub *n = p->next;
        p->next = rev;
        rev = p;
        p = n;
    }
    for (p = rev; p;) {
        struct pub *n = p->next;
        const struct fidbus_event *e = &p->copy.ev;
        int rc = publish_now(e->id, e->tags, e->ntags, e->payload, e->payload_len);
        if (rc < 0)
            host_log(NULL, FIDBUS_LOG_WARN, "publish %s: %s", e->id, fidbus_strerror(rc));
        pthread_mutex_lock(&g.mu);
        p->next = g.free_pubs;
        g.free_pubs = p;
        pthread_mutex_unlock(&g.mu);
        p = n;
    }
}

/* ------------------------------------------------------------- calls */

static int outcome(int rc)
{
    return rc == 0 ? 0 : FIDBUS_HANDLER_FAILED;
}

static void *pool_main(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&g.mu);
    for (;;) {
        while (!g.jobs_head && !g.pool_quit)
            pthread_cond_wait(&g.cv, &g.mu);
        struct job *j = g.jobs_head;
        if (!j)
            break; /* quitting with nothing left */
        g.jobs_head = j->next;
        if (!g.jobs_head)
            g.jobs_tail = NULL;
        pthread_mutex_unlock(&g.mu);
        int rc = j->fn->handle(g.ctx, &j->ev);
        fidbus_call_done(g.c, j->token, outcome(rc));
        pthread_mutex_lock(&g.mu);
        j->next = g.free_jobs;
        g.free_jobs = j;
    }
    pthread_mutex_unlock(&g.mu);
    return NULL;
}

static int on_call(struct fidbus_client *c, const struct fidbus_call *call, void *arg)
{
    const struct fidbus_function *fn = arg;
    if (!(fn->flags & FIDBUS_FN_BLOCKING)) {
        struct fidbus_event ev = {
            .id = call->event,
            .tags = call->tags,
            .ntags = call->ntags,
            .payload = call->payload,
            .payload_len = call->payload_len,
            .generation = call->generation,
            .recv_ns = mono_ns(),
            .uid = call->uid,
            .pid = call->pid,
            .conn = 0, /* the publisher's connection is the daemon's to know */
        };
        return outcome(fn->handle(g.ctx, &ev));
    }
    pthread_mutex_lock(&g.mu);
    struct job *j = g.free_jobs;
    if (j)
        g.free_jobs = j->next;
    else
        j = calloc(1, sizeof(*j));
    int rc = j ? job_fill(j, call->event, call->tags, call->ntags, call->payload,
                          call->payload_len)
               : -ENOMEM;
    if (rc < 0) {
        if (j) {
            j->next = g.free_jobs;
            g.free_jobs = j;
        }
        pthread_mutex_unlock(&g.mu);
        return FIDBUS_RETRY; /* not run: another member may */
    }
    j->fn = fn;
    j->token = call->token;
    j->ev.seq = 0;
    j->ev.generation = call->generation;
    j->ev.recv_ns = mono_ns();
    j->ev.uid = call->uid;
    j->ev.pid = call->pid;
    j->ev.conn = 0;
    j->next = NULL;
    if (g.jobs_tail)
        g.jobs_tail->next = j;
    else
        g.jobs_head = j;
    g.jobs_tail = j;
    pthread_cond_signal(&g.cv);
    pthread_mutex_unlock(&g.mu);
    return FIDBUS_CALL_PENDING;
}

/* ------------------------------------------------------------- main */

static void on_signal(int sig)
{
    (void)sig;
    atomic_store(&g.terminating, 1);
    if (g.c)
        fidbus_serve_stop(g.c);
}

static int parse_uint(const char *s, unsigned long max, unsigned long *out)
{
    char *end;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (errno || end == s || *end || s[0] == '-' || v > max)
        return -1;
    *out = v;
    return 0;
}

static void free_all(void)
{
    for (struct job *j = g.free_jobs, *n; j; j = n) {
        n = j->next;
        free(j->buf);
        free(j);
    }
    for (struct pub *p = g.free_pubs, *n; p; p = n) {
        n = p->next;
        free(p->copy.buf);
        free(p);
    }
    free(g.timers);
    free(g.cfg);
}

int main(int argc, char **argv)
{
    const char *bus = NULL, *key_file = NULL, *name = "fidbus-serve";
    unsigned long credit = 0, timeout_ms = 0, threads = 4;
    bool idempotent = false;
    static const struct option opts[] = {
        {"bus", required_argument, NULL, 'b'},
        {"key-file", required_argument, NULL, 'k'},
        {"credit", required_argument, NULL, 'c'},
        {"timeout-ms", required_argument, NULL, 't'},
        {"idempotent", no_argument, NULL, 'i'},
        {"threads", required_argument, NULL, 'j'},
        {"name", required_argument, NULL, 'n'},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {0},
    };
    int o;
    while ((o = getopt_long(argc, argv, "+h", opts, NULL)) != -1) {
        switch (o) {
        case 'b':
            bus = optarg;
            break;
        case 'k':
            key_file = optarg;
            break;
        case 'c':
            if (parse_uint(optarg, FIDBUS_CREDIT_MAX, &credit) || credit == 0) {
                fprintf(stderr, "fidbus-serve: --credit: want 1-%u\n", FIDBUS_CREDIT_MAX);
                return EXIT_USAGE;
            }
            break;
        case 't':
            if (parse_uint(optarg, FIDBUS_TIMEOUT_MS_MAX, &timeout_ms) ||
                timeout_ms == 0) {
                fprintf(stderr, "fidbus-serve: --timeout-ms: want 1-%u\n",
                        FIDBUS_TIMEOUT_MS_MAX);
                return EXIT_USAGE;
            }
            break;
        case 'i':
            idempotent = true;
            break;
        case 'j':
            if (parse_uint(optarg, POOL_MAX, &threads) || threads == 0) {
                fprintf(stderr, "fidbus-serve: --threads: want 1-%d\n", POOL_MAX);
                return EXIT_USAGE;
            }
            break;
        case 'n':
            name = optarg;
            break;
        case 'h':
            fputs(usage_text, stdout);
            return 0;
        case 'V':
            printf("fidbus-serve %s\n", FIDBUS_VERSION);
            return 0;
        default:
            fputs(usage_text, stderr);
            return EXIT_USAGE;
        }
    }
    if (optind >= argc) {
        fputs(usage_text, stderr);
        return EXIT_USAGE;
    }
    g.plugin_path = argv[optind++];
    g.cfg = calloc((size_t)(argc - optind) + 1, sizeof(*g.cfg));
    if (!g.cfg)
        return 1;
    for (int i = optind; i < argc; i++) {
        char *eq = strchr(argv[i], '=');
        if (!eq || eq == argv[i]) {
            fprintf(stderr, "fidbus-serve: '%s': want KEY=VALUE\n", argv[i]);
            return EXIT_USAGE;
        }
        *eq = '\0';
        g.cfg[g.ncfg++] = (struct kv){argv[i], eq + 1};
    }

    char bus_buf[PATH_MAX];
    if (!bus) {
        const char *e = getenv("FIDBUS_BUS"), *rt = getenv("FIDBUS_RUNTIME_DIR");
        if (e && *e)
            bus = e;
        else if (rt && *rt &&
                 snprintf(bus_buf, sizeof bus_buf, "%s/bus.sock", rt) <
                     (int)sizeof bus_buf)
            bus = bus_buf;
        else
            bus = "/run/fidbus/bus.sock";
    }
    if (!key_file) {
        const char *k = getenv("FIDBUS_KEY_FILE");
        key_file = k && *k ? k : NULL;
    }

    /* The plugin first: a file that is not one fails before any connection. */
    void *dl = dlopen(g.plugin_path, RTLD_NOW | RTLD_LOCAL);
    if (!dl) {
        fprintf(stderr, "fidbus-serve: %s\n", dlerror());
        return 1;
    }
    g.plugin = dlsym(dl, "fidbus_plugin");
    if (!g.plugin) {
        fprintf(stderr, "fidbus-serve: %s: no fidbus_plugin symbol\n", g.plugin_path);
        return 1;
    }
    if (g.plugin->abi != FIDBUS_PLUGIN_ABI) {
        fprintf(stderr, "fidbus-serve: %s: plugin ABI %u, want %u\n", g.plugin_path,
                g.plugin->abi, FIDBUS_PLUGIN_ABI);
        return 1;
    }
    size_t nfn = g.plugin->nfunctions;
    char(*canon)[FIDBUS_CANONICAL_MAX] = calloc(nfn ? nfn : 1, sizeof(*canon));
    if (!canon)
        return 1;
    /* namespace=NS serves every function under NS, as the key of that
     * name does for a [plugin] instance in fidbusd.conf(5). */
    const char *ns = host_config(NULL, "namespace");
    if (ns && !fidbus_name_valid(ns)) {
        fprintf(stderr, "fidbus-serve: namespace=%s: want 1-64 of [A-Za-z0-9_-]\n", ns);
        return EXIT_USAGE;
    }
    for (size_t i = 0; i < nfn; i++) {
        const struct fidbus_function *f = &g.plugin->functions[i];
        uint64_t id;
        if (!f->handle ||
            fidbus_funcid_make(ns ? ns : f->ns, f->name, f->version, canon[i], &id) < 0) {
            fprintf(stderr, "fidbus-serve: %s: function %zu has an invalid name\n",
                    g.plugin_path, i);
            return 1;
        }
    }

    uint8_t *key = NULL;
    size_t key_len = 0;
    if (key_file) {
        int rc = fidbus_key_load(key_file, &key, &key_len);
        if (rc < 0) {
            fprintf(stderr, "fidbus-serve: %s: %s\n", key_file, fidbus_key_strerror(rc));
            return 1;
        }
    }
    struct fidbus_client_opts copts = {
        .name = name, .key = key, .key_len = key_len, .reconnect_max_ms = 5000};
    int rc = fidbus_client_connect(&g.c, bus, &copts);
    fidbus_key_free(key, key_len);
    if (rc < 0) {
        const char *why = fidbus_connect_error();
        fprintf(stderr, "fidbus-serve: cannot connect to %s: %s%s%s\n", bus,
                fidbus_strerror(rc), *why ? ": " : "", why);
        return 1;
    }
    g.main_thread = pthread_self();

    struct sigaction sa = {.sa_handler = on_signal};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    g.in_init = true;
    rc = g.plugin->init ? g.plugin->init(&host, &g.ctx) : 0;
    g.in_init = false;
    if (rc != 0) {
        fprintf(stderr, "fidbus-serve: %s: init failed: %s\n", g.plugin_path,
                g.set_error[0] ? g.set_error : strerror(rc < 0 ? -rc : rc));
        fidbus_client_close(g.c);
        return 1;
    }
    int exit_code = 0;
    bool any_blocking = false;
    for (size_t i = 0; i < nfn; i++)
        any_blocking |= (g.plugin->functions[i].flags & FIDBUS_FN_BLOCKING) != 0;
    for (int i = 0; any_blocking && i < (int)threads; i++) {
        if (pthread_create(&g.pool[i], NULL, pool_main, NULL) != 0) {
            fprintf(stderr, "fidbus-serve: cannot start the thread pool\n");
            exit_code = 1;
            break;
        }
        g.npool++;
    }

    struct fidbus_serve_opts sopts = {
        .size = sizeof sopts,
        .credit = (uint32_t)credit,
        .timeout_ms = (uint32_t)timeout_ms,
        .flags = idempotent ? FIDBUS_FLAG_IDEMPOTENT : 0,
    };
    for (size_t i = 0; exit_code == 0 && i < nfn; i++) {
        const struct fidbus_function *f = &g.plugin->functions[i];
        rc = fidbus_register(g.c, canon[i], f->signature ? f->signature : "", &sopts,
                             on_call, (void *)f, NULL);
        if (rc < 0) {
            fprintf(stderr, "fidbus-serve: register %s: %s%s%s\n", canon[i],
                    fidbus_strerror(rc), *fidbus_client_last_error(g.c) ? ": " : "",
                    fidbus_client_last_error(g.c));
            exit_code = 1;
        } else {
            fprintf(stderr, "fidbus-serve: serving %s\n", canon[i]);
        }
    }

    while (exit_code == 0 && !atomic_load(&g.terminating)) {
        int wait = run_timers();
        run_pubs();
        rc = fidbus_serve(g.c, wait);
        if (rc < 0) {
            fprintf(stderr, "fidbus-serve: %s%s%s\n", fidbus_strerror(rc),
                    *fidbus_client_last_error(g.c) ? ": " : "",
                    fidbus_client_last_error(g.c));
            exit_code = 1;
        }
    }
    /* Leave without failing a call: the daemon sends nothing new and
     * answers once the calls held (the pool's too) are answered. */
    if (nfn) {
        rc = fidbus_unregister(g.c, NULL);
        if (rc < 0 && rc != -ENOENT && exit_code == 0) {
            fprintf(stderr, "fidbus-serve: unregister: %s\n", fidbus_strerror(rc));
            exit_code = 1;
        }
    }
    pthread_mutex_lock(&g.mu);
    g.pool_quit = true;
    pthread_cond_broadcast(&g.cv);
    pthread_mutex_unlock(&g.mu);
    for (int i = 0; i < g.npool; i++)
        pthread_join(g.pool[i], NULL);
    run_pubs();
    pthread_mutex_lock(&g.mu);
    g.ntimers = 0; /* cancelled before fini, as in the daemon */
    pthread_mutex_unlock(&g.mu);
    if (g.plugin->fini)
        g.plugin->fini(g.ctx);
    run_pubs(); /* what fini published */
    /* close writes what is buffered when connected, and does not wait
     * for a reconnection (fidbus_flush would, for its whole timeout). */
    fidbus_client_close(g.c);
    dlclose(dl);
    free(canon);
    free_all();
    return exit_code;
}
