/* test_cuda_ops.c — every engine op on the GPU against the same op on the
 * CPU, forward and backward, plus what the engine adds around the kernels:
 * copies across devices and dtypes, device errors, deferred index errors,
 * out-of-memory and recovery, TF32, the optimizers and memory accounting.
 *
 * Each op check draws fresh random inputs on the CPU (odd sizes), copies
 * them to the GPU, runs the op on both (through views where noted, so the
 * GPU sees non-contiguous, offset and broadcast inputs), compares the
 * outputs, then back-propagates the same random upstream gradient on both
 * and compares every input's gradient.
 *
 * Error measure: ||gpu - cpu|| / ||cpu|| over finite reference entries
 * (non-finite entries must match exactly); integer outputs must be equal.
 * Tolerances: float64 1e-11 (only summation order and libm vs libdevice
 * differ), float32 2e-5, TF32 matmul 5e-3 against float64.  Reductions run
 * on data of mean 0.5: a sum of zero-mean data cancels, and the CPU's own
 * float32 reference is then off by more than the tolerance (seen on the
 * H100: a whole-tensor mean at 3.6e-5).
 *
 * Exit codes: 0 all passed, 1 a failure, 77 no usable GPU (ctest: skipped). */
#include "cuda/sq_cuda.h"
#include "sq_device.h"
#include "sq_ops.h"
#include "sq_optim.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_test.h"

static const char *dn(sq_dtype dt) { return sq_dtype_name(dt); }
static double tol_of(sq_dtype dt) { return dt == SQ_F32 ? 2e-5 : 1e-11; }

/* ---- tensors ---------------------------------------------------------------------------- */

static sq_tensor *randn(tc *t, sq_dtype dt, int nd, const int64_t *shape, int grad)
{
    sq_tensor *x = NULL;
    if (sq_tensor_randn(&t->ctx, dt, nd, shape, 0.0, 1.0, &x) != SQ_OK) {
        printf("FATAL randn: %s\n", t->ctx.err);
        exit(1);
    }
    x->requires_grad = grad;
    return x;
}

static sq_tensor *uniform(tc *t, sq_dtype dt, int nd, const int64_t *shape, double lo, double hi,
                          int grad)
{
    sq_tensor *x = NULL;
    if (sq_tensor_rand(&t->ctx, dt, nd, shape, lo, hi, &x) != SQ_OK) {
        printf("FATAL rand: %s\n", t->ctx.err);
        exit(1);
    }
    x->requires_grad = grad;
    return x;
}

/* integers in [0, n) of dtype dt (int64 / int32) */
static sq_tensor *indices(tc *t, sq_dtype dt, int nd, const int64_t *shape, int64_t n)
{
    sq_tensor *x = NULL;
    if (sq_tensor_empty(&t->ctx, dt, nd, shape, &x) != SQ_OK) {
        printf("FATAL indices: %s\n", t->ctx.err);
        exit(1);
    }
    for (int64_t i = 0; i < sq_tensor_numel(x); i++)
        sq_tensor_set_flat(x, i, (double)sq_rng_below(&t->ctx.rng, (uint64_t)n));
    return x;
}

/* A CPU copy of any tensor (new reference). */
static sq_tensor *host(tc *t, sq_tensor *x)
{
    sq_tensor *h = NULL;
    if (sq_tensor_device(x) == SQ_CPU) {
        sq_tensor_retain(x);
        return x;
    }
    if (sq_tensor_to_device(&t->ctx, x, SQ_CPU, &h) != SQ_OK) return NULL;
    return h;
}

/* ||got - ref|| / ||ref||; -1 on a mismatch of shape, non-finite entries or integers */
static double rel_err(tc *t, sq_tensor *got, sq_tensor *ref)
{
    sq_tensor *g = host(t, got), *r = host(t, ref);
    double err = -1;
    if (!g || !r || !sq_shape_equal(g, r) || g->dtype != r->dtype) goto out;
    double num = 0, den = 0;
    int64_t n = sq_tensor_numel(r);
    err = 0;
    for (int64_t i = 0; i < n; i++) {
        double a = sq_tensor_get_flat(g, i), b = sq_tensor_get_flat(r, i);
        if (!sq_is_float(r->dtype)) {
            if (a != b) err = -1;
            continue;
        }
        if (!isfinite(b)) {
            if (!((isnan(a) && isnan(b)) || a == b)) err = -1;
            continue;
        }
        num += (a - b) * (a - b);
        den += b * b;
    }
    if (err == 0) err = den > 0 ? sqrt(num / den) : sqrt(num);
out:
    sq_tensor_release(g);
    sq_tensor_release(r);
    return err;
}

static void compare(tc *t, const char *what, sq_tensor *got, sq_tensor *ref, double tol)
{
    char s[64];
    double e = rel_err(t, got, ref);
    if (!sq_is_float(ref->dtype))
        report(t, e == 0, "%-44s %s %-12s exact", what, dn(ref->dtype), sq_shape_str(ref, s, sizeof s));
    else
        report(t, e >= 0 && e <= tol, "%-44s %s %-12s rel %.2e (tol %.0e)", what, dn(ref->dtype),
               sq_shape_str(ref, s, sizeof s), e, tol);
}

/* ---- one op on both devices, forward and backward --------------------------------------- */

typedef struct {
    int i[4];
    double d[2];
} opa;

typedef sq_status (*op_fn)(sq_ctx *ctx, sq_tensor *const *in, const opa *a, sq_tensor **out);

#define MAXIN 6

/* Runs f on the CPU inputs and on GPU copies of them; compares outputs and
 * the gradients of every input that requires one.  Takes ownership of in[]. */
static void check_op(tc *t, const char *name, op_fn f, const opa *a, int nin, sq_tensor **in,
                     double tol)
{
    sq_ctx *ctx = &t->ctx;
    sq_tensor *gin[MAXIN] = {NULL}, *oc = NULL, *og = NULL, *g = NULL, *gg = NULL;
    char what[96];
    for (int i = 0; i < nin; i++) MUST(t, sq_tensor_to_device(ctx, in[i], SQ_CUDA, &gin[i]));
    MUST(t, f(ctx, in, a, &oc));
    sq_status st = f(ctx, gin, a, &og);
    if (st != SQ_OK) {
        report(t, 0, "%s on cuda: %s: %s", name, sq_status_name(st), ctx->err);
        goto out;
    }
    if (sq_tensor_device(og) != SQ_CUDA) {
        report(t, 0, "%s: output of GPU inputs is on %s", name, sq_device_name(sq_tensor_device(og)));
        goto out;
    }
    snprintf(what, sizeof what, "%s", name);
    compare(t, what, og, oc, tol);
    if (!oc->requires_grad) goto out;
    /* the same upstream gradient on both devices */
    g = randn(t, oc->dtype, oc->ndim, oc->shape, 0);
    MUST(t, sq_tensor_to_device(ctx, g, SQ_CUDA, &gg));
    MUST(t, sq_backward(ctx, oc, g));
    st = sq_backward(ctx, og, gg);
    if (st != SQ_OK) {
        report(t, 0, "%s backward on cuda: %s: %s", name, sq_status_name(st), ctx->err);
        goto out;
    }
    for (int i = 0; i < nin; i++) {
        if (!in[i]->requires_grad) continue;
        snprintf(what, sizeof what, "%s d(in %d)", name, i + 1);
        if (!in[i]->grad || !gin[i]->grad) {
            report(t, 0, "%s: gradient missing (cpu %p, cuda %p)", what, (void *)in[i]->grad,
                   (void *)gin[i]->grad);
            continue;
        }
        if (sq_tensor_device(gin[i]->grad) != SQ_CUDA)
            report(t, 0, "%s: gradient of a GPU input is on the cpu", what);
        else compare(t, what, gin[i]->grad, in[i]->grad, tol);
    }
out:
    for (int i = 0; i < nin; i++) {
        sq_tensor_release(in[i]);
        sq_tensor_release(gin[i]);
    }
    sq_tensor_release(oc);
    sq_tensor_release(og);
    sq_tensor_release(g);
    sq_tensor_release(gg);
}

