/*
 * count.so: the shipped `fidbus.count@1.0.0` handler (signature
 * `event:any`, inline). It counts events per event id and reports the
 * counts to the log on a timer, to a JSON file, and at fini.
 *
 * Config keys ([plugin NAME] section):
 *   interval_ms  report every N ms through the daemon's log (one line
 *                "count: N events, K ids", then "count: ID N" for the 64
 *                busiest ids); default 60000, 0 = only at fini.
 *   report_file  if set, rewritten at every report and at fini with a JSON
 *                object {"ID": n, ..., "_total": n} (ids sorted, plus
 *                "_other" when ids overflowed the table), atomically: a
 *                temporary file in the same directory renamed over it.
 *
 * The hot path takes no lock and, once an id has been seen, allocates
 * nothing: ids live in a fixed open-addressing table (SLOTS slots, linear
 * probing). A slot's key is installed once with a compare-and-swap and
 * never moves or changes, so a reader that sees a key may compare it
 * without a lock; counts are relaxed atomic adds. After MAX_IDS distinct
 * ids (three quarters of the slots, which keeps probe runs short) further
 * new ids are counted under "_other", with one warning. An event id that
 * is literally "_other" or "_total" shares its name with those keys in
 * the report; the log lines tell them apart.
 *
 * Keys and counts live apart, and each count is striped per thread
 * (STRIPES arrays, a thread picks one on its first event): the key table
 * is then read-only after warm-up, and two I/O threads counting the same
 * id write different cache lines. With one shared counter next to the
 * key, two workers were slower than one (fidbus-bench, perf: the stall
 * was the key load on the line the other core kept writing).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fidbus/plugin.h>

#define SLOTS 4096u
#define MAX_IDS (SLOTS / 4 * 3)
#define LOG_IDS 64
#define STRIPES 4u

struct key {
    uint64_t hash;
    size_t len;
    char id[]; /* NUL-terminated */
};

struct slot {
    _Atomic(struct key *) key;
};

struct count_ctx {
    struct slot slots[SLOTS];
    /* counts[stripe][slot]; a stripe's array is written by few threads */
    _Atomic uint64_t counts[STRIPES][SLOTS] __attribute__((aligned(64)));
    void *raw; /* what calloc returned */
    const struct fidbus_host *host;
    const char *report_file; /* host->config string: valid until fini */
    uint64_t interval_ms;
    _Atomic unsigned nids;
    atomic_flag warned;
    _Atomic uint64_t other __attribute__((aligned(64)));
};

/* FNV-1a, computing the length on the way. */
/* Eight bytes at a time after strlen (itself word-wise in libc): a
 * byte-at-a-time FNV-1a was most of this handler's cost per event. */
static uint64_t hash_id(const char *id, size_t *len)
{
    size_t n = strlen(id);
    uint64_t h = 0x9e3779b97f4a7c15ull ^ n;
    const char *p = id;
    size_t left = n;
    for (; left >= 8; p += 8, left -= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        h = (h ^ w) * 0xbf58476d1ce4e5b9ull;
        h ^= h >> 29;
    }
    if (left) {
        uint64_t w = 0;
        for (size_t i = 0; i < left; i++)
            w |= (uint64_t)(unsigned char)p[i] << (8 * i);
        h = (h ^ w) * 0x94d049bb133111ebull;
        h ^= h >> 29;
    }
    *len = n;
    return h * 0xbf58476d1ce4e5b9ull ^ (h >> 32);
}

static _Thread_local unsigned tls_stripe; /* stripe + 1; 0 = unassigned */
static _Atomic unsigned next_stripe;

static _Atomic uint64_t *count_of(struct count_ctx *c, unsigned slot)
{
    unsigned st = tls_stripe;
    if (!st)
        st = tls_stripe =
            atomic_fetch_add_explicit(&next_stripe, 1, memory_order_relaxed) % STRIPES +
            1;
    return &c->counts[st - 1][slot];
}

static uint64_t slot_total(struct count_ctx *c, unsigned slot)
{
    uint64_t n = 0;
    for (unsigned st = 0; st < STRIPES; st++)
        n += atomic_load_explicit(&c->counts[st][slot], memory_order_relaxed);
    return n;
}

