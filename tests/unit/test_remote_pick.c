/*
 * Member choice and call tracking of remote functions (routing/remote.c;
 * ctest unit.remote_pick): rendezvous hashing moves about 1/N of the keys
 * when a member joins and spreads keys fairly; the least-loaded choice
 * rotates among equals; credit is never exceeded, calls without credit
 * wait in arrival order and go out as credit comes back; RETRY and loss
 * pick another member; a REGISTER's credit is capped by its section.
 *
 * The bus is replaced by ops that record what would be handed over.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <urcu/urcu-memb.h>

#include "base/daemon_t.h"
#include "config/config.h"
#include "routing/remote.h"
#include "routing/routes.h"

/* ------------------------------------------------------------ rendezvous */

static int owner(uint64_t khash, const uint64_t *keys, int n)
{
    int best = 0;
    uint64_t bw = 0;
    for (int i = 0; i < n; i++) {
        uint64_t w = fb_remote_rendezvous(khash, keys[i]);
        if (i == 0 || w > bw)
            best = i, bw = w;
    }
    return best;
}

START_TEST(test_rendezvous_moves_one_in_n)
{
    enum { K = 20000 };
    uint64_t keys[5] = {11, 12, 13, 14, 15};
    for (int n = 2; n <= 4; n++) {
        int moved = 0, moved_elsewhere = 0;
        for (int k = 0; k < K; k++) {
            char v[32];
            snprintf(v, sizeof v, "user-%d", k);
            uint64_t h = fb_remote_key_hash(v);
            int a = owner(h, keys, n), b = owner(h, keys, n + 1);
            if (a != b) {
                moved++;
                if (b != n)
                    moved_elsewhere++; /* only to the new member */
            }
        }
        double frac = (double)moved / K, want = 1.0 / (n + 1);
        ck_assert_msg(frac > want * 0.8 && frac < want * 1.2,
                      "%d -> %d members: %.3f of the keys moved, expected about %.3f", n,
                      n + 1, frac, want);
        ck_assert_int_eq(moved_elsewhere, 0);
    }
}
END_TEST

START_TEST(test_rendezvous_fair)
{
    enum { K = 30000, N = 5 };
    uint64_t keys[N] = {101, 202, 303, 404, 505};
    int per[N] = {0};
    for (int k = 0; k < K; k++) {
        char v[32];
        snprintf(v, sizeof v, "%d", k);
        per[owner(fb_remote_key_hash(v), keys, N)]++;
    }
    for (int i = 0; i < N; i++)
        ck_assert_msg(per[i] > K / N * 0.9 && per[i] < K / N * 1.1,
                      "member %d has %d of %d keys", i, per[i], K);
}
END_TEST

/* --------------------------------------------------------- call tracking */

static struct fb_call *delivered[4096];
static size_t ndelivered;

static void op_deliver(struct fb_call *c)
{
    ck_assert_uint_lt(ndelivered, 4096);
    delivered[ndelivered++] = c;
}

static void op_finish(struct fb_call *c)
{
    (void)c;
    ck_abort_msg("no call here has a home");
}

static struct fb_daemon d;
static struct fb_remote *rd;
static int conns[8];

static void setup(void)
{
    char err[256];
    struct fb_config *cfg = NULL;
    ck_assert_int_eq(fb_config_load_string("[remote acme]\ncredit = 4\nattempts = 3\n",
                                           "t.conf", &cfg, err, sizeof err),
                     0);
    memset(&d, 0, sizeof d);
    d.cfg = cfg;
    ck_assert_int_eq(fb_remote_new(&d, &rd), 0);
    static const struct fb_remote_ops ops = {.deliver = op_deliver, .finish = op_finish};
    fb_remote_set_ops(rd, &ops);
    ndelivered = 0;
    urcu_memb_register_thread();
}

static void teardown(void)
{
    urcu_memb_unregister_thread();
    urcu_memb_barrier();
    rd = fb_remote_free(rd);
    d.cfg = fb_config_free(d.cfg);
}