/* ---- op callbacks ---------------------------------------------------------------------------- */

static sq_status f_bin(sq_ctx *c, sq_tensor *const *in, const opa *a, sq_tensor **o)
{
    return sq_binary(c, (sq_binop)a->i[0], in[0], in[1], o);
}

/* in[0] transposed (dims 0,1) before the op: a non-contiguous operand */
static sq_status f_bin_t(sq_ctx *c, sq_tensor *const *in, const opa *a, sq_tensor **o)
{
    sq_tensor *v = NULL;
    SQ_TRY(sq_transpose(c, in[0], 0, 1, &v));
    sq_status st = sq_binary(c, (sq_binop)a->i[0], v, in[1], o);
    sq_tensor_release(v);
    return st;
}

static sq_status f_scale_shift(sq_ctx *c, sq_tensor *const *in, const opa *a, sq_tensor **o)
{
    return sq_scale_shift(c, in[0], a->d[0], a->d[1], o);
}

static sq_status f_pow(sq_ctx *c, sq_tensor *const *in, const opa *a, sq_tensor **o)
{
    return sq_pow_scalar(c, in[0], a->d[0], o);
}

/* i[1]: transpose the input first */
static sq_status f_unary(sq_ctx *c, sq_tensor *const *in, const opa *a, sq_tensor **o)
{
    sq_tensor *v = in[0];
    if (a->i[1]) SQ_TRY(sq_transpose(c, in[0], 0, 1, &v));
    sq_status st = sq_unary(c, (sq_unop)a->i[0], v, o);
    if (a->i[1]) sq_tensor_release(v);
    return st;
}

/* i[0]: 0 sum, 1 mean, 2 max; i[1]: dim (or SQ_ALL_DIMS); i[2]: keepdim;
 * i[3]: narrow dim 1 to [1, n-1) first (an offset, non-contiguous view) */
static sq_status f_reduce(sq_ctx *c, sq_tensor *const *in, const opa *a, sq_tensor **o)
{
    sq_tensor *v = in[0];
    if (a->i[3]) SQ_TRY(sq_narrow(c, in[0], 1, 1, in[0]->shape[1] - 2, &v));
    sq_status st = a->i[0] == 0   ? sq_sum(c, v, a->i[1], a->i[2], o)
                   : a->i[0] == 1 ? sq_mean(c, v, a->i[1], a->i[2], o)
                                  : sq_max(c, v, a->i[1], a->i[2], o);
    if (a->i[3]) sq_tensor_release(v);
    return st;
}

static sq_status f_argmax(sq_ctx *c, sq_tensor *const *in, const opa *a, sq_tensor **o)
{
    return sq_argmax(c, in[0], a->i[0], o);
}

/* i[0]: use in[1] transposed (dims -2,-1), read in place by the GEMM;
 * d[0] != 0: scaled by d[0] inside the GEMM */
static sq_status f_matmul(sq_ctx *c, sq_tensor *const *in, const opa *a, sq_tensor **o)
{
    sq_tensor *b = in[1];
    if (a->i[0]) SQ_TRY(sq_transpose(c, in[1], -2, -1, &b));
    sq_status st = a->d[0] != 0 ? sq_matmul_scaled(c, in[0], b, a->d[0], o) : sq_matmul(c, in[0], b, o);
    if (a->i[0]) sq_tensor_release(b);
    return st;
}

/* i[0]: has bias; i[1]: 1 = x transposed (dims 0,1) first, 2 = x narrowed to
 * rows [1, n) (contiguous, but not 256-byte aligned: cuBLASLt's fallback) */
static sq_status f_linear(sq_ctx *c, sq_tensor *const *in, const opa *a, sq_tensor **o)
{
    sq_tensor *x = in[0];
    if (a->i[1] == 1) SQ_TRY(sq_transpose(c, in[0], 0, 1, &x));
    if (a->i[1] == 2) SQ_TRY(sq_narrow(c, in[0], 0, 1, in[0]->shape[0] - 1, &x));
    sq_status st = sq_linear(c, x, in[1], a->i[0] ? in[2] : NULL, o);
    if (a->i[1]) sq_tensor_release(x);
    return st;
}

static sq_status f_softmax(sq_ctx *c, sq_tensor *const *in, const opa *a, sq_tensor **o)
{
    return a->i[0] ? sq_log_softmax(c, in[0], a->i[1], o) : sq_softmax(c, in[0], a->i[1], o);
}

static sq_status f_xent(sq_ctx *c, sq_tensor *const *in, const opa *a, sq_tensor **o)
{
    return sq_cross_entropy(c, in[0], in[1], o);
}

/* i[0]: number of affine inputs (0, 1 = weight, 2 = weight and bias) */
static sq_status f_layer_norm(sq_ctx *c, sq_tensor *const *in, const opa *a, sq_tensor **o)
{
    return sq_layer_norm(c, in[0], a->i[0] > 0 ? in[1] : NULL, a->i[0] > 1 ? in[2] : NULL, 1e-5, o);
}

static sq_status f_affine(sq_ctx *c, sq_tensor *const *in, const opa *a, sq_tensor **o)
{
    return sq_affine(c, in[0], in[1], a->i[0] ? in[2] : NULL, o);
}

static sq_status f_embedding(sq_ctx *c, sq_tensor *const *in, const opa *a, sq_tensor **o)
{
    return sq_embedding(c, in[0], in[1], o);
}

/* i[0] stride, i[1] pad, i[2] has bias */
static sq_status f_conv(sq_ctx *c, sq_tensor *const *in, const opa *a, sq_tensor **o)
{
    return sq_conv2d(c, in[0], in[1], a->i[2] ? in[2] : NULL, a->i[0], a->i[1], o);
}

/* i[0] 0 max / 1 avg; i[1] k, i[2] stride, i[3] pad */
static sq_status f_pool(sq_ctx *c, sq_tensor *const *in, const opa *a, sq_tensor **o)
{
    return a->i[0] ? sq_avg_pool2d(c, in[0], a->i[1], a->i[2], a->i[3], o)
                   : sq_max_pool2d(c, in[0], a->i[1], a->i[2], a->i[3], o);
}

/* i[0] inputs, i[1] dim */
static sq_status f_concat(sq_ctx *c, sq_tensor *const *in, const opa *a, sq_tensor **o)
{
    return sq_concat(c, a->i[0], in, a->i[1], o);
}