static void count_other(struct count_ctx *c)
{
    atomic_fetch_add_explicit(&c->other, 1, memory_order_relaxed);
    if (!atomic_flag_test_and_set_explicit(&c->warned, memory_order_relaxed))
        c->host->log(c->host->handle, FIDBUS_LOG_WARN,
                     "count: more than %u event ids; counting new ones under _other",
                     MAX_IDS);
}

static int count_event(void *ctx, const struct fidbus_event *ev)
{
    struct count_ctx *c = ctx;
    size_t len;
    uint64_t h = hash_id(ev->id, &len);

    for (unsigned probe = 0, i = (unsigned)h & (SLOTS - 1); probe < SLOTS;
         probe++, i = (i + 1) & (SLOTS - 1)) {
        struct slot *s = &c->slots[i];
        struct key *k = atomic_load_explicit(&s->key, memory_order_acquire);
        if (!k) {
            if (atomic_load_explicit(&c->nids, memory_order_relaxed) >= MAX_IDS)
                break;
            struct key *nk = malloc(sizeof *nk + len + 1);
            if (!nk)
                break;
            nk->hash = h;
            nk->len = len;
            memcpy(nk->id, ev->id, len + 1);
            if (atomic_compare_exchange_strong_explicit(
                    &s->key, &k, nk, memory_order_acq_rel, memory_order_acquire)) {
                atomic_fetch_add_explicit(&c->nids, 1, memory_order_relaxed);
                atomic_fetch_add_explicit(count_of(c, i), 1, memory_order_relaxed);
                return 0;
            }
            /* another thread took the slot first: k is its key */
            free(nk);
        }
        if (k->hash == h && k->len == len && memcmp(k->id, ev->id, len) == 0) {
            atomic_fetch_add_explicit(count_of(c, i), 1, memory_order_relaxed);
            return 0;
        }
    }
    count_other(c);
    return 0;
}

struct entry {
    const char *id;
    uint64_t n;
};

static int by_id(const void *a, const void *b)
{
    return strcmp(((const struct entry *)a)->id, ((const struct entry *)b)->id);
}

/* busiest first, then by id */
static int by_count(const void *a, const void *b)
{
    const struct entry *x = a, *y = b;
    if (x->n != y->n)
        return x->n > y->n ? -1 : 1;
    return strcmp(x->id, y->id);
}

static int write_report(struct count_ctx *c, const struct entry *e, size_t n,
                        uint64_t other, uint64_t total)
{
    size_t plen = strlen(c->report_file);
    char *tmp = malloc(plen + 8);
    if (!tmp)
        return -ENOMEM;
    memcpy(tmp, c->report_file, plen);
    memcpy(tmp + plen, ".XXXXXX", 8);
    int fd = mkstemp(tmp);
    if (fd < 0) {
        int e2 = -errno;
        free(tmp);
        return e2;
    }
    (void)fchmod(fd, 0644);
    FILE *f = fdopen(fd, "w");
    if (!f) {
        int e2 = -errno;
        close(fd);
        unlink(tmp);
        free(tmp);
        return e2;
    }
    /* Event ids are [A-Za-z0-9_.:-] only: nothing to escape. */
    fputc('{', f);
    for (size_t i = 0; i < n; i++)
        fprintf(f, "\"%s\": %" PRIu64 ", ", e[i].id, e[i].n);
    if (other)
        fprintf(f, "\"_other\": %" PRIu64 ", ", other);
    fprintf(f, "\"_total\": %" PRIu64 "}\n", total);
    int rc = 0;
    if (ferror(f))
        rc = -EIO;
    if (fclose(f) != 0 && rc == 0)
        rc = -errno;
    if (rc == 0 && rename(tmp, c->report_file) < 0)
        rc = -errno;
    if (rc < 0)
        unlink(tmp);
    free(tmp);
    return rc;
}

/* Main thread (timer or fini); handlers may be counting meanwhile, so
 * the figures are a snapshot, each count exact as of its read. */