static struct fb_member *join(int i, uint64_t credit, bool idempotent)
{
    struct fb_reg_req q = {
        .function = "acme.audit@1.0.0",
        .signature = "event:any",
        .credit = credit,
        .idempotent = idempotent,
        .has_cred = true,
        .uid = 0,
    };
    struct fb_member *m = NULL;
    char err[256];
    int rc = fb_remote_register(rd, NULL, &q, &conns[i], &conns[i], &m, err, sizeof err);
    ck_assert_msg(rc == 0, "register: %d %s", rc, err);
    return m;
}

static void call(const struct fb_route *r, const char *user)
{
    struct fb_func *fn = fb_remote_get(rd, "acme.audit@1.0.0", false);
    ck_assert_ptr_nonnull(fn);
    struct fidbus_tag tag = {"user", user};
    struct fidbus_event ev = {.id = "a.x", .tags = user ? &tag : NULL, .ntags = !!user};
    urcu_memb_read_lock();
    ck_assert_int_eq(fb_remote_call(rd, fn, r, &ev, NULL), 0);
    urcu_memb_read_unlock();
}

static size_t count_for(const struct fb_member *m, size_t from)
{
    size_t n = 0;
    for (size_t i = from; i < ndelivered; i++)
        n += delivered[i]->m == m;
    return n;
}

START_TEST(test_credit_and_waiting)
{
    struct fb_member *m[3] = {join(0, 0, false), join(1, 2, false), join(2, 99, false)};
    ck_assert_uint_eq(m[0]->credit, 4); /* the section's */
    ck_assert_uint_eq(m[1]->credit, 2); /* below it: as sent */
    ck_assert_uint_eq(m[2]->credit, 4); /* above it: capped */
    for (int i = 0; i < 12; i++)
        call(NULL, NULL);
    ck_assert_uint_eq(ndelivered, 10); /* 4 + 2 + 4 */
    ck_assert_uint_eq(count_for(m[0], 0), 4);
    ck_assert_uint_eq(count_for(m[1], 0), 2);
    ck_assert_uint_eq(count_for(m[2], 0), 4);
    struct fb_func *fn = fb_remote_get(rd, "acme.audit@1.0.0", false);
    ck_assert_uint_eq(atomic_load(&fn->remote->waiting), 2);
    /* an answer from m[1] lets the first waiting call go, to m[1] */
    struct fb_call *c = NULL;
    for (size_t i = 0; i < ndelivered && !c; i++)
        if (delivered[i]->m == m[1])
            c = delivered[i], delivered[i] = NULL;
    fb_remote_result(c, FIDBUS_OK, 0);
    ck_assert_uint_eq(ndelivered, 11);
    ck_assert_ptr_eq(delivered[10]->m, m[1]);
    ck_assert_uint_eq(atomic_load(&fn->remote->waiting), 1);
    /* RETRY from m[0]: another member, attempt 2, queued behind the
     * waiting one (no credit anywhere) */
    for (size_t i = 0; i < ndelivered; i++)
        if (delivered[i] && delivered[i]->m == m[0]) {
            c = delivered[i];
            delivered[i] = NULL;
            break;
        }
    fb_remote_result(c, FIDBUS_RETRY, 0);
    /* m[0]'s credit went to the older waiting call */
    ck_assert_uint_eq(ndelivered, 12);
    ck_assert_ptr_eq(delivered[11]->m, m[0]);
    ck_assert_uint_eq(delivered[11]->attempt, 1);
    ck_assert_uint_eq(atomic_load(&fn->remote->waiting), 1);
    /* everyone answers: the retried call goes to someone but m[0] */
    size_t n = ndelivered;
    for (size_t i = 0; i < n; i++)
        if (delivered[i] && delivered[i]->m != m[0]) {
            struct fb_call *k = delivered[i];
            delivered[i] = NULL;
            fb_remote_result(k, FIDBUS_OK, 0);
        }
    ck_assert_uint_eq(ndelivered, 13);
    ck_assert_ptr_ne(delivered[12]->m, m[0]);
    ck_assert_uint_eq(delivered[12]->attempt, 2);
    fb_remote_result(delivered[12], FIDBUS_OK, 0);
    delivered[12] = NULL;
    ck_assert_uint_eq(atomic_load(&fn->remote->waiting), 0);
    for (size_t i = 0; i < ndelivered; i++)
        if (delivered[i] && delivered[i]->m) /* the last of m[0]'s */
            fb_remote_result(delivered[i], FIDBUS_OK, 0), delivered[i] = NULL;
    for (int i = 0; i < 3; i++) {
        fb_remote_member_remove(m[i]);
        fb_remote_member_put(m[i]);
    }
}
END_TEST