static sq_status f_index_select(sq_ctx *c, sq_tensor *const *in, const opa *a, sq_tensor **o)
{
    return sq_index_select(c, in[0], a->i[0], in[1], o);
}

/* gather along i[0] from in[0] transposed (dims 0,1) */
static sq_status f_gather(sq_ctx *c, sq_tensor *const *in, const opa *a, sq_tensor **o)
{
    sq_tensor *v = NULL;
    SQ_TRY(sq_transpose(c, in[0], 0, 1, &v));
    sq_status st = sq_gather(c, v, a->i[0], in[1], o);
    sq_tensor_release(v);
    return st;
}

/* views chained: narrow dim 2 [1, 1+5), permute (2,0,1), reshape (5, -1), then times in[1] */
static sq_status f_views(sq_ctx *c, sq_tensor *const *in, const opa *a, sq_tensor **o)
{
    sq_tensor *n = NULL, *p = NULL, *r = NULL;
    sq_status st;
    int perm[3] = {2, 0, 1};
    int64_t sh[2] = {5, -1};
    SQ_CHECK(sq_narrow(c, in[0], 2, 1, 5, &n));
    SQ_CHECK(sq_permute(c, n, perm, &p));
    SQ_CHECK(sq_reshape(c, p, 2, sh, &r));
    SQ_CHECK(sq_mul(c, r, in[1], o));
done:
    sq_tensor_release(n);
    sq_tensor_release(p);
    sq_tensor_release(r);
    return st;
}

/* expand (3,1,5) -> (3,4,5), times in[1]; then contiguous of a transpose */
static sq_status f_expand(sq_ctx *c, sq_tensor *const *in, const opa *a, sq_tensor **o)
{
    sq_tensor *e = NULL, *m = NULL, *tr = NULL;
    sq_status st;
    int64_t sh[3] = {3, 4, 5};
    SQ_CHECK(sq_expand(c, in[0], 3, sh, &e));
    SQ_CHECK(sq_mul(c, e, in[1], &m));
    SQ_CHECK(sq_transpose(c, m, 0, 2, &tr));
    SQ_CHECK(sq_contiguous(c, tr, o));
done:
    sq_tensor_release(e);
    sq_tensor_release(m);
    sq_tensor_release(tr);
    return st;
}

/* x*x + x: one leaf reached twice, so its gradient accumulates */
static sq_status f_reuse(sq_ctx *c, sq_tensor *const *in, const opa *a, sq_tensor **o)
{
    sq_tensor *m = NULL;
    SQ_TRY(sq_mul(c, in[0], in[0], &m));
    sq_status st = sq_add(c, m, in[0], o);
    sq_tensor_release(m);
    return st;
}

/* ---- the op table --------------------------------------------------------------------------- */

static void test_elementwise(tc *t, sq_dtype dt)
{
    double tol = tol_of(dt);
    char name[64];
    static const char *const bn[] = {"add", "sub", "mul", "div"};
    for (int op = 0; op < 4; op++) {
        opa a = {{op}, {0}};
        int64_t s1[3] = {5, 7, 9}, s2[3] = {5, 1, 9}, s3[2] = {7, 1};
        sq_tensor *in[2];
        int div = op == SQ_BIN_DIV;
        /* same shape */
        in[0] = randn(t, dt, 3, s1, 1);
        in[1] = div ? uniform(t, dt, 3, s1, 0.5, 2.0, 1) : randn(t, dt, 3, s1, 1);
        snprintf(name, sizeof name, "%s 5x7x9 . 5x7x9", bn[op]);
        check_op(t, name, f_bin, &a, 2, in, tol);
        /* broadcast both ways: (5,7,9) . (5,1,9), and (5,1,9) . (7,1) */
        in[0] = randn(t, dt, 3, s1, 1);
        in[1] = div ? uniform(t, dt, 3, s2, 0.5, 2.0, 1) : randn(t, dt, 3, s2, 1);
        snprintf(name, sizeof name, "%s 5x7x9 . 5x1x9 (broadcast)", bn[op]);
        check_op(t, name, f_bin, &a, 2, in, tol);
        in[0] = randn(t, dt, 3, s2, 1);
        in[1] = div ? uniform(t, dt, 2, s3, 0.5, 2.0, 1) : randn(t, dt, 2, s3, 1);
        snprintf(name, sizeof name, "%s 5x1x9 . 7x1 (both broadcast)", bn[op]);
        check_op(t, name, f_bin, &a, 2, in, tol);
        /* a transposed operand */
        int64_t st1[3] = {7, 5, 9};
        in[0] = randn(t, dt, 3, st1, 1);
        in[1] = div ? uniform(t, dt, 3, s1, 0.5, 2.0, 1) : randn(t, dt, 3, s1, 1);
        snprintf(name, sizeof name, "%s transposed 7x5x9 . 5x7x9", bn[op]);
        check_op(t, name, f_bin_t, &a, 2, in, tol);
    }
    int64_t s[2] = {33, 65};
    sq_tensor *in[1];
    opa ss = {{0}, {1.7, -0.3}};
    in[0] = randn(t, dt, 2, s, 1);
    check_op(t, "scale_shift 33x65", f_scale_shift, &ss, 1, in, tol);
    double ps[3] = {2.0, 3.0, -1.5};
    for (int i = 0; i < 3; i++) {
        opa pa = {{0}, {ps[i]}};
        in[0] = uniform(t, dt, 2, s, 0.5, 2.0, 1);
        snprintf(name, sizeof name, "pow %g 33x65", ps[i]);
        check_op(t, name, f_pow, &pa, 1, in, tol);
    }
    for (int op = 0; op < SQ_UN_COUNT; op++) {
        int positive = op == SQ_UN_LOG || op == SQ_UN_SQRT;
        for (int tr = 0; tr < 2; tr++) {
            opa ua = {{op, tr}, {0}};
            int64_t sh[2] = {tr ? 65 : 33, tr ? 33 : 65};
            in[0] = positive ? uniform(t, dt, 2, sh, 0.3, 3.0, 1) : randn(t, dt, 2, sh, 1);
            snprintf(name, sizeof name, "%s %s", sq_unop_name((sq_unop)op), tr ? "transposed 65x33" : "33x65");
            check_op(t, name, f_unary, &ua, 1, in, tol);
        }
    }
    int64_t s7[2] = {17, 13};
    in[0] = randn(t, dt, 2, s7, 1);
    check_op(t, "x*x + x (leaf reached twice)", f_reuse, &ss, 1, in, tol);
}