static void report(struct count_ctx *c)
{
    struct entry *e = malloc(SLOTS * sizeof *e);
    size_t n = 0;
    uint64_t total = 0;

    for (unsigned i = 0; i < SLOTS && e; i++) {
        struct key *k = atomic_load_explicit(&c->slots[i].key, memory_order_acquire);
        if (!k)
            continue;
        e[n].id = k->id;
        e[n].n = slot_total(c, i);
        total += e[n].n;
        n++;
    }
    uint64_t other = atomic_load_explicit(&c->other, memory_order_relaxed);
    total += other;
    if (e)
        qsort(e, n, sizeof *e, by_id);

    const struct fidbus_host *h = c->host;
    if (c->report_file) {
        int rc = e ? write_report(c, e, n, other, total) : -ENOMEM;
        if (rc < 0)
            h->log(h->handle, FIDBUS_LOG_WARN, "count: cannot write %s: %s",
                   c->report_file, strerror(-rc));
    }

    /* The log gets the busiest LOG_IDS ids, not thousands of lines a
     * minute; report_file has them all. */
    h->log(h->handle, FIDBUS_LOG_INFO, "count: %" PRIu64 " events, %zu ids", total, n);
    if (e)
        qsort(e, n, sizeof *e, by_count);
    for (size_t i = 0; i < n && i < LOG_IDS; i++)
        h->log(h->handle, FIDBUS_LOG_INFO, "count: %s %" PRIu64, e[i].id, e[i].n);
    if (n > LOG_IDS)
        h->log(h->handle, FIDBUS_LOG_INFO, "count: (%zu more ids)", n - LOG_IDS);
    if (other)
        h->log(h->handle, FIDBUS_LOG_INFO, "count: (other ids) %" PRIu64, other);
    free(e);
}

static void on_tick(void *arg)
{
    report(arg);
}

static void count_fini(void *ctx)
{
    struct count_ctx *c = ctx;
    if (!c)
        return;
    report(c);
    for (unsigned i = 0; i < SLOTS; i++)
        free(atomic_load_explicit(&c->slots[i].key, memory_order_relaxed));
    free(c->raw);
}

static int count_init(const struct fidbus_host *host, void **ctx)
{
    /* calloc of a block this size maps fresh zero pages: the table costs
     * memory only where ids land, which keeps an idle daemon small. */
    void *raw = calloc(1, sizeof(struct count_ctx) + 63);
    if (!raw)
        return -ENOMEM;
    struct count_ctx *c = (void *)(((uintptr_t)raw + 63) & ~(uintptr_t)63);
    c->raw = raw;
    atomic_flag_clear(&c->warned);
    c->host = host;
    c->interval_ms = 60000;

    const char *iv = host->config(host->handle, "interval_ms");
    if (iv) {
        char *end;
        errno = 0;
        unsigned long long v = strtoull(iv, &end, 10);
        if (!*iv || *end || errno || iv[0] == '-') {
            host->set_error(host->handle,
                            "interval_ms = %s: want a number of milliseconds (0 = never)",
                            iv);
            free(c->raw);
            return -EINVAL;
        }
        c->interval_ms = v;
    }
    const char *rf = host->config(host->handle, "report_file");
    if (rf && *rf)
        c->report_file = rf;

    if (c->interval_ms > 0) {
        uint64_t id;
        int rc = host->timer_start(host->handle, c->interval_ms, c->interval_ms, on_tick,
                                   c, &id);
        if (rc < 0) {
            host->set_error(host->handle, "cannot start the report timer: %s",
                            strerror(-rc));
            free(c->raw);
            return rc;
        }
    }
    *ctx = c;
    return 0;
}

static const struct fidbus_function count_functions[] = {
    {.ns = "fidbus",
     .name = "count",
     .version = "1.0.0",
     .signature = "event:any",
     .flags = 0,
     .handle = count_event},
};

FIDBUS_PLUGIN_EXPORT const struct fidbus_plugin fidbus_plugin = {
    .abi = FIDBUS_PLUGIN_ABI,
    .name = "count",
    .version = "1.0.0",
    .description = "counts events per event id",
    .init = count_init,
    .fini = count_fini,
    .functions = count_functions,
    .nfunctions = 1,
};
