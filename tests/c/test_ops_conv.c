/* test_ops_conv.c — conv2d, max_pool2d and avg_pool2d: float64 gradient
 * checks, float32 comparisons against direct loops on odd sizes and
 * non-contiguous (NHWC-permuted) inputs, the frozen-weight GEMM skip,
 * workspace release, error messages, and exact memory release. */
#include "sq_gradcheck.h"
#include "sq_test.h"

#include <stdlib.h>

#define GC_TOL 1e-6    /* finite differences in float64, eps 1e-6 */
#define CONV_TOL 1e-4  /* float32 conv vs double reference: sums of ~50 N(0,1) products */
#define POOL_TOL 1e-6  /* float32 pooling vs double reference */

/* ---- helpers --------------------------------------------------------------- */

/* A non-contiguous NCHW view: an NHWC random tensor, permuted. */
static sq_tensor *nchw_view(sq_ctx *ctx, sq_dtype dt, const int64_t *s)
{
    int64_t nhwc[4] = {s[0], s[2], s[3], s[1]};
    sq_tensor *base = NULL, *v = NULL;
    if (sq_tensor_randn(ctx, dt, 4, nhwc, 0, 1, &base) != SQ_OK) return NULL;
    if (sq_permute(ctx, base, (int[]){0, 3, 1, 2}, &v) != SQ_OK) v = NULL;
    sq_tensor_release(base);
    return v;
}

static sq_tensor *randn(sq_ctx *ctx, sq_dtype dt, int nd, const int64_t *shape)
{
    sq_tensor *t = NULL;
    if (sq_tensor_randn(ctx, dt, nd, shape, 0, 1, &t) != SQ_OK) return NULL;
    return t;
}

static double at4(const sq_tensor *t, int64_t a, int64_t b, int64_t c, int64_t d)
{
    return sq_tensor_get_flat(t, ((a * t->shape[1] + b) * t->shape[2] + c) * t->shape[3] + d);
}

static double max_diff(const sq_tensor *t, const double *ref)
{
    double worst = 0;
    int64_t n = sq_tensor_numel(t);
    for (int64_t i = 0; i < n; i++) {
        double d = fabs(sq_tensor_get_flat(t, i) - ref[i]);
        if (!(d <= worst)) worst = d;
    }
    return worst;
}

static double max_diff_t(const sq_tensor *a, const sq_tensor *b)
{
    double worst = 0;
    int64_t n = sq_tensor_numel(a);
    if (n != sq_tensor_numel(b)) return INFINITY;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs(sq_tensor_get_flat(a, i) - sq_tensor_get_flat(b, i));
        if (!(d <= worst)) worst = d;
    }
    return worst;
}

static void release_all(int n, sq_tensor **ts)
{
    for (int i = 0; i < n; i++) sq_tensor_release(ts[i]);
}

/* Direct 7-loop convolution into ref (N,O,Ho,Wo). */
static void ref_conv(const sq_tensor *x, const sq_tensor *w, const sq_tensor *b, int s, int p,
                     int64_t Ho, int64_t Wo, double *ref)
{
    int64_t N = x->shape[0], C = x->shape[1], H = x->shape[2], W = x->shape[3];
    int64_t O = w->shape[0], kh = w->shape[2], kw = w->shape[3];
    for (int64_t n = 0; n < N; n++)
        for (int64_t o = 0; o < O; o++)
            for (int64_t oy = 0; oy < Ho; oy++)
                for (int64_t ox = 0; ox < Wo; ox++) {
                    double acc = b ? sq_tensor_get_flat(b, o) : 0.0;
                    for (int64_t c = 0; c < C; c++)
                        for (int64_t i = 0; i < kh; i++)
                            for (int64_t j = 0; j < kw; j++) {
                                int64_t y = oy * s - p + i, xx = ox * s - p + j;
                                if (y >= 0 && y < H && xx >= 0 && xx < W)
                                    acc += at4(x, n, c, y, xx) * at4(w, o, c, i, j);
                            }
                    ref[((n * O + o) * Ho + oy) * Wo + ox] = acc;
                }
}