/* Least loaded with equal load rotates: answered at once, calls spread
 * evenly. */
START_TEST(test_round_robin_fair)
{
    struct fb_member *m[3] = {join(0, 4, false), join(1, 4, false), join(2, 4, false)};
    size_t per[3] = {0};
    for (int i = 0; i < 300; i++) {
        call(NULL, NULL);
        struct fb_call *c = delivered[--ndelivered];
        for (int k = 0; k < 3; k++)
            per[k] += c->m == m[k];
        fb_remote_result(c, FIDBUS_OK, 0);
    }
    for (int k = 0; k < 3; k++)
        ck_assert_msg(per[k] == 100, "member %d got %zu of 300", k, per[k]);
    for (int i = 0; i < 3; i++) {
        fb_remote_member_remove(m[i]);
        fb_remote_member_put(m[i]);
    }
}
END_TEST

/* split_by: one key, one member; a lost member's keys move, others stay. */
START_TEST(test_sticky_and_lost)
{
    struct fb_member *m[3] = {join(0, 4, true), join(1, 4, true), join(2, 4, true)};
    struct fb_route r = {.split_by = "user"};
    const struct fb_member *first[40];
    for (int round = 0; round < 2; round++)
        for (int u = 0; u < 40; u++) {
            char user[16];
            snprintf(user, sizeof user, "u%d", u);
            call(&r, user);
            struct fb_call *c = delivered[--ndelivered];
            if (round == 0)
                first[u] = c->m;
            ck_assert_ptr_eq(c->m, first[u]);
            fb_remote_result(c, FIDBUS_OK, 0);
        }
    /* m[1] holds a call and is lost: idempotent, so attempt 2 elsewhere */
    int u1 = -1;
    for (int u = 0; u < 40 && u1 < 0; u++)
        if (first[u] == m[1])
            u1 = u;
    ck_assert_int_ge(u1, 0);
    char user[16];
    snprintf(user, sizeof user, "u%d", u1);
    call(&r, user);
    struct fb_call *c = delivered[--ndelivered];
    ck_assert_ptr_eq(c->m, m[1]);
    c->written = true;
    fb_remote_member_remove(m[1]);
    fb_remote_lost(c);
    c = delivered[--ndelivered];
    ck_assert_ptr_ne(c->m, m[1]);
    ck_assert_uint_eq(c->attempt, 2);
    fb_remote_result(c, FIDBUS_OK, 0);
    /* keys of the others did not move */
    for (int u = 0; u < 40; u++) {
        if (first[u] == m[1])
            continue;
        snprintf(user, sizeof user, "u%d", u);
        call(&r, user);
        c = delivered[--ndelivered];
        ck_assert_ptr_eq(c->m, first[u]);
        fb_remote_result(c, FIDBUS_OK, 0);
    }
    for (int i = 0; i < 3; i++) {
        fb_remote_member_remove(m[i]);
        fb_remote_member_put(m[i]);
    }
}
END_TEST

int main(void)
{
    Suite *s = suite_create("remote_pick");
    TCase *tc = tcase_create("rendezvous");
    tcase_add_test(tc, test_rendezvous_moves_one_in_n);
    tcase_add_test(tc, test_rendezvous_fair);
    suite_add_tcase(s, tc);
    tc = tcase_create("calls");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_credit_and_waiting);
    tcase_add_test(tc, test_round_robin_fair);
    tcase_add_test(tc, test_sticky_and_lost);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