static void test_reductions(tc *t, sq_dtype dt)
{
    double tol = tol_of(dt);
    static const char *const kn[] = {"sum", "mean", "max"};
    int64_t sh[3] = {7, 13, 129};
    int dims[4] = {0, 1, 2, SQ_ALL_DIMS};
    char name[96];
    for (int k = 0; k < 3; k++)
        for (int di = 0; di < 4; di++)
            for (int nar = 0; nar < 2; nar++) {
                opa a = {{k, dims[di], di == 1, nar}, {0}};
                /* sums of zero-mean data cancel: their float32 value (the CPU's
                 * too) is only good to ~sqrt(n) eps |x| / |sum|, so the data
                 * are shifted to mean 0.5 and the comparison measures the GPU */
                sq_tensor *in[1] = {uniform(t, dt, 3, sh, -0.5, 1.5, 1)};
                snprintf(name, sizeof name, "%s dim %s%s%s of 7x13x129", kn[k],
                         di == 3 ? "all" : (const char *[]){"0", "1", "2"}[di], di == 1 ? " keepdim" : "",
                         nar ? " (narrowed view)" : "");
                check_op(t, name, f_reduce, &a, 1, in, tol);
            }
    /* a long reduction: column sums over 100003 rows take the split path */
    int64_t lsh[2] = {100003, 37};
    opa la = {{0, 0, 0, 0}, {0}};
    sq_tensor *in[1] = {uniform(t, dt, 2, lsh, -0.5, 1.5, 1)};
    /* the CPU adds 100003 float32 values in order: its own error is about
     * eps sqrt(n/3) ~ 1e-5 relative, hence 1e-4 in float32 */
    check_op(t, "sum dim 0 of 100003x37 (rows split)", f_reduce, &la, 1, in, dt == SQ_F32 ? 1e-4 : tol);
    for (int d = 0; d < 3; d++) {
        opa a = {{d}, {0}};
        in[0] = randn(t, dt, 3, sh, 0);
        snprintf(name, sizeof name, "argmax dim %d of 7x13x129", d);
        check_op(t, name, f_argmax, &a, 1, in, 0);
    }
}

static void test_linalg(tc *t, sq_dtype dt)
{
    double tol = tol_of(dt);
    sq_tensor *in[3];
    opa n0 = {{0}, {0}}, n1 = {{1}, {0}};
    int64_t a2[2] = {33, 65}, b2[2] = {65, 17}, b2t[2] = {17, 65};
    in[0] = randn(t, dt, 2, a2, 1);
    in[1] = randn(t, dt, 2, b2, 1);
    check_op(t, "matmul 33x65 @ 65x17", f_matmul, &n0, 2, in, tol);
    in[0] = randn(t, dt, 2, a2, 1);
    in[1] = randn(t, dt, 2, b2t, 1);
    check_op(t, "matmul 33x65 @ (17x65)^T (non-contiguous)", f_matmul, &n1, 2, in, tol);
    int64_t a3[3] = {5, 33, 65}, b3[3] = {5, 65, 17}, b3t[3] = {5, 17, 65};
    in[0] = randn(t, dt, 3, a3, 1);
    in[1] = randn(t, dt, 3, b3, 1);
    check_op(t, "matmul 5x33x65 @ 5x65x17", f_matmul, &n0, 2, in, tol);
    in[0] = randn(t, dt, 3, a3, 1);
    in[1] = randn(t, dt, 3, b3t, 1);
    check_op(t, "matmul 5x33x65 @ (5x17x65)^T", f_matmul, &n1, 2, in, tol);
    opa sc = {{1}, {0.125}};
    in[0] = randn(t, dt, 3, a3, 1);
    in[1] = randn(t, dt, 3, b3t, 1);
    check_op(t, "matmul 0.125 * 5x33x65 @ (5x17x65)^T (scaled)", f_matmul, &sc, 2, in, tol);
    in[0] = randn(t, dt, 3, a3, 1);
    in[1] = randn(t, dt, 2, b2, 1);
    check_op(t, "matmul 5x33x65 @ 65x17 (shared B)", f_matmul, &n0, 2, in, tol);
    in[0] = randn(t, dt, 3, a3, 0);
    in[1] = randn(t, dt, 2, b2, 1);
    check_op(t, "matmul, only B needs a gradient", f_matmul, &n0, 2, in, tol);

    int64_t x3[3] = {3, 37, 65}, w[2] = {19, 65}, b[1] = {19}, xt[3] = {37, 3, 65};
    opa lb = {{1, 0}, {0}}, ln = {{0, 0}, {0}}, lt = {{1, 1}, {0}};
    in[0] = randn(t, dt, 3, x3, 1);
    in[1] = randn(t, dt, 2, w, 1);
    in[2] = randn(t, dt, 1, b, 1);
    check_op(t, "linear 3x37x65 W 19x65 + b", f_linear, &lb, 3, in, tol);
    in[0] = randn(t, dt, 3, x3, 1);
    in[1] = randn(t, dt, 2, w, 1);
    check_op(t, "linear without bias", f_linear, &ln, 2, in, tol);
    in[0] = randn(t, dt, 3, xt, 1);
    in[1] = randn(t, dt, 2, w, 0); /* frozen weight: its GEMM is skipped */
    in[2] = randn(t, dt, 1, b, 1);
    check_op(t, "linear, transposed x, frozen W", f_linear, &lt, 3, in, tol);
    int64_t big[2] = {3001, 129}, wb[2] = {257, 129}, bb[1] = {257};
    in[0] = randn(t, dt, 2, big, 1);
    in[1] = randn(t, dt, 2, wb, 1);
    in[2] = randn(t, dt, 1, bb, 1);
    check_op(t, "linear 3001x129 -> 257 (db over many rows)", f_linear, &lb, 3, in, tol);
    int64_t xr[2] = {38, 65};
    opa lm = {{1, 2}, {0}};
    in[0] = randn(t, dt, 2, xr, 1);
    in[1] = randn(t, dt, 2, w, 1);
    in[2] = randn(t, dt, 1, b, 1);
    check_op(t, "linear on rows 2..38 of 38x65 (unaligned start)", f_linear, &lm, 3, in, tol);
}

static void test_nn(tc *t, sq_dtype dt)
{
    double tol = tol_of(dt);
    sq_tensor *in[3];
    char name[96];
    int64_t sm[3] = {3, 17, 33}, cs[3] = {5, 37, 37};
    for (int lg = 0; lg < 2; lg++) {
        opa a = {{lg, 0}, {0}}, c = {{lg, 1}, {0}};
        in[0] = randn(t, dt, 3, sm, 1);
        snprintf(name, sizeof name, "%s 3x17x33", lg ? "log_softmax" : "softmax");
        check_op(t, name, f_softmax, &a, 1, in, tol);
        in[0] = randn(t, dt, 3, cs, 1);
        snprintf(name, sizeof name, "%s causal 5x37x37", lg ? "log_softmax" : "softmax");
        check_op(t, name, f_softmax, &c, 1, in, tol);
    }
    int64_t lg[2] = {67, 11}, tg[1] = {67};
    opa none = {{0}, {0}};
    for (int i = 0; i < 2; i++) {
        in[0] = randn(t, dt, 2, lg, 1);
        in[1] = indices(t, i ? SQ_I32 : SQ_I64, 1, tg, 11);
        snprintf(name, sizeof name, "cross_entropy 67x11, %s targets", i ? "int32" : "int64");
        check_op(t, name, f_xent, &none, 2, in, tol);
    }
    int64_t xs[3] = {3, 29, 257}, ws[1] = {257};
    for (int k = 0; k < 3; k++) {
        opa a = {{k}, {0}};
        in[0] = randn(t, dt, 3, xs, 1);
        in[1] = uniform(t, dt, 1, ws, 0.5, 1.5, 1);
        in[2] = randn(t, dt, 1, ws, 1);
        snprintf(name, sizeof name, "layer_norm 3x29x257%s", k == 0 ? "" : k == 1 ? " w" : " w b");
        for (int j = 1 + k; j < 3; j++) sq_tensor_release(in[j]); /* unused */
        check_op(t, name, f_layer_norm, &a, 1 + k, in, tol);
    }
    int64_t xs4[3] = {3, 29, 256}, ws4[1] = {256};
    for (int k = 0; k < 4; k++) {
        opa a = {{k & 1}, {0}};
        int four = k >= 2; /* 256 channels: the float4 kernels */
        in[0] = randn(t, dt, 3, four ? xs4 : xs, 1);
        in[1] = randn(t, dt, 1, four ? ws4 : ws, 1);
        in[2] = randn(t, dt, 1, four ? ws4 : ws, 1);
        snprintf(name, sizeof name, "affine 3x29x%d%s", four ? 256 : 257, (k & 1) ? " + beta" : "");
        if (!(k & 1)) sq_tensor_release(in[2]); /* unused */
        check_op(t, name, f_affine, &a, 2 + (k & 1), in, tol);
    }
    int64_t is[2] = {7, 13}, wv[2] = {101, 33};
    for (int i = 0; i < 2; i++) {
        in[0] = indices(t, i ? SQ_I32 : SQ_I64, 2, is, 101);
        in[1] = randn(t, dt, 2, wv, 1);
        snprintf(name, sizeof name, "embedding 7x13 %s into 101x33", i ? "int32" : "int64");
        check_op(t, name, f_embedding, &none, 2, in, tol);
    }
}