/* ---- conv2d ------------------------------------------------------------------- */

typedef struct { int stride, pad, bias; } conv_arg;

static sq_status f_conv(sq_ctx *ctx, sq_tensor **in, void *arg, sq_tensor **out)
{
    conv_arg *a = arg;
    return sq_conv2d(ctx, in[0], in[1], a->bias ? in[2] : NULL, a->stride, a->pad, out);
}

TEST(conv2d_gradcheck)
{
    sq_ctx ctx;
    sq_ctx_init(&ctx, 101);
    struct { int64_t x[4], w[4]; conv_arg a; } cases[5] = {
        {{2, 3, 5, 6}, {4, 3, 3, 3}, {2, 1, 1}},  /* strided, padded, bias */
        {{1, 2, 4, 6}, {3, 2, 2, 3}, {1, 0, 0}},  /* non-square kernel and output, no bias */
        {{2, 3, 4, 3}, {2, 3, 1, 1}, {1, 0, 1}},  /* pointwise: no im2col */
        {{1, 2, 3, 3}, {2, 2, 3, 3}, {1, 2, 1}},  /* pad wider than k/2 */
        {{2, 1, 8, 6}, {2, 1, 3, 2}, {3, 1, 1}},  /* stride 3, 3x3 output from 8x6 */
    };
    for (int c = 0; c < 5; c++) {
        int64_t bs[1] = {cases[c].w[0]};
        sq_tensor *in[3] = {sq_gc_input(&ctx, 4, cases[c].x), sq_gc_input(&ctx, 4, cases[c].w),
                            sq_gc_input(&ctx, 1, bs)};
        double err = sq_gradcheck(&ctx, f_conv, 3, in, &cases[c].a, 1e-6);
        CHECK_MSG(err < GC_TOL, "conv2d case %d gradcheck error %g", c, err);
        release_all(3, in);
    }
    CHECK(ctx.mem.total_cur[SQ_CPU] == 0);
}

TEST(conv2d_matches_reference_noncontiguous_f32)
{
    sq_ctx ctx;
    sq_ctx_init(&ctx, 102);
    int64_t xs[4] = {3, 5, 7, 9}, ws[4] = {4, 5, 3, 3}, ws1[4] = {4, 5, 1, 1}, bs[1] = {4};
    sq_tensor *x = nchw_view(&ctx, SQ_F32, xs), *w = randn(&ctx, SQ_F32, 4, ws);
    sq_tensor *w1 = randn(&ctx, SQ_F32, 4, ws1), *b = randn(&ctx, SQ_F32, 1, bs), *y = NULL;
    CHECK(x && !sq_tensor_is_contiguous(x));
    double *ref = malloc(3 * 4 * 7 * 9 * sizeof *ref);
    /* 3x5x7x9, stride 2, pad 1 -> 3x4x4x5 */
    CHECK_OK(&ctx, sq_conv2d(&ctx, x, w, b, 2, 1, &y));
    CHECK(y && y->shape[0] == 3 && y->shape[1] == 4 && y->shape[2] == 4 && y->shape[3] == 5);
    ref_conv(x, w, b, 2, 1, 4, 5, ref);
    double err = max_diff(y, ref);
    CHECK_MSG(err < CONV_TOL, "conv2d s2 p1 max diff %g", err);
    sq_tensor_release(y);
    /* stride 1, pad 0 -> 3x4x5x7; and the pointwise path on the same view */
    CHECK_OK(&ctx, sq_conv2d(&ctx, x, w, NULL, 1, 0, &y));
    ref_conv(x, w, NULL, 1, 0, 5, 7, ref);
    err = max_diff(y, ref);
    CHECK_MSG(err < CONV_TOL, "conv2d s1 p0 max diff %g", err);
    sq_tensor_release(y);
    CHECK_OK(&ctx, sq_conv2d(&ctx, x, w1, b, 1, 0, &y));
    ref_conv(x, w1, b, 1, 0, 7, 9, ref);
    err = max_diff(y, ref);
    CHECK_MSG(err < CONV_TOL, "conv2d 1x1 max diff %g", err);
    sq_tensor_release(y);
    free(ref);
    sq_tensor *rel[4] = {x, w, w1, b};
    release_all(4, rel);
    CHECK(ctx.mem.total_cur[SQ_CPU] == 0);
}

