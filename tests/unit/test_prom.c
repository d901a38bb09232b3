/*
 * Unit tests for fidbusctl's Prometheus renderer (prom/prom.c):
 * a stats result written by hand as JSON goes in, the exposition text is
 * captured with open_memstream and checked line by line.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "prom.h"

/* The rendering of the JSON text `stats`, malloc'd. */
static char *render(const char *stats)
{
    json_error_t e;
    json_t *j = json_loads(stats, 0, &e);
    ck_assert_msg(j != NULL, "bad test JSON: %s", e.text);
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    ck_assert_ptr_nonnull(f);
    fb_prom_render(f, j);
    ck_assert_int_eq(fclose(f), 0);
    json_decref(j);
    return buf;
}

/* True when `line` is one whole line of text. */
static int has_line(const char *text, const char *line)
{
    size_t n = strlen(line);
    for (const char *p = text; (p = strstr(p, line)) != NULL; p++)
        if ((p == text || p[-1] == '\n') && p[n] == '\n')
            return 1;
    return 0;
}

#define ck_assert_line(text, line)                                                       \
    ck_assert_msg(has_line(text, line), "missing line <%s> in:\n%s", line, text)

START_TEST(test_prom_totals_exact)
{
    char *t = render("{\"received\": 10, \"dispatched\": 12, \"unrouted\": 1,"
                     " \"errors\": 2, \"bad_frames\": 0, \"generation\": 3}");
    ck_assert_str_eq(t, "# HELP fidbus_received_total Events received from publishers.\n"
                        "# TYPE fidbus_received_total counter\n"
                        "fidbus_received_total 10\n"
                        "# HELP fidbus_dispatched_total Handler calls started.\n"
                        "# TYPE fidbus_dispatched_total counter\n"
                        "fidbus_dispatched_total 12\n"
                        "# HELP fidbus_unrouted_total Events no route matched.\n"
                        "# TYPE fidbus_unrouted_total counter\n"
                        "fidbus_unrouted_total 1\n"
                        "# HELP fidbus_handler_errors_total Handler calls that failed.\n"
                        "# TYPE fidbus_handler_errors_total counter\n"
                        "fidbus_handler_errors_total 2\n"
                        "# HELP fidbus_bad_frames_total Protocol errors: frames that "
                        "could not be decoded.\n"
                        "# TYPE fidbus_bad_frames_total counter\n"
                        "fidbus_bad_frames_total 0\n"
                        "# HELP fidbus_table_generation Generation of the running route "
                        "table.\n"
                        "# TYPE fidbus_table_generation gauge\n"
                        "fidbus_table_generation 3\n");
    free(t);
}
END_TEST

/* Backslash, double quote and newline in a label value are escaped. */
START_TEST(test_prom_route_label_escaped)
{
    char *t = render("{\"routes\": {\"a\\\"b\\\\c\\nd\": {\"matched\": 7},"
                     " \"plain\": {\"matched\": 1}}}");
    ck_assert_line(t, "# TYPE fidbus_route_matched_total counter");
    ck_assert_line(t, "fidbus_route_matched_total{route=\"a\\\"b\\\\c\\nd\"} 7");
    ck_assert_line(t, "fidbus_route_matched_total{route=\"plain\"} 1");
    /* the raw newline never reaches the output: every line is a sample or # */
    for (char *line = t; *line; line = strchr(line, '\n') + 1)
        ck_assert(line[0] == '#' ||
                  strncmp(line, "fidbus_route_matched_total{", 27) == 0);
    free(t);
}
END_TEST

/* The latency histogram: cumulative buckets with le in exact decimal
 * seconds, +Inf = _count, _sum in seconds; p50/p99 are not exported. */