static void test_conv(tc *t, sq_dtype dt)
{
    double tol = tol_of(dt);
    sq_tensor *in[3];
    char name[96];
    int cfg[4][4] = {{1, 1, 3, 1}, {2, 0, 3, 1}, {1, 0, 1, 0}, {2, 1, 3, 0}}; /* stride, pad, k, bias */
    for (int i = 0; i < 4; i++) {
        int64_t x[4] = {3, 5, 11, 13}, w[4] = {7, 5, cfg[i][2], cfg[i][2]}, b[1] = {7};
        opa a = {{cfg[i][0], cfg[i][1], cfg[i][3]}, {0}};
        in[0] = randn(t, dt, 4, x, 1);
        in[1] = randn(t, dt, 4, w, 1);
        in[2] = randn(t, dt, 1, b, 1);
        snprintf(name, sizeof name, "conv2d 3x5x11x13 k%d s%d p%d%s", cfg[i][2], cfg[i][0], cfg[i][1],
                 cfg[i][3] ? " + b" : "");
        if (!cfg[i][3]) sq_tensor_release(in[2]); /* unused */
        check_op(t, name, f_conv, &a, cfg[i][3] ? 3 : 2, in, tol);
    }
    int pc[3][3] = {{3, 2, 1}, {2, 2, 0}, {3, 1, 1}};
    for (int kind = 0; kind < 2; kind++)
        for (int i = 0; i < 3; i++) {
            int64_t x[4] = {2, 3, 11, 13};
            opa a = {{kind, pc[i][0], pc[i][1], pc[i][2]}, {0}};
            in[0] = randn(t, dt, 4, x, 1);
            snprintf(name, sizeof name, "%s 2x3x11x13 k%d s%d p%d", kind ? "avg_pool2d" : "max_pool2d",
                     pc[i][0], pc[i][1], pc[i][2]);
            check_op(t, name, f_pool, &a, 1, in, tol);
        }
}

static void test_index(tc *t, sq_dtype dt)
{
    double tol = tol_of(dt);
    sq_tensor *in[6];
    int64_t s1[3] = {3, 2, 7}, s2[3] = {3, 5, 7}, s3[3] = {3, 1, 7};
    opa c3 = {{3, 1}, {0}}, c5 = {{5, 1}, {0}};
    in[0] = randn(t, dt, 3, s1, 1);
    in[1] = randn(t, dt, 3, s2, 1);
    in[2] = randn(t, dt, 3, s3, 1);
    check_op(t, "concat 3 tensors along dim 1", f_concat, &c3, 3, in, tol);
    for (int i = 0; i < 5; i++) in[i] = randn(t, dt, 3, i % 2 ? s1 : s2, 1);
    check_op(t, "concat 5 tensors (a tree of nodes)", f_concat, &c5, 5, in, tol);
    int64_t xs[3] = {3, 11, 7}, il[1] = {13};
    for (int d = 0; d < 2; d++)
        for (int i32 = 0; i32 < 2; i32++) {
            opa a = {{d}, {0}};
            char name[96];
            in[0] = randn(t, dt, 3, xs, 1);
            in[1] = indices(t, i32 ? SQ_I32 : SQ_I64, 1, il, xs[d]);
            snprintf(name, sizeof name, "index_select dim %d, 13 %s indices", d, i32 ? "int32" : "int64");
            check_op(t, name, f_index_select, &a, 2, in, tol);
        }
    int64_t gx[3] = {7, 5, 3}, gi[3] = {5, 4, 3};
    opa g1 = {{1}, {0}};
    in[0] = randn(t, dt, 3, gx, 1);
    in[1] = indices(t, SQ_I64, 3, gi, 7);
    check_op(t, "gather dim 1 of a transposed 7x5x3", f_gather, &g1, 2, in, tol);
    int64_t v0[3] = {4, 3, 8}, v1[2] = {5, 12};
    opa none = {{0}, {0}};
    in[0] = randn(t, dt, 3, v0, 1);
    in[1] = randn(t, dt, 2, v1, 1);
    check_op(t, "narrow, permute, reshape, then mul", f_views, &none, 2, in, tol);
    int64_t e0[3] = {3, 1, 5}, e1[3] = {3, 4, 5};
    in[0] = randn(t, dt, 3, e0, 1);
    in[1] = randn(t, dt, 3, e1, 1);
    check_op(t, "expand, mul, transpose, contiguous", f_expand, &none, 2, in, tol);
}

/* ---- dropout: the GPU draws its own masks (Philox), so it is checked on its own --------- */

static void test_dropout(tc *t)
{
    sq_ctx *ctx = &t->ctx;
    int64_t sh[2] = {257, 1031};
    double p = 0.3;
    sq_tensor *x = NULL, *xg = NULL, *y = NULL, *y2 = NULL, *g = NULL, *hy = NULL, *hy2 = NULL,
              *hd = NULL, *hx = NULL;
    x = uniform(t, SQ_F32, 2, sh, 1.0, 2.0, 1);
    MUST(t, sq_tensor_to_device(ctx, x, SQ_CUDA, &xg));
    sq_cuda_rng_seed(ctx, 7);
    MUST(t, sq_dropout(ctx, xg, p, 1, &y));
    sq_cuda_rng_seed(ctx, 7);
    MUST(t, sq_dropout(ctx, xg, p, 0 + 1, &y2));
    MUST(t, sq_tensor_full_dev(ctx, SQ_CUDA, SQ_F32, 2, sh, 1.0, &g));
    MUST(t, sq_backward(ctx, y, g));
    hy = host(t, y);
    hy2 = host(t, y2);
    hd = host(t, xg->grad);
    hx = host(t, x);
    int64_t n = sq_tensor_numel(hy), zeros = 0, bad = 0, same = 1;
    double keep = 1.0 / (1.0 - p);
    for (int64_t i = 0; i < n; i++) {
        double v = sq_tensor_get_flat(hy, i), xv = sq_tensor_get_flat(hx, i), d = sq_tensor_get_flat(hd, i);
        if (v == 0) zeros++;
        else if (fabs(v - xv * keep) > 1e-5 * fabs(v)) bad++;
        if ((v == 0) != (d == 0) || (v != 0 && fabs(d - keep) > 1e-5)) bad++;
        if (v != sq_tensor_get_flat(hy2, i)) same = 0;
    }
    double frac = (double)zeros / (double)n;
    report(t, fabs(frac - p) < 0.01 && bad == 0,
           "dropout p=0.3 on 257x1031: %.4f dropped, kept values x/(1-p), gradient on the kept ones (%lld bad)",
           frac, (long long)bad);
    report(t, same, "dropout: the same GPU seed gives the same mask");
out:
    sq_tensor_release(x);
    sq_tensor_release(xg);
    sq_tensor_release(y);
    sq_tensor_release(y2);
    sq_tensor_release(g);
    sq_tensor_release(hy);
    sq_tensor_release(hy2);
    sq_tensor_release(hd);
    sq_tensor_release(hx);
}