/* The float32 backward agrees with the (gradient-checked) float64 one. */
TEST(conv2d_f32_backward_matches_f64)
{
    sq_ctx ctx;
    sq_ctx_init(&ctx, 103);
    int64_t xs[4] = {3, 5, 7, 9}, ws[4] = {4, 5, 3, 3}, bs[1] = {4};
    sq_tensor *x32 = nchw_view(&ctx, SQ_F32, xs), *w32 = randn(&ctx, SQ_F32, 4, ws);
    sq_tensor *b32 = randn(&ctx, SQ_F32, 1, bs), *x64 = NULL, *w64 = NULL, *b64 = NULL;
    CHECK_OK(&ctx, sq_tensor_to_dtype(&ctx, x32, SQ_F64, &x64));
    CHECK_OK(&ctx, sq_tensor_to_dtype(&ctx, w32, SQ_F64, &w64));
    CHECK_OK(&ctx, sq_tensor_to_dtype(&ctx, b32, SQ_F64, &b64));
    sq_tensor *ts[2][3] = {{x32, w32, b32}, {x64, w64, b64}};
    for (int k = 0; k < 2; k++) {
        sq_tensor *y = NULL, *s = NULL;
        for (int i = 0; i < 3; i++) ts[k][i]->requires_grad = 1;
        CHECK_OK(&ctx, sq_conv2d(&ctx, ts[k][0], ts[k][1], ts[k][2], 2, 1, &y));
        CHECK_OK(&ctx, sq_sum(&ctx, y, SQ_ALL_DIMS, 0, &s));
        CHECK_OK(&ctx, sq_backward(&ctx, s, NULL));
        sq_tensor_release(y);
        sq_tensor_release(s);
    }
    const char *names[3] = {"dx", "dW", "db"};
    for (int i = 0; i < 3; i++) {
        double err = max_diff_t(ts[0][i]->grad, ts[1][i]->grad);
        CHECK_MSG(err < 1e-4, "%s float32 vs float64 max diff %g", names[i], err);
    }
    sq_tensor *rel[6] = {x32, w32, b32, x64, w64, b64};
    release_all(6, rel);
    CHECK(ctx.mem.total_cur[SQ_CPU] == 0);
}

TEST(conv2d_frozen_weight_issues_no_dw_gemm)
{
    sq_ctx ctx;
    sq_ctx_init(&ctx, 104);
    int64_t xs[4] = {3, 4, 8, 8}, ws[4] = {6, 4, 3, 3}, bs[1] = {6};
    sq_tensor *x = randn(&ctx, SQ_F32, 4, xs), *w = randn(&ctx, SQ_F32, 4, ws), *b = randn(&ctx, SQ_F32, 1, bs);
    sq_storage_set_category(w->storage, SQ_MEM_PARAM);
    sq_storage_set_category(b->storage, SQ_MEM_PARAM);
    sq_tensor *y = NULL, *s = NULL;
    /* frozen W: x is not saved (only dW would use it), no dW GEMM runs */
    x->requires_grad = 1;
    b->requires_grad = 1;
    CHECK_OK(&ctx, sq_conv2d(&ctx, x, w, b, 1, 1, &y));
    CHECK(ctx.mem.cur[SQ_CPU][SQ_MEM_SAVED] == 0);
    CHECK(ctx.mem.cur[SQ_CPU][SQ_MEM_WORKSPACE] == 0);
    CHECK(ctx.mem.peak[SQ_CPU][SQ_MEM_WORKSPACE] == 4 * 3 * 3 * 8 * 8 * 4); /* im2col of one image */
    CHECK_OK(&ctx, sq_sum(&ctx, y, SQ_ALL_DIMS, 0, &s));
    int64_t g0 = ctx.stats.gemm_calls, w0 = ctx.stats.weight_grad_gemms;
    CHECK_OK(&ctx, sq_backward(&ctx, s, NULL));
    CHECK(ctx.stats.weight_grad_gemms == w0);
    CHECK(ctx.stats.gemm_calls - g0 == 3); /* dx: one per image */
    CHECK(w->grad == NULL && x->grad != NULL && b->grad != NULL);
    CHECK(ctx.mem.cur[SQ_CPU][SQ_MEM_WORKSPACE] == 0);
    sq_tensor_release(y);
    sq_tensor_release(s);
    /* trainable W, frozen x: one counted dW GEMM per image and no dx GEMM */
    x->requires_grad = 0;
    w->requires_grad = 1;
    CHECK_OK(&ctx, sq_conv2d(&ctx, x, w, b, 1, 1, &y));
    CHECK(ctx.mem.cur[SQ_CPU][SQ_MEM_SAVED] == 3 * 4 * 8 * 8 * 4); /* x, for dW */
    CHECK_OK(&ctx, sq_sum(&ctx, y, SQ_ALL_DIMS, 0, &s));
    g0 = ctx.stats.gemm_calls;
    CHECK_OK(&ctx, sq_backward(&ctx, s, NULL));
    CHECK(ctx.stats.weight_grad_gemms - w0 == 3);
    CHECK(ctx.stats.gemm_calls - g0 == 3);
    CHECK(w->grad != NULL);
    sq_tensor *rel[5] = {x, w, b, y, s};
    release_all(5, rel);
    for (int c = 0; c < SQ_MEM_NCAT; c++) CHECK(ctx.mem.cur[SQ_CPU][c] == 0);
}

