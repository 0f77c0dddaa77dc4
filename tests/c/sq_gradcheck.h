/* sq_gradcheck.h — finite-difference gradient check in float64.
 *
 * f maps the inputs to one output tensor.  The check draws a random
 * cotangent R, runs backward with it, and compares each input's .grad with
 * central differences of sum(f(x) * R).  Inputs whose requires_grad is 0
 * are held fixed (integer indices, say). */
#ifndef SQ_GRADCHECK_H
#define SQ_GRADCHECK_H

#include "sq_ops.h"

#include <math.h>
#include <stdio.h>

typedef sq_status (*sq_gc_fn)(sq_ctx *ctx, sq_tensor **in, void *arg, sq_tensor **out);

static double sq_gc_dot(sq_tensor *a, sq_tensor *b)
{
    double s = 0;
    int64_t n = sq_tensor_numel(a);
    for (int64_t i = 0; i < n; i++) s += sq_tensor_get_flat(a, i) * sq_tensor_get_flat(b, i);
    return s;
}

/* Returns the largest |analytic - numeric| / max(1, |numeric|), or +inf on an
 * engine failure (the message is printed). */
static double sq_gradcheck(sq_ctx *ctx, sq_gc_fn f, int n, sq_tensor **in, void *arg, double eps)
{
    sq_tensor *out = NULL, *R = NULL;
    for (int i = 0; i < n; i++) {
        sq_tensor_release(in[i]->grad);
        in[i]->grad = NULL;
    }
    if (f(ctx, in, arg, &out) != SQ_OK) goto fail;
    if (sq_tensor_randn(ctx, out->dtype, out->ndim, out->shape, 0, 1, &R) != SQ_OK) goto fail;
    if (sq_backward(ctx, out, R) != SQ_OK) goto fail;
    sq_tensor_release(out);
    out = NULL;
    double worst = 0;
    int saved = ctx->grad_enabled;
    ctx->grad_enabled = 0;
    for (int i = 0; i < n; i++) {
        if (!in[i]->requires_grad) continue;
        int64_t m = sq_tensor_numel(in[i]);
        for (int64_t j = 0; j < m; j++) {
            double x0 = sq_tensor_get_flat(in[i], j), lp, lm;
            sq_tensor_set_flat(in[i], j, x0 + eps);
            if (f(ctx, in, arg, &out) != SQ_OK) goto fail_restore;
            lp = sq_gc_dot(out, R);
            sq_tensor_release(out);
            sq_tensor_set_flat(in[i], j, x0 - eps);
            if (f(ctx, in, arg, &out) != SQ_OK) goto fail_restore;
            lm = sq_gc_dot(out, R);
            sq_tensor_release(out);
            out = NULL;
            sq_tensor_set_flat(in[i], j, x0);
            double num = (lp - lm) / (2 * eps);
            double ana = in[i]->grad ? sq_tensor_get_flat(in[i]->grad, j) : 0.0;
            double err = fabs(ana - num) / fmax(1.0, fabs(num));
            if (!(err <= worst)) worst = err; /* NaN propagates as worst */
        }
    }
    ctx->grad_enabled = saved;
    sq_tensor_release(R);
    return worst;
fail_restore:
    ctx->grad_enabled = 1;
fail:
    printf("  gradcheck: %s\n", ctx->err);
    sq_tensor_release(out);
    sq_tensor_release(R);
    return INFINITY;
}

/* A float64 leaf with N(0,1) entries that requires a gradient. */
static sq_tensor *sq_gc_input(sq_ctx *ctx, int ndim, const int64_t *shape)
{
    sq_tensor *t = NULL;
    if (sq_tensor_randn(ctx, SQ_F64, ndim, shape, 0, 1, &t) != SQ_OK) return NULL;
    t->requires_grad = 1;
    return t;
}

#endif