/* ---- copies, conversions, fills ------------------------------------------------------------ */

static void test_copies(tc *t)
{
    sq_ctx *ctx = &t->ctx;
    int64_t sh[3] = {5, 7, 9};
    sq_tensor *a = randn(t, SQ_F64, 3, sh, 0), *ag = NULL, *tv = NULL, *tvc = NULL, *c32 = NULL,
              *c64 = NULL, *ci = NULL, *hi = NULL, *ref = NULL, *dst = NULL, *dv = NULL, *ref2 = NULL,
              *rv = NULL;
    MUST(t, sq_tensor_to_device(ctx, a, SQ_CUDA, &ag));
    compare(t, "cpu -> cuda -> cpu round trip", ag, a, 0);
    /* dtype conversions on the device */
    MUST(t, sq_tensor_to_dtype(ctx, ag, SQ_F32, &c32));
    MUST(t, sq_tensor_to_dtype(ctx, c32, SQ_F64, &c64));
    MUST(t, sq_tensor_to_dtype(ctx, a, SQ_F32, &ref));
    compare(t, "to float32 on the GPU", c32, ref, 0);
    MUST(t, sq_tensor_to_dtype(ctx, ag, SQ_I64, &ci));
    MUST(t, sq_tensor_to_dtype(ctx, a, SQ_I64, &hi));
    compare(t, "to int64 on the GPU (truncation)", ci, hi, 0);
    /* non-contiguous source and destination across devices */
    MUST(t, sq_transpose(ctx, ag, 0, 2, &tv));
    MUST(t, sq_tensor_clone(ctx, tv, &tvc));
    sq_tensor_release(ref);
    ref = NULL;
    sq_tensor *at = NULL;
    MUST(t, sq_transpose(ctx, a, 0, 2, &at));
    MUST(t, sq_tensor_clone(ctx, at, &ref));
    sq_tensor_release(at);
    compare(t, "clone of a transposed GPU view", tvc, ref, 0);
    MUST(t, sq_tensor_zeros_dev(ctx, SQ_CUDA, SQ_F64, 3, sh, &dst));
    MUST(t, sq_transpose(ctx, dst, 0, 2, &dv)); /* (9,7,5) view of a (5,7,9) buffer */
    MUST(t, sq_transpose(ctx, a, 0, 2, &rv));
    MUST(t, sq_tensor_copy_(ctx, dv, rv)); /* CPU strided -> GPU strided */
    compare(t, "copy_ cpu view -> cuda view", dst, a, 0);
    /* fill a non-contiguous GPU view: rows 2..4 of dim 1 */
    sq_tensor *nv = NULL;
    MUST(t, sq_narrow(ctx, dst, 1, 2, 3, &nv));
    MUST(t, sq_tensor_fill_(ctx, nv, 2.5));
    sq_tensor_release(nv);
    MUST(t, sq_tensor_clone(ctx, a, &ref2));
    MUST(t, sq_narrow(ctx, ref2, 1, 2, 3, &nv));
    MUST(t, sq_tensor_fill_(ctx, nv, 2.5));
    sq_tensor_release(nv);
    compare(t, "fill_ of a narrowed GPU view", dst, ref2, 0);
out:
    sq_tensor_release(a);
    sq_tensor_release(ag);
    sq_tensor_release(tv);
    sq_tensor_release(tvc);
    sq_tensor_release(c32);
    sq_tensor_release(c64);
    sq_tensor_release(ci);
    sq_tensor_release(hi);
    sq_tensor_release(ref);
    sq_tensor_release(ref2);
    sq_tensor_release(dst);
    sq_tensor_release(dv);
    sq_tensor_release(rv);
}

/* ---- errors --------------------------------------------------------------------------------- */

static void test_errors(tc *t)
{
    sq_ctx *ctx = &t->ctx;
    int64_t sh[2] = {4, 6}, ish[1] = {5};
    sq_tensor *a = randn(t, SQ_F32, 2, sh, 0), *ag = NULL, *o = NULL, *w = NULL, *idx = NULL,
              *idxg = NULL, *big = NULL, *r = NULL;
    MUST(t, sq_tensor_to_device(ctx, a, SQ_CUDA, &ag));
    sq_status st = sq_add(ctx, a, ag, &o);
    report(t, st == SQ_ERR_DEVICE && strstr(ctx->err, "cpu") && strstr(ctx->err, "cuda") && !o,
           "add(cpu, cuda) -> %s: %s", sq_status_name(st), ctx->err);
    /* an embedding index out of range is found on the GPU and reported at the next sync */
    MUST(t, sq_tensor_to_device(ctx, a, SQ_CUDA, &w)); /* weight 4x6: rows 0..3 */
    idx = indices(t, SQ_I64, 1, ish, 4);
    sq_tensor_set_flat(idx, 3, 9.0);
    MUST(t, sq_tensor_to_device(ctx, idx, SQ_CUDA, &idxg));
    st = sq_embedding(ctx, idxg, w, &o);
    report(t, st == SQ_OK, "embedding with index 9 of 4 rows returns at once on the GPU (%s)",
           sq_status_name(st));
    st = sq_device_sync(ctx, SQ_CUDA);
    report(t, st == SQ_ERR_ARG && strstr(ctx->err, "embedding") && strstr(ctx->err, "9"),
           "the next sync reports it -> %s: %s", sq_status_name(st), ctx->err);
    st = sq_device_sync(ctx, SQ_CUDA);
    report(t, st == SQ_OK, "and the error is cleared after it was reported");
    /* out of memory: a clear message, nothing live left behind, and work goes on */
    sq_cuda_mem_stats m0, m1;
    sq_cuda_mem_get(ctx, &m0);
    int64_t huge[2] = {(int64_t)1 << 20, (int64_t)1 << 20}; /* 4 TiB of float32 */
    st = sq_tensor_empty_dev(ctx, SQ_CUDA, SQ_F32, 2, huge, SQ_MEM_OTHER, &big);
    report(t, st == SQ_ERR_NOMEM && !big && strstr(ctx->err, "out of device memory"),
           "4 TiB tensor -> %s: %s", sq_status_name(st), ctx->err);
    sq_cuda_mem_get(ctx, &m1);
    report(t, m1.live_blocks == m0.live_blocks && m1.requested == m0.requested,
           "after the OOM: %lld live blocks as before, cache flushed %lld time(s)",
           (long long)m1.live_blocks, (long long)(m1.cache_flushes - m0.cache_flushes));
    st = sq_matmul(ctx, ag, ag, &r);
    report(t, st == SQ_ERR_SHAPE && !r, "matmul 4x6 @ 4x6 on the GPU -> %s: %s", sq_status_name(st), ctx->err);
    sq_tensor *at = NULL;
    MUST(t, sq_transpose(ctx, ag, 0, 1, &at));
    MUST(t, sq_matmul(ctx, ag, at, &r));
    sq_tensor_release(at);
    MUST(t, sq_device_sync(ctx, SQ_CUDA));
    report(t, 1, "the context computes after the OOM (matmul 4x6 @ 6x4)");
out:
    sq_tensor_release(a);
    sq_tensor_release(ag);
    sq_tensor_release(o);
    sq_tensor_release(w);
    sq_tensor_release(idx);
    sq_tensor_release(idxg);
    sq_tensor_release(big);
    sq_tensor_release(r);
}