TEST(conv2d_rejects_bad_input)
{
    sq_ctx ctx;
    sq_ctx_init(&ctx, 105);
    int64_t xs[4] = {2, 3, 5, 5}, ws[4] = {4, 3, 3, 3}, w2[4] = {4, 2, 3, 3}, x3[3] = {3, 5, 5};
    int64_t bs[1] = {5}, big[4] = {4, 3, 8, 3};
    sq_tensor *x = randn(&ctx, SQ_F32, 4, xs), *w = randn(&ctx, SQ_F32, 4, ws);
    sq_tensor *wc = randn(&ctx, SQ_F32, 4, w2), *xr = randn(&ctx, SQ_F32, 3, x3);
    sq_tensor *b = randn(&ctx, SQ_F32, 1, bs), *wb = randn(&ctx, SQ_F32, 4, big);
    sq_tensor *w64 = randn(&ctx, SQ_F64, 4, ws), *y = NULL;
    CHECK_FAIL(&ctx, SQ_ERR_SHAPE, "conv2d: input 3x5x5 and weight 4x3x3x3 must be 4-d",
               sq_conv2d(&ctx, xr, w, NULL, 1, 0, &y));
    CHECK_FAIL(&ctx, SQ_ERR_SHAPE, "conv2d: input 2x3x5x5 has 3 channels, weight 4x2x3x3 expects 2",
               sq_conv2d(&ctx, x, wc, NULL, 1, 0, &y));
    CHECK_FAIL(&ctx, SQ_ERR_ARG, "conv2d: stride 0 must be >= 1", sq_conv2d(&ctx, x, w, NULL, 0, 0, &y));
    CHECK_FAIL(&ctx, SQ_ERR_ARG, "conv2d: pad -1 must be >= 0", sq_conv2d(&ctx, x, w, NULL, 1, -1, &y));
    CHECK_FAIL(&ctx, SQ_ERR_SHAPE, "conv2d: kernel 8x3 larger than input 2x3x5x5 padded by 1",
               sq_conv2d(&ctx, x, wb, NULL, 1, 1, &y));
    CHECK_FAIL(&ctx, SQ_ERR_SHAPE, "conv2d: bias 5 does not match weight 4x3x3x3 (need 4)",
               sq_conv2d(&ctx, x, w, b, 1, 0, &y));
    CHECK_FAIL(&ctx, SQ_ERR_DTYPE, "conv2d: dtypes float32 and float64 differ",
               sq_conv2d(&ctx, x, w64, NULL, 1, 0, &y));
    CHECK_FAIL(&ctx, SQ_ERR_ARG, "conv2d: weight is missing", sq_conv2d(&ctx, x, NULL, NULL, 1, 0, &y));
    CHECK(y == NULL);
    sq_tensor *rel[7] = {x, w, wc, xr, b, wb, w64};
    release_all(7, rel);
    CHECK(ctx.mem.total_cur[SQ_CPU] == 0);
}

