/* sq_test.h — a tiny test harness: CHECK macros, per-test counting, and a
 * closing "N passed, N failed" line.  Each test binary is one ctest entry. */
#ifndef SQ_TEST_H
#define SQ_TEST_H

#include <math.h>
#include <stdio.h>
#include <string.h>

typedef struct { int passed, failed, cur_failed; const char *cur; } sq_test_state;

#define SQ_TEST_MAIN_BEGIN \
    int main(void) {       \
        sq_test_state T_ = {0, 0, 0, NULL};

#define SQ_TEST_MAIN_END                                                   \
        printf("%d passed, %d failed\n", T_.passed, T_.failed);           \
        return T_.failed ? 1 : 0;                                          \
    }

/* RUN(fn): fn(sq_test_state *T_) runs CHECKs; one test = one pass/fail. */
#define RUN(fn)                                                            \
    do {                                                                   \
        T_.cur = #fn;                                                      \
        T_.cur_failed = 0;                                                 \
        fn(&T_);                                                           \
        if (T_.cur_failed) { T_.failed++; printf("FAIL %s\n", #fn); }      \
        else { T_.passed++; printf("ok   %s\n", #fn); }                    \
    } while (0)

#define TEST(name) static void name(sq_test_state *T_)

#define CHECK(cond)                                                              \
    do {                                                                         \
        if (!(cond)) {                                                           \
            printf("  %s:%d: %s: CHECK(%s) failed\n", __FILE__, __LINE__, T_->cur, #cond); \
            T_->cur_failed = 1;                                                  \
        }                                                                        \
    } while (0)

#define CHECK_MSG(cond, ...)                                                     \
    do {                                                                         \
        if (!(cond)) {                                                           \
            printf("  %s:%d: %s: ", __FILE__, __LINE__, T_->cur);                \
            printf(__VA_ARGS__);                                                 \
            printf("\n");                                                        \
            T_->cur_failed = 1;                                                  \
        }                                                                        \
    } while (0)

/* status must be SQ_OK; prints the context's message otherwise */
#define CHECK_OK(ctx, expr)                                                      \
    do {                                                                         \
        sq_status st_ = (expr);                                                  \
        if (st_ != SQ_OK) {                                                      \
            printf("  %s:%d: %s: %s -> %s: %s\n", __FILE__, __LINE__, T_->cur, #expr, \
                   sq_status_name(st_), (ctx)->err);                             \
            T_->cur_failed = 1;                                                  \
        }                                                                        \
    } while (0)

/* expr must fail with status `code` and a message containing `needle` */
#define CHECK_FAIL(ctx, code, needle, expr)                                      \
    do {                                                                         \
        (ctx)->err[0] = 0;                                                       \
        sq_status st_ = (expr);                                                  \
        if (st_ != (code) || !strstr((ctx)->err, (needle))) {                    \
            printf("  %s:%d: %s: %s gave %s '%s', wanted %s containing '%s'\n",  \
                   __FILE__, __LINE__, T_->cur, #expr, sq_status_name(st_),      \
                   (ctx)->err, sq_status_name(code), (needle));                  \
            T_->cur_failed = 1;                                                  \
        }                                                                        \
    } while (0)

#define CHECK_NEAR(a, b, tol)                                                    \
    do {                                                                         \
        double a_ = (a), b_ = (b);                                               \
        if (!(fabs(a_ - b_) <= (tol))) {                                         \
            printf("  %s:%d: %s: %s = %.10g, %s = %.10g, |diff| > %g\n", __FILE__, \
                   __LINE__, T_->cur, #a, a_, #b, b_, (double)(tol));            \
            T_->cur_failed = 1;                                                  \
        }                                                                        \
    } while (0)

#endif
