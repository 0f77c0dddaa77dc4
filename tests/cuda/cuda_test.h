/* cuda_test.h — the harness the GPU tests share: a test context, ok/FAIL
 * lines with pass/fail counts, and macros that turn a failed engine or
 * kernel call into a FAIL line carrying the context's message. */
#ifndef SQ_CUDA_TEST_H
#define SQ_CUDA_TEST_H

#include "cuda/sq_cuda.h"
#include "sq_base.h"
#include "sq_device.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

typedef struct {
    sq_ctx ctx;
    sq_rng rng;   /* test data; the ctx's own RNG stays untouched */
    int passed, failed;
    int64_t live; /* device buffers allocated by the test and not yet freed */
} tc;

static inline void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    printf("FATAL (test infrastructure): ");
    vprintf(fmt, ap);
    printf("\n");
    va_end(ap);
    exit(1);
}

static inline void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p) die("out of host memory (%zu bytes)", n);
    return p;
}

static inline void report(tc *t, int ok, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    printf("%s ", ok ? "ok  " : "FAIL");
    vprintf(fmt, ap);
    printf("\n");
    va_end(ap);
    fflush(stdout);
    if (ok) t->passed++;
    else t->failed++;
}

/* a kernel call: on failure report it with the context message */
#define CALL(t, expr)                                                                      \
    do {                                                                                   \
        sq_status st_ = (expr);                                                            \
        if (st_ != SQ_OK) report((t), 0, "%s:%d: %s -> %s: %s", __FILE__, __LINE__, #expr, \
                                 sq_status_name(st_), (t)->ctx.err);                       \
    } while (0)

/* an engine call that must succeed; on failure reports it and jumps to `out:` */
#define MUST(t, expr)                                                                       \
    do {                                                                                    \
        sq_status st_ = (expr);                                                             \
        if (st_ != SQ_OK) {                                                                 \
            report((t), 0, "%s:%d: %s -> %s: %s", __FILE__, __LINE__, #expr,                \
                   sq_status_name(st_), (t)->ctx.err);                                      \
            goto out;                                                                       \
        }                                                                                   \
    } while (0)

/* Opens t's context (seeded) on the GPU through the engine's device layer
 * and prints the device.  Returns 77 (ctest's "skipped") when no GPU can be
 * used, after saying why; 0 otherwise. */
static inline int tc_open_gpu(tc *t, uint64_t seed)
{
    sq_ctx_init(&t->ctx, seed);
    if (!sq_device_available(SQ_CUDA)) {
        printf("SKIP: no usable GPU\n");
        return 77;
    }
    if (sq_device_ensure(&t->ctx, SQ_CUDA) != SQ_OK) {
        printf("SKIP: the GPU cannot be used: %s\n", t->ctx.err);
        return 77;
    }
    char dev[256];
    printf("device: %s\n", sq_cuda_device_str(&t->ctx, dev, sizeof dev));
    return 0;
}

#endif