START_TEST(test_prom_duration_histogram)
{
    char *t =
        render("{\"functions\": {\"00000000000000ab\": {\"calls\": 5, \"errors\": 1,"
               " \"p50_ns\": 1500, \"p99_ns\": 2000000000,"
               " \"latency_buckets\": [1500, 2000000000], \"latency_counts\": [3, 4],"
               " \"latency_count\": 5, \"latency_sum_ns\": 12000000000}}}");
    ck_assert_line(t, "# TYPE fidbus_function_duration_seconds histogram");
    ck_assert_line(t,
                   "fidbus_function_duration_seconds_bucket{funcid=\"00000000000000ab\","
                   "le=\"0.0000015\"} 3");
    ck_assert_line(t,
                   "fidbus_function_duration_seconds_bucket{funcid=\"00000000000000ab\","
                   "le=\"2\"} 4");
    ck_assert_line(t,
                   "fidbus_function_duration_seconds_bucket{funcid=\"00000000000000ab\","
                   "le=\"+Inf\"} 5");
    ck_assert_line(
        t, "fidbus_function_duration_seconds_sum{funcid=\"00000000000000ab\"} 12");
    ck_assert_line(
        t, "fidbus_function_duration_seconds_count{funcid=\"00000000000000ab\"} 5");
    ck_assert_ptr_null(strstr(t, "quantile"));
    ck_assert_line(t, "fidbus_function_calls_total{funcid=\"00000000000000ab\"} 5");
    ck_assert_line(t, "fidbus_function_errors_total{funcid=\"00000000000000ab\"} 1");
    free(t);
}
END_TEST

/* The gauges: build info, uptime, connections by kind, paused, pool, in flight. */
START_TEST(test_prom_gauges)
{
    char *t = render("{\"version\": \"1.2.3\", \"uptime_s\": 7,"
                     " \"connections\": {\"unix\": 2, \"tcp\": 1, \"control\": 1},"
                     " \"paused\": 1, \"pool_queued\": 4, \"inflight\": 5}");
    ck_assert_line(t, "# TYPE fidbus_build_info gauge");
    ck_assert_line(t, "fidbus_build_info{version=\"1.2.3\"} 1");
    ck_assert_line(t, "fidbus_uptime_seconds 7");
    ck_assert_line(t, "fidbus_connections{kind=\"control\"} 1");
    ck_assert_line(t, "fidbus_connections{kind=\"tcp\"} 1");
    ck_assert_line(t, "fidbus_connections{kind=\"unix\"} 2");
    ck_assert_line(t, "fidbus_connections_paused 1");
    ck_assert_line(t, "fidbus_pool_queued 4");
    ck_assert_line(t, "fidbus_inflight_calls 5");
    free(t);
}
END_TEST

/* canonical and plugin label a function when the daemon gives them. */
START_TEST(test_prom_function_labels_when_present)
{
    char *t = render("{\"functions\": {"
                     " \"572db69f652ea126\": {\"calls\": 3, \"errors\": 0,"
                     "  \"canonical\": \"fidbus.log@1.0.0\", \"plugin\": \"log\","
                     "  \"latency_buckets\": [123456789], \"latency_counts\": [2],"
                     "  \"latency_count\": 3, \"latency_sum_ns\": 1000000001},"
                     " \"4c86a687398f8262\": {\"calls\": 9, \"errors\": 4}}}");
    ck_assert_line(t, "fidbus_function_calls_total{funcid=\"572db69f652ea126\","
                      "canonical=\"fidbus.log@1.0.0\",plugin=\"log\"} 3");
    ck_assert_line(t, "fidbus_function_errors_total{funcid=\"572db69f652ea126\","
                      "canonical=\"fidbus.log@1.0.0\",plugin=\"log\"} 0");
    ck_assert_line(t,
                   "fidbus_function_duration_seconds_bucket{funcid=\"572db69f652ea126\","
                   "canonical=\"fidbus.log@1.0.0\",plugin=\"log\",le=\"0.123456789\"} 2");
    ck_assert_line(t, "fidbus_function_duration_seconds_sum{funcid=\"572db69f652ea126\","
                      "canonical=\"fidbus.log@1.0.0\",plugin=\"log\"} 1.000000001");
    ck_assert_line(t, "fidbus_function_calls_total{funcid=\"4c86a687398f8262\"} 9");
    /* a function without the histogram's keys has no histogram */
    ck_assert_ptr_null(strstr(t, "duration_seconds_bucket{funcid=\"4c86a687398f8262\""));
    /* sorted by funcID: 4c86... before 572d... within each family */
    const char *first = strstr(t, "calls_total{funcid=\"4c86");
    const char *second = strstr(t, "calls_total{funcid=\"572d");
    ck_assert(first && second && first < second);
    free(t);
}
END_TEST

/* A remote function's own keys (proto/control.md `stats`): timeouts,
 * redelivered and unavailable are counters, waiting and members gauges;
 * a plugin function has none of them, so no sample. */