/* ---- TF32 ------------------------------------------------------------------------------------ */

static void test_tf32(tc *t)
{
    sq_ctx *ctx = &t->ctx;
    int64_t sa[2] = {256, 1024}, sb[2] = {1024, 192};
    sq_tensor *a = randn(t, SQ_F64, 2, sa, 0), *b = randn(t, SQ_F64, 2, sb, 0), *ref = NULL,
              *a32 = NULL, *b32 = NULL, *ag = NULL, *bg = NULL, *c0 = NULL, *c1 = NULL, *c0d = NULL,
              *c1d = NULL;
    MUST(t, sq_matmul(ctx, a, b, &ref)); /* float64 on the CPU */
    MUST(t, sq_tensor_to_dtype(ctx, a, SQ_F32, &a32));
    MUST(t, sq_tensor_to_dtype(ctx, b, SQ_F32, &b32));
    MUST(t, sq_tensor_to_device(ctx, a32, SQ_CUDA, &ag));
    MUST(t, sq_tensor_to_device(ctx, b32, SQ_CUDA, &bg));
    sq_cuda_set_tf32(ctx, 0);
    MUST(t, sq_matmul(ctx, ag, bg, &c0));
    sq_cuda_set_tf32(ctx, 1);
    MUST(t, sq_matmul(ctx, ag, bg, &c1));
    sq_cuda_set_tf32(ctx, 0);
    MUST(t, sq_tensor_to_dtype(ctx, c0, SQ_F64, &c0d));
    MUST(t, sq_tensor_to_dtype(ctx, c1, SQ_F64, &c1d));
    double e0 = rel_err(t, c0d, ref), e1 = rel_err(t, c1d, ref);
    report(t, e0 >= 0 && e0 < 1e-6, "matmul 256x1024x192 float32 (TF32 off) vs float64: rel %.2e (tol 1e-06)", e0);
    report(t, e1 > 2 * e0 && e1 < 5e-3, "same with TF32 on: rel %.2e (tol 5e-03, and above float32's)", e1);
out:
    sq_tensor_release(a);
    sq_tensor_release(b);
    sq_tensor_release(ref);
    sq_tensor_release(a32);
    sq_tensor_release(b32);
    sq_tensor_release(ag);
    sq_tensor_release(bg);
    sq_tensor_release(c0);
    sq_tensor_release(c1);
    sq_tensor_release(c0d);
    sq_tensor_release(c1d);
}

/* ---- optimizers ------------------------------------------------------------------------------- */

static void test_optim(tc *t, sq_dtype dt, int adam, int variant)
{
    sq_ctx *ctx = &t->ctx;
    double tol = dt == SQ_F32 ? 1e-6 : 1e-13;
    int64_t s1[2] = {37, 29}, s2[1] = {1031};
    sq_tensor *pc[2] = {randn(t, dt, 2, s1, 1), randn(t, dt, 1, s2, 1)}, *pg[2] = {NULL, NULL};
    sq_optim *oc = NULL, *og = NULL;
    char name[96];
    for (int i = 0; i < 2; i++) {
        sq_storage_set_category(pc[i]->storage, SQ_MEM_PARAM);
        MUST(t, sq_tensor_to_device(ctx, pc[i], SQ_CUDA, &pg[i]));
    }
    if (adam) {
        sq_adamw_cfg c = sq_adamw_defaults();
        c.lr = 0.01;
        c.weight_decay = variant ? 0.1 : 0.0;
        MUST(t, sq_optim_adamw_init(ctx, 2, pc, &c, &oc));
        MUST(t, sq_optim_adamw_init(ctx, 2, pg, &c, &og));
        snprintf(name, sizeof name, "adamw%s", variant ? " wd 0.1" : "");
    } else {
        sq_sgd_cfg c = sq_sgd_defaults(0.05);
        if (variant >= 1) c.momentum = 0.9, c.weight_decay = 1e-3;
        if (variant == 1) c.dampening = 0.1;
        if (variant == 2) c.nesterov = 1;
        MUST(t, sq_optim_sgd_init(ctx, 2, pc, &c, &oc));
        MUST(t, sq_optim_sgd_init(ctx, 2, pg, &c, &og));
        snprintf(name, sizeof name, "sgd%s", variant == 0 ? "" : variant == 1 ? " momentum damp wd" : " nesterov wd");
    }
    for (int step = 0; step < 3; step++) {
        for (int i = 0; i < 2; i++) { /* the same random gradient on both */
            sq_tensor *g = randn(t, dt, pc[i]->ndim, pc[i]->shape, 0), *gg = NULL;
            MUST(t, sq_tensor_to_device(ctx, g, SQ_CUDA, &gg));
            MUST(t, sq_ag_accumulate_leaf(ctx, pc[i], g));
            MUST(t, sq_ag_accumulate_leaf(ctx, pg[i], gg));
            sq_tensor_release(g);
            sq_tensor_release(gg);
        }
        MUST(t, sq_optim_step(ctx, oc));
        MUST(t, sq_optim_step(ctx, og));
        sq_optim_zero_grad(oc);
        sq_optim_zero_grad(og);
    }
    char what[128];
    for (int i = 0; i < 2; i++) {
        snprintf(what, sizeof what, "%s 3 steps, param %d", name, i + 1);
        compare(t, what, pg[i], pc[i], tol);
        if (og->state0[i]) {
            snprintf(what, sizeof what, "%s 3 steps, state %d", name, i + 1);
            compare(t, what, og->state0[i], oc->state0[i], tol);
        }
    }
    report(t, sq_optim_state_bytes(og) == sq_optim_state_bytes(oc), "%s: optimizer state %lld bytes on both",
           name, (long long)sq_optim_state_bytes(og));
out:
    sq_optim_free(oc);
    sq_optim_free(og);
    for (int i = 0; i < 2; i++) {
        sq_tensor_release(pc[i]);
        sq_tensor_release(pg[i]);
    }
}

/* ---- memory accounting: one training step of a small MLP in two contexts ----------------------- */

typedef struct {
    int64_t cur[SQ_MEM_NCAT], peak[SQ_MEM_NCAT];
} mem_snap;