/* ---- pooling --------------------------------------------------------------------- */

typedef struct { int max, k, stride, pad; } pool_arg;

static sq_status f_pool(sq_ctx *ctx, sq_tensor **in, void *arg, sq_tensor **out)
{
    pool_arg *a = arg;
    return a->max ? sq_max_pool2d(ctx, in[0], a->k, a->stride, a->pad, out)
                  : sq_avg_pool2d(ctx, in[0], a->k, a->stride, a->pad, out);
}

/* Distinct values 0.1 apart in shuffled order: max-pool stays away from ties. */
static void fill_distinct(sq_ctx *ctx, sq_tensor *t)
{
    int64_t n = sq_tensor_numel(t);
    for (int64_t i = 0; i < n; i++) sq_tensor_set_flat(t, i, 0.1 * (double)i);
    for (int64_t i = n - 1; i > 0; i--) {
        int64_t j = (int64_t)sq_rng_below(&ctx->rng, (uint64_t)i + 1);
        double a = sq_tensor_get_flat(t, i), b = sq_tensor_get_flat(t, j);
        sq_tensor_set_flat(t, i, b);
        sq_tensor_set_flat(t, j, a);
    }
}

TEST(pool_gradcheck)
{
    sq_ctx ctx;
    sq_ctx_init(&ctx, 111);
    int64_t xs[4] = {2, 3, 5, 7};
    pool_arg cases[6] = {{1, 3, 2, 1}, {1, 2, 2, 0}, {1, 3, 1, 1}, {0, 3, 2, 1}, {0, 2, 2, 0}, {0, 3, 1, 1}};
    for (int c = 0; c < 6; c++) {
        sq_tensor *in[1] = {sq_gc_input(&ctx, 4, xs)};
        if (cases[c].max) fill_distinct(&ctx, in[0]);
        double err = sq_gradcheck(&ctx, f_pool, 1, in, &cases[c], 1e-6);
        CHECK_MSG(err < GC_TOL, "%s k%d s%d p%d gradcheck error %g", cases[c].max ? "max" : "avg",
                  cases[c].k, cases[c].stride, cases[c].pad, err);
        sq_tensor_release(in[0]);
    }
    CHECK(ctx.mem.total_cur[SQ_CPU] == 0);
}

/* direct pooling: max over real elements, or sum / k^2 with zero padding */
static void ref_pool(const sq_tensor *x, int max, int k, int s, int p, int64_t Ho, int64_t Wo,
                     double *ref)
{
    int64_t N = x->shape[0], C = x->shape[1], H = x->shape[2], W = x->shape[3];
    for (int64_t n = 0; n < N; n++)
        for (int64_t c = 0; c < C; c++)
            for (int64_t oy = 0; oy < Ho; oy++)
                for (int64_t ox = 0; ox < Wo; ox++) {
                    double acc = max ? -INFINITY : 0.0;
                    for (int i = 0; i < k; i++)
                        for (int j = 0; j < k; j++) {
                            int64_t y = oy * s - p + i, xx = ox * s - p + j;
                            if (y < 0 || y >= H || xx < 0 || xx >= W) continue;
                            double v = at4(x, n, c, y, xx);
                            acc = max ? fmax(acc, v) : acc + v;
                        }
                    ref[((n * C + c) * Ho + oy) * Wo + ox] = max ? acc : acc / (k * k);
                }
}

