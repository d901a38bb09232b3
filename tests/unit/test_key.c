/*
 * Unit tests of fidbus_key_load (lib/client_key.c): the rules for the
 * shared TCP key's file, which fidbusd and the clients both apply.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fidbus/client.h>

static char dir[] = "/tmp/fidbus-test-key-XXXXXX";
static char path[sizeof dir + 16];

static void setup(void)
{
    strcpy(dir, "/tmp/fidbus-test-key-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/key", dir);
}

static void teardown(void)
{
    unlink(path);
    rmdir(dir);
}

static void write_key(const void *bytes, size_t n, mode_t mode)
{
    unlink(path);
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, bytes, n), (ssize_t)n);
    close(fd);
    ck_assert_int_eq(chmod(path, mode), 0);
}

static int load(uint8_t **key, size_t *len)
{
    *key = (uint8_t *)1;
    *len = 99;
    return fidbus_key_load(path, key, len);
}

START_TEST(test_key_one_newline_stripped)
{
    uint8_t *key;
    size_t len;
    write_key("0123456789abcdef\n", 17, 0600);
    ck_assert_int_eq(load(&key, &len), 0);
    ck_assert_uint_eq(len, 16);
    ck_assert_mem_eq(key, "0123456789abcdef", 16);
    fidbus_key_free(key, len);

    /* Only one newline goes; other bytes are key. */
    write_key("0123456789abcdef\n\n", 18, 0400);
    ck_assert_int_eq(load(&key, &len), 0);
    ck_assert_uint_eq(len, 17);
    fidbus_key_free(key, len);

    write_key("0123456789abcdef ", 17, 0600);
    ck_assert_int_eq(load(&key, &len), 0);
    ck_assert_uint_eq(len, 17);
    ck_assert_int_eq(key[16], ' ');
    fidbus_key_free(key, len);
}
END_TEST

START_TEST(test_key_binary_and_max)
{
    static uint8_t big[FIDBUS_KEY_MAX + 2];
    for (size_t i = 0; i < sizeof big; i++)
        big[i] = (uint8_t)(i * 7);
    uint8_t *key;
    size_t len;
    write_key(big, FIDBUS_KEY_MAX, 0600);
    ck_assert_int_eq(load(&key, &len), 0);
    ck_assert_uint_eq(len, FIDBUS_KEY_MAX);
    ck_assert_mem_eq(key, big, FIDBUS_KEY_MAX);
    fidbus_key_free(key, len);

    big[FIDBUS_KEY_MAX] = '\n';
    write_key(big, FIDBUS_KEY_MAX + 1, 0600);
    ck_assert_int_eq(load(&key, &len), 0);
    ck_assert_uint_eq(len, FIDBUS_KEY_MAX);
    fidbus_key_free(key, len);

    big[FIDBUS_KEY_MAX] = 'x';
    write_key(big, FIDBUS_KEY_MAX + 1, 0600);
    ck_assert_int_eq(load(&key, &len), -EFBIG);
    ck_assert_ptr_null(key);
    ck_assert_uint_eq(len, 0);
    write_key(big, sizeof big, 0600);
    ck_assert_int_eq(load(&key, &len), -EFBIG);
}
END_TEST

START_TEST(test_key_too_short)
{
    uint8_t *key;
    size_t len;
    write_key("", 0, 0600);
    ck_assert_int_eq(load(&key, &len), -ENODATA);
    ck_assert_ptr_null(key);
    write_key("\n", 1, 0600);
    ck_assert_int_eq(load(&key, &len), -ENODATA);
    write_key("0123456789abcde\n", 16, 0600);
    ck_assert_int_eq(load(&key, &len), -ENODATA);
    ck_assert_ptr_nonnull(strstr(fidbus_key_strerror(-ENODATA), "16 bytes"));
}
END_TEST

/* Any access for group or others is refused, whatever the key. */
START_TEST(test_key_mode_refused)
{
    static const mode_t bad[] = {0644, 0640, 0604, 0620, 0602, 0610, 0601, 0666, 0440};
    uint8_t *key;
    size_t len;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        write_key("0123456789abcdef0123\n", 21, bad[i]);
        ck_assert_msg(load(&key, &len) == -EPERM, "mode %o accepted", (unsigned)bad[i]);
        ck_assert_ptr_null(key);
    }
    ck_assert_ptr_nonnull(strstr(fidbus_key_strerror(-EPERM), "0600 or 0400"));
}
END_TEST

START_TEST(test_key_not_a_file)
{
    uint8_t *key;
    size_t len;
    ck_assert_int_eq(load(&key, &len), -ENOENT);
    ck_assert_int_eq(mkdir(path, 0700), 0);
    ck_assert_int_eq(load(&key, &len), -EINVAL);
    rmdir(path);
    ck_assert_int_eq(mkfifo(path, 0600), 0);
    ck_assert_int_eq(load(&key, &len), -EINVAL); /* and does not hang */
    ck_assert_int_eq(fidbus_key_load(NULL, &key, &len), -EINVAL);
    fidbus_key_free(NULL, 0);
}
END_TEST

static Suite *key_suite(void)
{
    Suite *s = suite_create("key");
    TCase *tc = tcase_create("key");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_key_one_newline_stripped);
    tcase_add_test(tc, test_key_binary_and_max);
    tcase_add_test(tc, test_key_too_short);
    tcase_add_test(tc, test_key_mode_refused);
    tcase_add_test(tc, test_key_not_a_file);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(key_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