START_TEST(test_prom_remote_function)
{
    char *t = render("{\"functions\": {"
                     " \"861ce65207933353\": {\"calls\": 7, \"errors\": 3,"
                     "  \"canonical\": \"acme.audit@1.0.0\", \"plugin\": null,"
                     "  \"kind\": \"remote\", \"timeouts\": 1, \"redelivered\": 2,"
                     "  \"unavailable\": 3, \"waiting\": 4, \"members\": 5},"
                     " \"572db69f652ea126\": {\"calls\": 3, \"errors\": 0,"
                     "  \"canonical\": \"fidbus.log@1.0.0\", \"plugin\": \"log\"}}}");
    static const char *const lines[] = {
        "# TYPE fidbus_function_timeouts_total counter",
        "fidbus_function_timeouts_total{funcid=\"861ce65207933353\","
        "canonical=\"acme.audit@1.0.0\"} 1",
        "# TYPE fidbus_function_redelivered_total counter",
        "fidbus_function_redelivered_total{funcid=\"861ce65207933353\","
        "canonical=\"acme.audit@1.0.0\"} 2",
        "# TYPE fidbus_function_unavailable_total counter",
        "fidbus_function_unavailable_total{funcid=\"861ce65207933353\","
        "canonical=\"acme.audit@1.0.0\"} 3",
        "# TYPE fidbus_function_waiting gauge",
        "fidbus_function_waiting{funcid=\"861ce65207933353\","
        "canonical=\"acme.audit@1.0.0\"} 4",
        "# TYPE fidbus_function_members gauge",
        "fidbus_function_members{funcid=\"861ce65207933353\","
        "canonical=\"acme.audit@1.0.0\"} 5",
    };
    for (size_t i = 0; i < sizeof lines / sizeof lines[0]; i++)
        ck_assert_line(t, lines[i]);
    ck_assert_ptr_null(strstr(t, "timeouts_total{funcid=\"572db69f652ea126\""));
    ck_assert_ptr_null(strstr(t, "members{funcid=\"572db69f652ea126\""));
    free(t);
}
END_TEST

/* Generations sort as numbers; each family is announced once, before its
 * samples, and families are not interleaved. */
START_TEST(test_prom_generations_grouped)
{
    char *t = render("{\"generations\": {\"10\": 4, \"9\": 5, \"2\": 6},"
                     " \"routes\": {\"r\": {\"matched\": 15}}}");
    ck_assert_str_eq(t, "# HELP fidbus_generation_routed_total Events routed, by route "
                        "table generation.\n"
                        "# TYPE fidbus_generation_routed_total counter\n"
                        "fidbus_generation_routed_total{generation=\"2\"} 6\n"
                        "fidbus_generation_routed_total{generation=\"9\"} 5\n"
                        "fidbus_generation_routed_total{generation=\"10\"} 4\n"
                        "# HELP fidbus_route_matched_total Events matched, by route.\n"
                        "# TYPE fidbus_route_matched_total counter\n"
                        "fidbus_route_matched_total{route=\"r\"} 15\n");
    free(t);
}
END_TEST

/* Missing keys and non-numbers give no samples and no empty families;
 * a counter past int64 (a real in the JSON) is still a valid float. */
START_TEST(test_prom_missing_and_odd_values)
{
    char *t = render("{\"received\": null, \"dispatched\": 18446744073709551615.0,"
                     " \"routes\": {}, \"functions\": {\"ff\": {\"calls\": \"x\"}},"
                     " \"listeners\": [\"unix:/x\"]}");
    ck_assert_str_eq(t, "# HELP fidbus_dispatched_total Handler calls started.\n"
                        "# TYPE fidbus_dispatched_total counter\n"
                        "fidbus_dispatched_total 1.8446744073709552e+19\n");
    free(t);
    t = render("[]");
    ck_assert_str_eq(t, "");
    free(t);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("prom");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_prom_totals_exact);
    tcase_add_test(tc, test_prom_route_label_escaped);
    tcase_add_test(tc, test_prom_duration_histogram);
    tcase_add_test(tc, test_prom_gauges);
    tcase_add_test(tc, test_prom_function_labels_when_present);
    tcase_add_test(tc, test_prom_remote_function);
    tcase_add_test(tc, test_prom_generations_grouped);
    tcase_add_test(tc, test_prom_missing_and_odd_values);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