/* the graph: y = linear2(relu(linear1(x))) ; loss = cross_entropy(y, t); backward; adamw */
static sq_status mlp_step(sq_ctx *ctx, sq_device dev, mem_snap *after_fwd, mem_snap *after_step)
{
    sq_status st = SQ_OK;
    int64_t xs[2] = {129, 67}, w1s[2] = {96, 67}, b1s[1] = {96}, w2s[2] = {10, 96}, b2s[1] = {10},
            ts[1] = {129};
    const int64_t *ps[4] = {w1s, b1s, w2s, b2s};
    int pn[4] = {2, 1, 2, 1};
    sq_tensor *p[4] = {NULL}, *x = NULL, *tg = NULL, *h = NULL, *a = NULL, *y = NULL, *loss = NULL,
              *tmp = NULL;
    sq_optim *opt = NULL;
    for (int i = 0; i < 4; i++) {
        SQ_CHECK(sq_tensor_randn(ctx, SQ_F32, pn[i], ps[i], 0.0, 0.1, &tmp));
        SQ_CHECK(sq_tensor_to_device(ctx, tmp, dev, &p[i]));
        sq_tensor_release(tmp);
        tmp = NULL;
        sq_storage_set_category(p[i]->storage, SQ_MEM_PARAM);
        p[i]->requires_grad = 1;
    }
    SQ_CHECK(sq_tensor_randn(ctx, SQ_F32, 2, xs, 0.0, 1.0, &tmp));
    SQ_CHECK(sq_tensor_to_device(ctx, tmp, dev, &x));
    sq_tensor_release(tmp);
    tmp = NULL;
    SQ_CHECK(sq_tensor_empty(ctx, SQ_I64, 1, ts, &tmp));
    for (int64_t i = 0; i < ts[0]; i++) ((int64_t *)tmp->storage->data)[i] = i % 10;
    SQ_CHECK(sq_tensor_to_device(ctx, tmp, dev, &tg));
    sq_tensor_release(tmp);
    tmp = NULL;
    sq_adamw_cfg cfg = sq_adamw_defaults();
    SQ_CHECK(sq_optim_adamw_init(ctx, 4, p, &cfg, &opt));
    sq_mem_reset_peak(ctx);
    SQ_CHECK(sq_linear(ctx, x, p[0], p[1], &h));
    SQ_CHECK(sq_unary(ctx, SQ_UN_RELU, h, &a));
    SQ_CHECK(sq_linear(ctx, a, p[2], p[3], &y));
    SQ_CHECK(sq_cross_entropy(ctx, y, tg, &loss));
    for (int c = 0; c < SQ_MEM_NCAT; c++) {
        after_fwd->cur[c] = ctx->mem.cur[dev][c];
        after_fwd->peak[c] = ctx->mem.peak[dev][c];
    }
    SQ_CHECK(sq_backward(ctx, loss, NULL));
    SQ_CHECK(sq_optim_step(ctx, opt));
    for (int c = 0; c < SQ_MEM_NCAT; c++) {
        after_step->cur[c] = ctx->mem.cur[dev][c];
        after_step->peak[c] = ctx->mem.peak[dev][c];
    }
done:
    sq_optim_free(opt);
    for (int i = 0; i < 4; i++) sq_tensor_release(p[i]);
    sq_tensor_release(x);
    sq_tensor_release(tg);
    sq_tensor_release(h);
    sq_tensor_release(a);
    sq_tensor_release(y);
    sq_tensor_release(loss);
    sq_tensor_release(tmp);
    return st;
}

static void test_accounting(tc *t)
{
    sq_ctx cpu, gpu;
    sq_ctx_init(&cpu, 5);
    sq_ctx_init(&gpu, 5);
    mem_snap cf, cs, gf, gs;
    sq_status s1 = mlp_step(&cpu, SQ_CPU, &cf, &cs), s2 = mlp_step(&gpu, SQ_CUDA, &gf, &gs);
    if (s1 != SQ_OK || s2 != SQ_OK) {
        report(t, 0, "accounting run failed: cpu %s (%s), cuda %s (%s)", sq_status_name(s1), cpu.err,
               sq_status_name(s2), gpu.err);
        sq_device_release_all(&gpu);
        return;
    }
    /* every category matches at both checkpoints (current), and the peaks of
     * what a step holds (param, grad, optim, saved).  Scratch differs by
     * design: the GPU's reductions use workspace the CPU loops do not, and
     * the CPU's activation backward keeps one temporary more (other peak). */
    for (int c = 0; c < SQ_MEM_NCAT; c++) {
        int peak_too = c != SQ_MEM_WORKSPACE && c != SQ_MEM_OTHER;
        int ok = cf.cur[c] == gf.cur[c] && cs.cur[c] == gs.cur[c] &&
                 (!peak_too || (cf.peak[c] == gf.peak[c] && cs.peak[c] == gs.peak[c]));
        report(t, ok,
               "accounting %-9s after forward cur %lld/%lld peak %lld/%lld, after step cur %lld/%lld "
               "peak %lld/%lld (cpu/cuda%s)",
               sq_mem_cat_name((sq_mem_cat)c), (long long)cf.cur[c], (long long)gf.cur[c],
               (long long)cf.peak[c], (long long)gf.peak[c], (long long)cs.cur[c], (long long)gs.cur[c],
               (long long)cs.peak[c], (long long)gs.peak[c], peak_too ? "" : "; peaks informative");
    }
    report(t, gpu.mem.total_cur[SQ_CUDA] == 0 && cpu.mem.total_cur[SQ_CPU] == 0,
           "both contexts back to 0 bytes after releasing everything (cuda %lld, cpu %lld)",
           (long long)gpu.mem.total_cur[SQ_CUDA], (long long)cpu.mem.total_cur[SQ_CPU]);
    report(t, cpu.cuda == NULL, "the CPU-only context never created a GPU backend");
    sq_device_release_all(&gpu);
}

int main(void)
{
    tc T;
    memset(&T, 0, sizeof T);
    tc *t = &T;
    if (tc_open_gpu(t, 20261123) != 0) return 77;
    /* every launch waits, so an execution error is blamed on its own op */
    sq_cuda_set_sync_launches(&t->ctx, 1);
    for (int d = 0; d < 2; d++) {
        sq_dtype dt = d ? SQ_F32 : SQ_F64;
        printf("== %s\n", dn(dt));
        test_elementwise(t, dt);
        test_reductions(t, dt);
        test_linalg(t, dt);
        test_nn(t, dt);
        test_conv(t, dt);
        test_index(t, dt);
        for (int v = 0; v < 3; v++) test_optim(t, dt, 0, v);
        for (int v = 0; v < 2; v++) test_optim(t, dt, 1, v);
    }
    printf("== engine\n");
    test_dropout(t);
    test_copies(t);
    test_errors(t);
    test_tf32(t);
    sq_cuda_set_sync_launches(&t->ctx, 0);
    test_accounting(t);
    int64_t left_cuda = t->ctx.mem.total_cur[SQ_CUDA];
    report(t, left_cuda == 0, "every GPU byte of the test context released (%lld left)", (long long)left_cuda);
    sq_device_release_all(&t->ctx);
    report(t, t->ctx.cuda == NULL, "sq_device_release_all clears ctx->cuda");
    printf("%d passed, %d failed\n", t->passed, t->failed);
    return t->failed ? 1 : 0;
}