TEST(pool_matches_reference_noncontiguous_f32)
{
    sq_ctx ctx;
    sq_ctx_init(&ctx, 112);
    int64_t xs[4] = {3, 5, 7, 9};
    sq_tensor *x = nchw_view(&ctx, SQ_F32, xs), *y = NULL;
    CHECK(x && !sq_tensor_is_contiguous(x));
    double *ref = malloc(3 * 5 * 8 * 10 * sizeof *ref); /* largest output: k2 s1 p1 */
    pool_arg cases[4] = {{1, 3, 2, 1}, {0, 3, 2, 1}, {1, 2, 2, 0}, {0, 2, 1, 1}};
    for (int c = 0; c < 4; c++) {
        pool_arg a = cases[c];
        int64_t Ho = (7 + 2 * a.pad - a.k) / a.stride + 1, Wo = (9 + 2 * a.pad - a.k) / a.stride + 1;
        sq_tensor *in[1] = {x};
        CHECK_OK(&ctx, f_pool(&ctx, in, &a, &y));
        CHECK(y && y->shape[2] == Ho && y->shape[3] == Wo);
        ref_pool(x, a.max, a.k, a.stride, a.pad, Ho, Wo, ref);
        double err = max_diff(y, ref);
        CHECK_MSG(err < POOL_TOL, "%s k%d s%d p%d max diff %g", a.max ? "max" : "avg", a.k, a.stride,
                  a.pad, err);
        sq_tensor_release(y);
        y = NULL;
    }
    free(ref);
    sq_tensor_release(x);
    CHECK(ctx.mem.total_cur[SQ_CPU] == 0);
}

TEST(max_pool_routes_gradient_to_argmax)
{
    sq_ctx ctx;
    sq_ctx_init(&ctx, 113);
    int64_t xs[4] = {1, 1, 2, 4};
    sq_tensor *x = NULL, *y = NULL, *s = NULL;
    CHECK_OK(&ctx, sq_tensor_zeros(&ctx, SQ_F32, 4, xs, &x));
    float v[8] = {1, 5, 2, 0, 3, -1, 7, 6};
    for (int i = 0; i < 8; i++) sq_tensor_set_flat(x, i, v[i]);
    x->requires_grad = 1;
    CHECK_OK(&ctx, sq_max_pool2d(&ctx, x, 2, 2, 0, &y));
    CHECK(sq_tensor_get_flat(y, 0) == 5 && sq_tensor_get_flat(y, 1) == 7);
    CHECK(ctx.mem.cur[SQ_CPU][SQ_MEM_SAVED] == 2 * 8); /* the int64 argmax indices */
    CHECK_OK(&ctx, sq_sum(&ctx, y, SQ_ALL_DIMS, 0, &s));
    CHECK_OK(&ctx, sq_backward(&ctx, s, NULL));
    float want[8] = {0, 1, 0, 0, 0, 0, 1, 0};
    for (int i = 0; i < 8; i++) CHECK(sq_tensor_get_flat(x->grad, i) == want[i]);
    sq_tensor *rel[3] = {x, y, s};
    release_all(3, rel);
    CHECK(ctx.mem.total_cur[SQ_CPU] == 0);
}

TEST(pool_rejects_bad_input)
{
    sq_ctx ctx;
    sq_ctx_init(&ctx, 114);
    int64_t xs[4] = {1, 2, 3, 3}, x3[3] = {2, 3, 3}, si[4] = {1, 1, 2, 2};
    sq_tensor *x = randn(&ctx, SQ_F32, 4, xs), *xr = randn(&ctx, SQ_F32, 3, x3), *xi = NULL, *y = NULL;
    CHECK_OK(&ctx, sq_tensor_zeros(&ctx, SQ_I32, 4, si, &xi));
    CHECK_FAIL(&ctx, SQ_ERR_SHAPE, "max_pool2d: input 2x3x3 must be 4-d", sq_max_pool2d(&ctx, xr, 2, 2, 0, &y));
    CHECK_FAIL(&ctx, SQ_ERR_ARG, "max_pool2d: kernel 0 must be >= 1", sq_max_pool2d(&ctx, x, 0, 1, 0, &y));
    CHECK_FAIL(&ctx, SQ_ERR_ARG, "avg_pool2d: stride 0 must be >= 1", sq_avg_pool2d(&ctx, x, 2, 0, 0, &y));
    CHECK_FAIL(&ctx, SQ_ERR_ARG, "max_pool2d: pad 2 outside [0, kernel/2 = 1]", sq_max_pool2d(&ctx, x, 3, 1, 2, &y));
    CHECK_FAIL(&ctx, SQ_ERR_ARG, "avg_pool2d: pad -1 outside", sq_avg_pool2d(&ctx, x, 3, 1, -1, &y));
    CHECK_FAIL(&ctx, SQ_ERR_SHAPE, "avg_pool2d: kernel 4 larger than input 1x2x3x3 padded by 0",
               sq_avg_pool2d(&ctx, x, 4, 1, 0, &y));
    CHECK_FAIL(&ctx, SQ_ERR_DTYPE, "max_pool2d: input must be float32 or float64, got int32",
               sq_max_pool2d(&ctx, xi, 2, 2, 0, &y));
    CHECK(y == NULL);
    sq_tensor *rel[3] = {x, xr, xi};
    release_all(3, rel);
    CHECK(ctx.mem.total_cur[SQ_CPU] == 0);
}

/* ---- a small CNN step: conv -> relu -> pool -> conv -> avg pool; memory back to 0 ---- */

TEST(cnn_graph_releases_all_memory)
{
    sq_ctx ctx;
    sq_ctx_init(&ctx, 121);
    int64_t xs[4] = {4, 1, 12, 12}, w1s[4] = {6, 1, 3, 3}, w2s[4] = {8, 6, 3, 3}, b1s[1] = {6};
    sq_tensor *x = randn(&ctx, SQ_F32, 4, xs), *w1 = randn(&ctx, SQ_F32, 4, w1s);
    sq_tensor *w2 = randn(&ctx, SQ_F32, 4, w2s), *b1 = randn(&ctx, SQ_F32, 1, b1s);
    w1->requires_grad = w2->requires_grad = b1->requires_grad = 1;
    sq_tensor *c1 = NULL, *r1 = NULL, *p1 = NULL, *c2 = NULL, *p2 = NULL, *s = NULL;
    CHECK_OK(&ctx, sq_conv2d(&ctx, x, w1, b1, 1, 1, &c1));  /* 4x6x12x12 */
    CHECK_OK(&ctx, sq_unary(&ctx, SQ_UN_RELU, c1, &r1));
    CHECK_OK(&ctx, sq_max_pool2d(&ctx, r1, 2, 2, 0, &p1)); /* 4x6x6x6 */
    CHECK_OK(&ctx, sq_conv2d(&ctx, p1, w2, NULL, 2, 1, &c2)); /* 4x8x3x3 */
    CHECK_OK(&ctx, sq_avg_pool2d(&ctx, c2, 3, 1, 0, &p2));   /* 4x8x1x1 */
    CHECK(p2 && p2->shape[2] == 1 && p2->shape[3] == 1);
    CHECK_OK(&ctx, sq_sum(&ctx, p2, SQ_ALL_DIMS, 0, &s));
    CHECK_OK(&ctx, sq_backward(&ctx, s, NULL));
    CHECK(w1->grad && w2->grad && b1->grad && x->grad == NULL);
    CHECK(ctx.mem.cur[SQ_CPU][SQ_MEM_SAVED] == 0 && ctx.mem.cur[SQ_CPU][SQ_MEM_WORKSPACE] == 0);
    sq_tensor *rel[10] = {x, w1, w2, b1, c1, r1, p1, c2, p2, s};
    release_all(10, rel);
    CHECK(ctx.mem.total_cur[SQ_CPU] == 0);
}

SQ_TEST_MAIN_BEGIN
RUN(conv2d_gradcheck);
RUN(conv2d_matches_reference_noncontiguous_f32);
RUN(conv2d_f32_backward_matches_f64);
RUN(conv2d_frozen_weight_issues_no_dw_gemm);
RUN(conv2d_rejects_bad_input);
RUN(pool_gradcheck);
RUN(pool_matches_reference_noncontiguous_f32);
RUN(max_pool_routes_gradient_to_argmax);
RUN(pool_rejects_bad_input);
RUN(cnn_graph_releases_all_memory);
SQ_TEST_MAIN_END
