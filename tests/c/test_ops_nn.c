/* test_ops_nn.c — softmax family, cross-entropy, layer norm, affine,
 * embedding, dropout, concat, index_select and gather: float64 gradient
 * checks, float32 comparisons against naive loops on odd sizes and
 * non-contiguous views, error messages, and exact memory release. */
#include "sq_gradcheck.h"
#include "sq_test.h"

#include <stdlib.h>

#define GC_TOL 1e-6   /* finite differences in float64, eps 1e-6 */
#define F32_TOL 1e-5  /* float32 op vs double reference, O(1) values */

/* ---- helpers --------------------------------------------------------------- */

/* A non-contiguous view of the given shape: the last two dims of a random
 * tensor, transposed.  The view holds the only reference to its storage. */
static sq_tensor *noncontig(sq_ctx *ctx, sq_dtype dt, int nd, const int64_t *shape)
{
    int64_t s[SQ_MAX_DIMS];
    memcpy(s, shape, (size_t)nd * sizeof *s);
    s[nd - 1] = shape[nd - 2];
    s[nd - 2] = shape[nd - 1];
    sq_tensor *base = NULL, *v = NULL;
    if (sq_tensor_randn(ctx, dt, nd, s, 0, 1, &base) != SQ_OK) return NULL;
    if (sq_transpose(ctx, base, nd - 2, nd - 1, &v) != SQ_OK) v = NULL;
    sq_tensor_release(base);
    return v;
}

static sq_tensor *randn(sq_ctx *ctx, sq_dtype dt, int nd, const int64_t *shape)
{
    sq_tensor *t = NULL;
    if (sq_tensor_randn(ctx, dt, nd, shape, 0, 1, &t) != SQ_OK) return NULL;
    return t;
}

/* An index tensor with entries drawn from [0, hi). */
static sq_tensor *rand_index(sq_ctx *ctx, sq_dtype dt, int nd, const int64_t *shape, int64_t hi)
{
    sq_tensor *t = NULL;
    if (sq_tensor_empty(ctx, dt, nd, shape, &t) != SQ_OK) return NULL;
    int64_t n = sq_tensor_numel(t);
    for (int64_t i = 0; i < n; i++) sq_tensor_set_flat(t, i, (double)sq_rng_below(&ctx->rng, (uint64_t)hi));
    return t;
}

/* largest |t[i] - ref[i]| over the flat row-major order */
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

static void release_all(int n, sq_tensor **ts)
{
    for (int i = 0; i < n; i++) sq_tensor_release(ts[i]);
}

/* ---- softmax / log_softmax ---------------------------------------------------- */

typedef struct { int causal, logp, exp_after; } sm_arg;

static sq_status f_softmax(sq_ctx *ctx, sq_tensor **in, void *arg, sq_tensor **out)
{
    sm_arg *a = arg;
    if (!a->logp) return sq_softmax(ctx, in[0], a->causal, out);
    if (!a->exp_after) return sq_log_softmax(ctx, in[0], a->causal, out);
    /* causal log_softmax has -inf above the diagonal: check it through exp */
    sq_tensor *l;
    SQ_TRY(sq_log_softmax(ctx, in[0], a->causal, &l));
    sq_status st = sq_unary(ctx, SQ_UN_EXP, l, out);
    sq_tensor_release(l);
    return st;
}

TEST(softmax_gradcheck)
{
    sq_ctx ctx;
    sq_ctx_init(&ctx, 11);
    int64_t s[3] = {2, 3, 5}, sc[3] = {2, 4, 4};
    sm_arg cases[5] = {{0, 0, 0}, {1, 0, 0}, {0, 1, 0}, {1, 1, 1}, {0, 1, 1}};
    for (int c = 0; c < 5; c++) {
        sq_tensor *in[1] = {sq_gc_input(&ctx, 3, cases[c].causal ? sc : s)};
        double err = sq_gradcheck(&ctx, f_softmax, 1, in, &cases[c], 1e-6);
        CHECK_MSG(err < GC_TOL, "case %d (causal %d log %d) gradcheck error %g", c, cases[c].causal,
                  cases[c].logp, err);
        sq_tensor_release(in[0]);
    }
    CHECK(ctx.mem.total_cur[SQ_CPU] == 0);
}

/* naive softmax of row-major rows (R,D) read through get_flat */
static void ref_softmax(const sq_tensor *x, int causal, int logp, double *out)
{
    int64_t D = x->shape[x->ndim - 1], R = sq_tensor_numel(x) / D;
    for (int64_t r = 0; r < R; r++) {
        int64_t n = causal ? r % D + 1 : D;
        double m = -INFINITY, s = 0;
        for (int64_t j = 0; j < n; j++) m = fmax(m, sq_tensor_get_flat(x, r * D + j));
        for (int64_t j = 0; j < n; j++) s += exp(sq_tensor_get_flat(x, r * D + j) - m);
        for (int64_t j = 0; j < D; j++) {
            double v = sq_tensor_get_flat(x, r * D + j);
            out[r * D + j] = j >= n ? (logp ? -INFINITY : 0.0)
                                    : logp ? v - m - log(s) : exp(v - m) / s;
        }
    }
}

TEST(softmax_matches_reference_noncontiguous_f32)
{
    sq_ctx ctx;
    sq_ctx_init(&ctx, 12);
    int64_t s[3] = {3, 7, 7}, s2[3] = {3, 5, 9};
    for (int c = 0; c < 4; c++) {
        int causal = c & 1, logp = c >> 1;
        sq_tensor *x = noncontig(&ctx, SQ_F32, 3, causal ? s : s2), *y = NULL;
        CHECK(!sq_tensor_is_contiguous(x));
        sq_tensor_set_flat(x, 3, 40.0f); /* large logit: needs the max subtraction */
        CHECK_OK(&ctx, logp ? sq_log_softmax(&ctx, x, causal, &y) : sq_softmax(&ctx, x, causal, &y));
        double *ref = malloc((size_t)sq_tensor_numel(x) * sizeof *ref);
        ref_softmax(x, causal, logp, ref);
        int64_t n = sq_tensor_numel(x);
        double worst = 0;
        for (int64_t i = 0; i < n; i++) {
            double a = sq_tensor_get_flat(y, i), b = ref[i];
            double d = (isinf(a) && isinf(b) && a == b) ? 0 : fabs(a - b);
            if (!(d <= worst)) worst = d;
        }
        CHECK_MSG(worst < F32_TOL, "case causal %d log %d: max diff %g", causal, logp, worst);
        free(ref);
        sq_tensor_release(x);
        sq_tensor_release(y);
    }
    CHECK(ctx.mem.total_cur[SQ_CPU] == 0);
}

TEST(causal_softmax_rows_sum_to_one_zero_above_diagonal)
{
    sq_ctx ctx;
    sq_ctx_init(&ctx, 13);
    int64_t s[3] = {2, 6, 6};
    sq_tensor *x = randn(&ctx, SQ_F32, 3, s), *y = NULL, *l = NULL;
    CHECK_OK(&ctx, sq_softmax(&ctx, x, 1, &y));
    CHECK_OK(&ctx, sq_log_softmax(&ctx, x, 1, &l));
    for (int b = 0; b < 2; b++)
        for (int i = 0; i < 6; i++) {
            double sum = 0;
            for (int j = 0; j < 6; j++) {
                double p = sq_tensor_get_flat(y, (b * 6 + i) * 6 + j);
                double lp = sq_tensor_get_flat(l, (b * 6 + i) * 6 + j);
                if (j > i) {
                    CHECK(p == 0.0);
                    CHECK(isinf(lp) && lp < 0);
                } else {
                    CHECK(p > 0.0);
                    CHECK_NEAR(lp, log(p), 1e-5);
                }
                sum += p;
            }
            CHECK_NEAR(sum, 1.0, 1e-6);
        }
    CHECK_NEAR(sq_tensor_get_flat(y, 0), 1.0, 0); /* row 0 sees only itself */
    sq_tensor_release(x);
    sq_tensor_release(y);
    sq_tensor_release(l);
    CHECK(ctx.mem.total_cur[SQ_CPU] == 0);
}

TEST(softmax_rejects_bad_input_and_frees_graph)
{
    sq_ctx ctx;
    sq_ctx_init(&ctx, 14);
    int64_t s[2] = {3, 4}, si[1] = {4};
    sq_tensor *x = randn(&ctx, SQ_F32, 2, s), *xi = NULL, *y = NULL, *sc = NULL;
    CHECK_OK(&ctx, sq_tensor_zeros(&ctx, SQ_I64, 1, si, &xi));
    CHECK_OK(&ctx, sq_tensor_zeros(&ctx, SQ_F32, 0, NULL, &sc));
    CHECK_FAIL(&ctx, SQ_ERR_SHAPE, "softmax: causal mask needs a (...,T,T) input, got 3x4",
               sq_softmax(&ctx, x, 1, &y));
    CHECK_FAIL(&ctx, SQ_ERR_SHAPE, "log_softmax: causal mask needs a (...,T,T) input, got 3x4",
               sq_log_softmax(&ctx, x, 1, &y));
    CHECK_FAIL(&ctx, SQ_ERR_DTYPE, "softmax: input must be float32 or float64, got int64",
               sq_softmax(&ctx, xi, 0, &y));
    CHECK_FAIL(&ctx, SQ_ERR_SHAPE, "softmax: input is a scalar", sq_softmax(&ctx, sc, 0, &y));
    CHECK_FAIL(&ctx, SQ_ERR_ARG, "softmax: input is missing", sq_softmax(&ctx, NULL, 0, &y));
    CHECK(y == NULL);
    /* the node saves an alias of the output, not the output: no cycle, so
     * dropping the output without a backward pass frees everything */
    x->requires_grad = 1;
    CHECK_OK(&ctx, sq_softmax(&ctx, x, 0, &y));
    CHECK(y->grad_fn && y->grad_fn->saved[0] && y->grad_fn->saved[0] != y);
    CHECK(ctx.mem.cur[SQ_CPU][SQ_MEM_SAVED] == 3 * 4 * 4);
    sq_tensor_release(y);
    CHECK(ctx.mem.cur[SQ_CPU][SQ_MEM_SAVED] == 0);
    sq_tensor_release(x);
    sq_tensor_release(xi);
    sq_tensor_release(sc);
    CHECK(ctx.mem.total_cur[SQ_CPU] == 0);
}

/* ---- cross-entropy -------------------------------------------------------------- */

static sq_status f_xent(sq_ctx *ctx, sq_tensor **in, void *arg, sq_tensor **out)
{
    return sq_cross_entropy(ctx, in[0], arg, out);
}

TEST(cross_entropy_gradcheck)
{
    sq_ctx ctx;
    sq_ctx_init(&ctx, 21);
    int64_t s[2] = {5, 7}, n[1] = {5};
    for (int dt = 0; dt < 2; dt++) {
        sq_tensor *tg = rand_index(&ctx, dt ? SQ_I32 : SQ_I64, 1, n, 7);
        sq_tensor *in[1] = {sq_gc_input(&ctx, 2, s)};
        double err = sq_gradcheck(&ctx, f_xent, 1, in, tg, 1e-6);
        CHECK_MSG(err < GC_TOL, "cross_entropy (%s targets) gradcheck error %g",
                  sq_dtype_name(tg->dtype), err);
        sq_tensor_release(in[0]);
        sq_tensor_release(tg);
    }
    CHECK(ctx.mem.total_cur[SQ_CPU] == 0);
}

TEST(cross_entropy_matches_reference_noncontiguous_f32)
{
    sq_ctx ctx;
    sq_ctx_init(&ctx, 22);
    int64_t s[2] = {9, 11}, n[1] = {9};
    sq_tensor *x = noncontig(&ctx, SQ_F32, 2, s), *tg = rand_index(&ctx, SQ_I32, 1, n, 11), *l = NULL;
    sq_tensor_set_flat(x, 5, 60.0); /* would overflow exp without the max shift */
    CHECK(!sq_tensor_is_contiguous(x));
    x->requires_grad = 1;
    CHECK_OK(&ctx, sq_cross_entropy(&ctx, x, tg, &l));
    CHECK(l && l->ndim == 0);
    double ref = 0;
    for (int64_t r = 0; r < 9; r++) {
        double m = -INFINITY, se = 0;
        for (int64_t j = 0; j < 11; j++) m = fmax(m, sq_tensor_get_flat(x, r * 11 + j));
        for (int64_t j = 0; j < 11; j++) se += exp(sq_tensor_get_flat(x, r * 11 + j) - m);
        ref += m + log(se) - sq_tensor_get_flat(x, r * 11 + (int64_t)sq_tensor_get_flat(tg, r));
    }
    ref /= 9;
    CHECK_NEAR(sq_tensor_get_flat(l, 0), ref, 1e-5 * fmax(1, fabs(ref)));
    /* gradient: (softmax - onehot) / N */
    CHECK_OK(&ctx, sq_backward(&ctx, l, NULL));
    double worst = 0;
    for (int64_t r = 0; r < 9; r++) {
        double m = -INFINITY, se = 0;
        for (int64_t j = 0; j < 11; j++) m = fmax(m, sq_tensor_get_flat(x, r * 11 + j));
        for (int64_t j = 0; j < 11; j++) se += exp(sq_tensor_get_flat(x, r * 11 + j) - m);
        for (int64_t j = 0; j < 11; j++) {
            double g = exp(sq_tensor_get_flat(x, r * 11 + j) - m) / se;
            if (j == (int64_t)sq_tensor_get_flat(tg, r)) g -= 1;
            worst = fmax(worst, fabs(g / 9 - sq_tensor_get_flat(x->grad, r * 11 + j)));
        }
    }
    CHECK_MSG(worst < 1e-6, "cross_entropy grad max diff %g", worst);
    sq_tensor_release(l);
    sq_tensor_release(x);
    sq_tensor_release(tg);
    CHECK(ctx.mem.total_cur[SQ_CPU] == 0);
}

TEST(cross_entropy_rejects_bad_targets)
{
    sq_ctx ctx;
    sq_ctx_init(&ctx, 23);
    int64_t s[2] = {4, 3}, n[1] = {4}, n5[1] = {5};
    sq_tensor *x = randn(&ctx, SQ_F32, 2, s), *tg = NULL, *t5 = NULL, *tf = NULL;
    sq_tensor *l = NULL;
    CHECK_OK(&ctx, sq_tensor_zeros(&ctx, SQ_I64, 1, n, &tg));
    CHECK_OK(&ctx, sq_tensor_zeros(&ctx, SQ_I64, 1, n5, &t5));
    CHECK_OK(&ctx, sq_tensor_zeros(&ctx, SQ_F32, 1, n, &tf));
    sq_tensor_set_flat(tg, 2, 3);
    CHECK_FAIL(&ctx, SQ_ERR_ARG, "cross_entropy: target 3 in row 2 outside [0, 3)",
               sq_cross_entropy(&ctx, x, tg, &l));
    sq_tensor_set_flat(tg, 2, -1);
    CHECK_FAIL(&ctx, SQ_ERR_ARG, "target -1 in row 2", sq_cross_entropy(&ctx, x, tg, &l));
    CHECK_FAIL(&ctx, SQ_ERR_SHAPE, "cross_entropy: logits 4x3 and targets 5 do not fit",
               sq_cross_entropy(&ctx, x, t5, &l));
    CHECK_FAIL(&ctx, SQ_ERR_DTYPE, "cross_entropy: targets must be int64 or int32, got float32",
               sq_cross_entropy(&ctx, x, tf, &l));
    CHECK_FAIL(&ctx, SQ_ERR_SHAPE, "logits 4 and targets 4 do not fit",
               sq_cross_entropy(&ctx, tf, tg, &l));
    CHECK(l == NULL);
    sq_tensor_release(x);
    sq_tensor_release(tg);
    sq_tensor_release(t5);
    sq_tensor_release(tf);
    CHECK(ctx.mem.total_cur[SQ_CPU] == 0);
}

/* ---- layer norm ------------------------------------------------------------------- */

typedef struct { int has_w, has_b; } ln_arg;

static sq_status f_ln(sq_ctx *ctx, sq_tensor **in, void *arg, sq_tensor **out)
{
    ln_arg *a = arg;
    return sq_layer_norm(ctx, in[0], a->has_w ? in[1] : NULL, a->has_b ? in[2] : NULL, 1e-5, out);
}

TEST(layer_norm_gradcheck)
{
    sq_ctx ctx;
    sq_ctx_init(&ctx, 31);
    int64_t s[3] = {2, 3, 6}, d[1] = {6};
    ln_arg cases[4] = {{1, 1}, {1, 0}, {0, 1}, {0, 0}};
    for (int c = 0; c < 4; c++) {
        sq_tensor *in[3] = {sq_gc_input(&ctx, 3, s), sq_gc_input(&ctx, 1, d), sq_gc_input(&ctx, 1, d)};
        if (!cases[c].has_w) in[1]->requires_grad = 0;
        if (!cases[c].has_b) in[2]->requires_grad = 0;
        double err = sq_gradcheck(&ctx, f_ln, 3, in, &cases[c], 1e-6);
        CHECK_MSG(err < GC_TOL, "layer_norm case %d gradcheck error %g", c, err);
        if (cases[c].has_w || cases[c].has_b) { /* frozen input: only parameters get gradients */
            in[0]->requires_grad = 0;
            err = sq_gradcheck(&ctx, f_ln, 3, in, &cases[c], 1e-6);
            CHECK_MSG(err < GC_TOL, "layer_norm case %d (frozen x) gradcheck error %g", c, err);
        }
        release_all(3, in);
    }
    CHECK(ctx.mem.total_cur[SQ_CPU] == 0);
}

TEST(layer_norm_matches_reference_noncontiguous_f32)
{
    sq_ctx ctx;
    sq_ctx_init(&ctx, 32);
    int64_t s[3] = {3, 5, 7}, d[1] = {7};
    sq_tensor *x = noncontig(&ctx, SQ_F32, 3, s), *w = randn(&ctx, SQ_F32, 1, d);
    sq_tensor *b = randn(&ctx, SQ_F32, 1, d), *y = NULL;
    for (int64_t i = 0; i < sq_tensor_numel(x); i++) /* a large offset tests the two-pass variance */
        sq_tensor_set_flat(x, i, sq_tensor_get_flat(x, i) + 100.0);
    CHECK_OK(&ctx, sq_layer_norm(&ctx, x, w, b, 1e-5, &y));
    double ref[3 * 5 * 7];
    for (int64_t r = 0; r < 15; r++) {
        double mu = 0, var = 0;
        for (int j = 0; j < 7; j++) mu += sq_tensor_get_flat(x, r * 7 + j) / 7;
        for (int j = 0; j < 7; j++) var += pow(sq_tensor_get_flat(x, r * 7 + j) - mu, 2) / 7;
        for (int j = 0; j < 7; j++)
            ref[r * 7 + j] = (sq_tensor_get_flat(x, r * 7 + j) - mu) / sqrt(var + 1e-5) *
                                 sq_tensor_get_flat(w, j) + sq_tensor_get_flat(b, j);
    }
    double err = max_diff(y, ref);
    CHECK_MSG(err < 1e-4, "layer_norm max diff %g (float32, inputs near 100)", err);
    sq_tensor_release(x);
    sq_tensor_release(w);
    sq_tensor_release(b);
    sq_tensor_release(y);
    CHECK(ctx.mem.total_cur[SQ_CPU] == 0);
}

TEST(layer_norm_rejects_bad_params)
{
    sq_ctx ctx;
    sq_ctx_init(&ctx, 33);
    int64_t s[2] = {3, 4}, d5[1] = {5}, d4[1] = {4};
    sq_tensor *x = randn(&ctx, SQ_F32, 2, s), *w5 = randn(&ctx, SQ_F32, 1, d5);
    sq_tensor *w64 = randn(&ctx, SQ_F64, 1, d4), *y = NULL;
    CHECK_FAIL(&ctx, SQ_ERR_SHAPE, "layer_norm: weight 5 does not match input 3x4 (need 4)",
               sq_layer_norm(&ctx, x, w5, NULL, 1e-5, &y));
    CHECK_FAIL(&ctx, SQ_ERR_SHAPE, "layer_norm: bias 5 does not match input 3x4",
               sq_layer_norm(&ctx, x, NULL, w5, 1e-5, &y));
    CHECK_FAIL(&ctx, SQ_ERR_DTYPE, "layer_norm: dtypes float32 and float64 differ",
               sq_layer_norm(&ctx, x, w64, NULL, 1e-5, &y));
    CHECK_FAIL(&ctx, SQ_ERR_ARG, "layer_norm: eps -1 must be finite and >= 0",
               sq_layer_norm(&ctx, x, NULL, NULL, -1, &y));
    CHECK(y == NULL);
    sq_tensor_release(x);
    sq_tensor_release(w5);
    sq_tensor_release(w64);
    CHECK(ctx.mem.total_cur[SQ_CPU] == 0);
}

/* ---- affine ---------------------------------------------------------------------- */

static sq_status f_affine(sq_ctx *ctx, sq_tensor **in, void *arg, sq_tensor **out)
{
    return sq_affine(ctx, in[0], in[1], arg ? in[2] : NULL, out);
}

TEST(affine_gradcheck_and_reference)
{
    sq_ctx ctx;
    sq_ctx_init(&ctx, 41);
    int64_t s[3] = {2, 3, 5}, d[1] = {5};
    for (int c = 0; c < 2; c++) {
        sq_tensor *in[3] = {sq_gc_input(&ctx, 3, s), sq_gc_input(&ctx, 1, d), sq_gc_input(&ctx, 1, d)};
        double err = sq_gradcheck(&ctx, f_affine, 3, in, c ? &ctx : NULL, 1e-6);
        CHECK_MSG(err < GC_TOL, "affine (beta %d) gradcheck error %g", c, err);
        in[1]->requires_grad = 0; /* frozen alpha */
        err = sq_gradcheck(&ctx, f_affine, 3, in, c ? &ctx : NULL, 1e-6);
        CHECK_MSG(err < GC_TOL, "affine (beta %d, frozen alpha) gradcheck error %g", c, err);
        release_all(3, in);
    }
    int64_t s2[3] = {3, 5, 7}, d7[1] = {7};
    sq_tensor *x = noncontig(&ctx, SQ_F32, 3, s2), *a = randn(&ctx, SQ_F32, 1, d7);
    sq_tensor *b = randn(&ctx, SQ_F32, 1, d7), *y = NULL;
    CHECK_OK(&ctx, sq_affine(&ctx, x, a, b, &y));
    double ref[105];
    for (int i = 0; i < 105; i++)
        ref[i] = sq_tensor_get_flat(x, i) * sq_tensor_get_flat(a, i % 7) + sq_tensor_get_flat(b, i % 7);
    double err = max_diff(y, ref);
    CHECK_MSG(err < F32_TOL, "affine max diff %g", err);
    sq_tensor *y2 = NULL, *x3 = randn(&ctx, SQ_F32, 3, (int64_t[]){5, 7, 3}), *xi = NULL;
    CHECK_OK(&ctx, sq_tensor_zeros(&ctx, SQ_I32, 1, d7, &xi));
    CHECK_FAIL(&ctx, SQ_ERR_SHAPE, "affine: alpha 7 does not match input 5x7x3 (need 3)",
               sq_affine(&ctx, x3, a, NULL, &y2));
    CHECK_FAIL(&ctx, SQ_ERR_DTYPE, "affine: beta must be float32 or float64, got int32",
               sq_affine(&ctx, x, a, xi, &y2));
    CHECK_FAIL(&ctx, SQ_ERR_ARG, "affine: alpha is missing", sq_affine(&ctx, x, NULL, b, &y2));
    CHECK(y2 == NULL);
    sq_tensor *rel[6] = {x, a, b, y, x3, xi};
    release_all(6, rel);
    CHECK(ctx.mem.total_cur[SQ_CPU] == 0);
}

/* ---- embedding ------------------------------------------------------------------- */

static sq_status f_embed(sq_ctx *ctx, sq_tensor **in, void *arg, sq_tensor **out)
{
    return sq_embedding(ctx, arg, in[0], out);
}

TEST(embedding_gradcheck_reference_errors)
{
    sq_ctx ctx;
    sq_ctx_init(&ctx, 51);
    int64_t ws[2] = {6, 4}, is[2] = {2, 5};
    sq_tensor *idx = rand_index(&ctx, SQ_I64, 2, is, 6);
    sq_tensor_set_flat(idx, 0, 3); /* a repeated index: its gradient rows add up */
    sq_tensor_set_flat(idx, 7, 3);
    sq_tensor *in[1] = {sq_gc_input(&ctx, 2, ws)};
    double err = sq_gradcheck(&ctx, f_embed, 1, in, idx, 1e-6);
    CHECK_MSG(err < GC_TOL, "embedding gradcheck error %g", err);
    /* int32 indices through a non-contiguous (transposed) view, float32 weight */
    int64_t ws2[2] = {9, 7}, ist[2] = {5, 3};
    sq_tensor *w = randn(&ctx, SQ_F32, 2, ws2), *ib = rand_index(&ctx, SQ_I32, 2, ist, 9);
    sq_tensor *iv = NULL, *y = NULL;
    CHECK_OK(&ctx, sq_transpose(&ctx, ib, 0, 1, &iv));
    CHECK_OK(&ctx, sq_embedding(&ctx, iv, w, &y));
    CHECK(y && y->ndim == 3 && y->shape[0] == 3 && y->shape[1] == 5 && y->shape[2] == 7);
    double ref[3 * 5 * 7];
    for (int i = 0; i < 15; i++)
        for (int j = 0; j < 7; j++)
            ref[i * 7 + j] = sq_tensor_get_flat(w, (int64_t)sq_tensor_get_flat(iv, i) * 7 + j);
    CHECK_MSG(max_diff(y, ref) == 0, "embedding copy differs");
    sq_tensor *y2 = NULL, *w1 = NULL, *fi = NULL;
    sq_tensor_set_flat(ib, 4, 9);
    CHECK_FAIL(&ctx, SQ_ERR_ARG, "embedding: index 9 at position 4 outside [0, 9) for weight 9x7",
               sq_embedding(&ctx, ib, w, &y2));
    sq_tensor_set_flat(ib, 4, -2);
    CHECK_FAIL(&ctx, SQ_ERR_ARG, "index -2 at position 4", sq_embedding(&ctx, ib, w, &y2));
    CHECK_OK(&ctx, sq_tensor_zeros(&ctx, SQ_F32, 1, ws2, &w1));
    CHECK_OK(&ctx, sq_tensor_zeros(&ctx, SQ_F32, 1, ws2, &fi));
    CHECK_FAIL(&ctx, SQ_ERR_SHAPE, "embedding: weight 9 must be 2-d", sq_embedding(&ctx, idx, w1, &y2));
    CHECK_FAIL(&ctx, SQ_ERR_DTYPE, "embedding: indices must be int64 or int32, got float32",
               sq_embedding(&ctx, fi, w, &y2));
    CHECK(y2 == NULL);
    sq_tensor *rel[8] = {idx, in[0], w, ib, iv, y, w1, fi};
    release_all(8, rel);
    CHECK(ctx.mem.total_cur[SQ_CPU] == 0);
}

/* ---- dropout --------------------------------------------------------------------- */

static sq_status f_dropout(sq_ctx *ctx, sq_tensor **in, void *arg, sq_tensor **out)
{
    (void)arg;
    sq_rng_seed(&ctx->rng, 77); /* the same mask on every evaluation */
    return sq_dropout(ctx, in[0], 0.3, 1, out);
}

TEST(dropout_gradcheck_statistics_errors)
{
    sq_ctx ctx;
    sq_ctx_init(&ctx, 61);
    int64_t s[2] = {4, 5};
    sq_tensor *in[1] = {sq_gc_input(&ctx, 2, s)};
    double err = sq_gradcheck(&ctx, f_dropout, 1, in, NULL, 1e-6);
    CHECK_MSG(err < GC_TOL, "dropout gradcheck error %g", err);
    /* statistics: about p of the entries are zero, the rest scaled by 1/(1-p) */
    int64_t big[1] = {20000};
    sq_tensor *x = NULL, *y = NULL, *y2 = NULL;
    CHECK_OK(&ctx, sq_tensor_full(&ctx, SQ_F32, 1, big, 2.0, &x));
    CHECK_OK(&ctx, sq_dropout(&ctx, x, 0.25, 1, &y));
    int zeros = 0, other = 0;
    for (int64_t i = 0; i < big[0]; i++) {
        double v = sq_tensor_get_flat(y, i);
        if (v == 0) zeros++;
        else if (fabs(v - 2.0 / 0.75) > 1e-6) other++;
    }
    CHECK_MSG(fabs(zeros / 20000.0 - 0.25) < 0.015, "dropped fraction %g", zeros / 20000.0);
    CHECK(other == 0);
    /* a non-contiguous float32 view: every entry is 0 or x / (1 - p) */
    int64_t s2[2] = {5, 7};
    sq_tensor *xv = noncontig(&ctx, SQ_F32, 2, s2), *yv = NULL, *xi = NULL;
    CHECK_OK(&ctx, sq_dropout(&ctx, xv, 0.5, 1, &yv));
    int bad = 0;
    for (int64_t i = 0; i < 35; i++) {
        double v = sq_tensor_get_flat(yv, i), want = 2.0 * sq_tensor_get_flat(xv, i);
        if (v != 0 && fabs(v - want) > F32_TOL * fmax(1, fabs(want))) bad++;
    }
    CHECK_MSG(bad == 0, "%d dropout entries are neither 0 nor x/(1-p)", bad);
    CHECK_OK(&ctx, sq_tensor_zeros(&ctx, SQ_I64, 2, s2, &xi));
    CHECK_FAIL(&ctx, SQ_ERR_DTYPE, "dropout: input must be float32 or float64, got int64",
               sq_dropout(&ctx, xi, 0.5, 1, &y2));
    sq_tensor_release(xv);
    sq_tensor_release(yv);
    sq_tensor_release(xi);
    /* evaluation mode and p = 0 return x itself */
    CHECK_OK(&ctx, sq_dropout(&ctx, x, 0.25, 0, &y2));
    CHECK(y2 == x);
    sq_tensor_release(y2);
    CHECK_OK(&ctx, sq_dropout(&ctx, x, 0.0, 1, &y2));
    CHECK(y2 == x);
    sq_tensor_release(y2);
    y2 = NULL;
    CHECK_FAIL(&ctx, SQ_ERR_ARG, "dropout: p = 1 outside [0, 1)", sq_dropout(&ctx, x, 1.0, 1, &y2));
    CHECK_FAIL(&ctx, SQ_ERR_ARG, "dropout: p = -0.1 outside [0, 1)", sq_dropout(&ctx, x, -0.1, 0, &y2));
    CHECK_FAIL(&ctx, SQ_ERR_ARG, "dropout: p = nan outside", sq_dropout(&ctx, x, NAN, 1, &y2));
    CHECK(y2 == NULL);
    sq_tensor_release(in[0]);
    sq_tensor_release(x);
    sq_tensor_release(y);
    CHECK(ctx.mem.total_cur[SQ_CPU] == 0);
}

TEST(dropout_is_seeded)
{
    int64_t s[1] = {257};
    double first[257];
    for (int rep = 0; rep < 2; rep++) {
        sq_ctx ctx;
        sq_ctx_init(&ctx, 99);
        sq_tensor *x = NULL, *y = NULL;
        CHECK_OK(&ctx, sq_tensor_full(&ctx, SQ_F64, 1, s, 1.0, &x));
        CHECK_OK(&ctx, sq_dropout(&ctx, x, 0.5, 1, &y));
        for (int i = 0; i < 257; i++) {
            if (rep == 0) first[i] = sq_tensor_get_flat(y, i);
            else CHECK(first[i] == sq_tensor_get_flat(y, i));
        }
        sq_tensor_release(x);
        sq_tensor_release(y);
        CHECK(ctx.mem.total_cur[SQ_CPU] == 0);
    }
}

/* ---- concat ----------------------------------------------------------------------- */

typedef struct { int n, dim; } cat_arg;

static sq_status f_concat(sq_ctx *ctx, sq_tensor **in, void *arg, sq_tensor **out)
{
    cat_arg *a = arg;
    return sq_concat(ctx, a->n, in, a->dim, out);
}

TEST(concat_gradcheck)
{
    sq_ctx ctx;
    sq_ctx_init(&ctx, 71);
    /* 3 inputs along the middle dim; 6 inputs (a tree of nodes) along dim 0 */
    int64_t a[3] = {2, 1, 3}, b[3] = {2, 4, 3}, c[3] = {2, 2, 3};
    sq_tensor *in[6] = {sq_gc_input(&ctx, 3, a), sq_gc_input(&ctx, 3, b), sq_gc_input(&ctx, 3, c)};
    in[1]->requires_grad = 0; /* a frozen middle input gets no gradient */
    cat_arg ca = {3, -2};
    double err = sq_gradcheck(&ctx, f_concat, 3, in, &ca, 1e-6);
    CHECK_MSG(err < GC_TOL, "concat(3) gradcheck error %g", err);
    CHECK(in[1]->grad == NULL);
    release_all(3, in);
    for (int i = 0; i < 6; i++) {
        int64_t s[2] = {1 + i % 3, 4};
        in[i] = sq_gc_input(&ctx, 2, s);
    }
    cat_arg c6 = {6, 0};
    err = sq_gradcheck(&ctx, f_concat, 6, in, &c6, 1e-6);
    CHECK_MSG(err < GC_TOL, "concat(6) gradcheck error %g", err);
    release_all(6, in);
    CHECK(ctx.mem.total_cur[SQ_CPU] == 0);
}

TEST(concat_matches_reference_noncontiguous_and_errors)
{
    sq_ctx ctx;
    sq_ctx_init(&ctx, 72);
    int64_t a[3] = {3, 5, 2}, b[3] = {3, 5, 7};
    sq_tensor *ts[2] = {noncontig(&ctx, SQ_F32, 3, a), randn(&ctx, SQ_F32, 3, b)}, *y = NULL;
    CHECK_OK(&ctx, sq_concat(&ctx, 2, ts, 2, &y));
    CHECK(y && y->shape[2] == 9);
    double ref[3 * 5 * 9];
    for (int i = 0; i < 15; i++)
        for (int j = 0; j < 9; j++)
            ref[i * 9 + j] = j < 2 ? sq_tensor_get_flat(ts[0], i * 2 + j) : sq_tensor_get_flat(ts[1], i * 7 + j - 2);
    CHECK_MSG(max_diff(y, ref) == 0, "concat copy differs");
    sq_tensor *y2 = NULL, *d = NULL, *bad[2] = {ts[0], NULL};
    int64_t s64[3] = {3, 5, 2};
    CHECK_OK(&ctx, sq_tensor_zeros(&ctx, SQ_F64, 3, s64, &d));
    CHECK_FAIL(&ctx, SQ_ERR_SHAPE, "concat: tensor #2 is 3x5x7, tensor #1 is 3x5x2 (must agree except dim 1)",
               sq_concat(&ctx, 2, ts, 1, &y2));
    sq_tensor *mixed[2] = {ts[0], d};
    CHECK_FAIL(&ctx, SQ_ERR_DTYPE, "concat: tensor #2 is float64, tensor #1 is float32",
               sq_concat(&ctx, 2, mixed, 0, &y2));
    CHECK_FAIL(&ctx, SQ_ERR_ARG, "concat: tensor #2 is missing", sq_concat(&ctx, 2, bad, 0, &y2));
    CHECK_FAIL(&ctx, SQ_ERR_ARG, "concat: need at least one tensor", sq_concat(&ctx, 0, ts, 0, &y2));
    CHECK_FAIL(&ctx, SQ_ERR_ARG, "concat: dim 3 out of range for a 3-d tensor", sq_concat(&ctx, 2, ts, 3, &y2));
    CHECK(y2 == NULL);
    /* integer tensors concatenate too (no gradients) */
    int64_t n3[1] = {3}, n2[1] = {2};
    sq_tensor *ia = rand_index(&ctx, SQ_I64, 1, n3, 100), *ib = rand_index(&ctx, SQ_I64, 1, n2, 100);
    sq_tensor *ii[2] = {ia, ib};
    CHECK_OK(&ctx, sq_concat(&ctx, 2, ii, 0, &y2));
    CHECK(y2 && y2->dtype == SQ_I64 && sq_tensor_get_flat(y2, 3) == sq_tensor_get_flat(ib, 0));
    sq_tensor *rel[7] = {ts[0], ts[1], y, y2, d, ia, ib};
    release_all(7, rel);
    CHECK(ctx.mem.total_cur[SQ_CPU] == 0);
}

/* ---- index_select and gather -------------------------------------------------------- */

typedef struct { int dim; sq_tensor *idx; int gather; } ix_arg;

static sq_status f_index(sq_ctx *ctx, sq_tensor **in, void *arg, sq_tensor **out)
{
    ix_arg *a = arg;
    return a->gather ? sq_gather(ctx, in[0], a->dim, a->idx, out)
                     : sq_index_select(ctx, in[0], a->dim, a->idx, out);
}

TEST(index_select_and_gather_gradcheck)
{
    sq_ctx ctx;
    sq_ctx_init(&ctx, 81);
    int64_t s[3] = {3, 4, 5}, n[1] = {6};
    for (int dim = 0; dim < 3; dim++) {
        sq_tensor *in[1] = {sq_gc_input(&ctx, 3, s)};
        /* index_select with repeats */
        ix_arg a = {dim, rand_index(&ctx, SQ_I64, 1, n, s[dim]), 0};
        double err = sq_gradcheck(&ctx, f_index, 1, in, &a, 1e-6);
        CHECK_MSG(err < GC_TOL, "index_select dim %d gradcheck error %g", dim, err);
        sq_tensor_release(a.idx);
        /* gather: index smaller than x except along dim, where it is longer */
        int64_t gs[3] = {2, 3, 4};
        gs[dim] = 7;
        ix_arg g = {dim, rand_index(&ctx, SQ_I32, 3, gs, s[dim]), 1};
        err = sq_gradcheck(&ctx, f_index, 1, in, &g, 1e-6);
        CHECK_MSG(err < GC_TOL, "gather dim %d gradcheck error %g", dim, err);
        sq_tensor_release(g.idx);
        sq_tensor_release(in[0]);
    }
    CHECK(ctx.mem.total_cur[SQ_CPU] == 0);
}

TEST(index_select_and_gather_match_reference_noncontiguous)
{
    sq_ctx ctx;
    sq_ctx_init(&ctx, 82);
    int64_t s[3] = {3, 5, 7}, n[1] = {4};
    sq_tensor *x = noncontig(&ctx, SQ_F32, 3, s), *y = NULL;
    CHECK(!sq_tensor_is_contiguous(x));
    /* index_select along dim 1 */
    sq_tensor *idx = rand_index(&ctx, SQ_I64, 1, n, 5);
    CHECK_OK(&ctx, sq_index_select(&ctx, x, 1, idx, &y));
    double ref[3 * 5 * 7];
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 4; j++)
            for (int k = 0; k < 7; k++)
                ref[(i * 4 + j) * 7 + k] = sq_tensor_get_flat(x, (i * 5 + (int64_t)sq_tensor_get_flat(idx, j)) * 7 + k);
    CHECK_MSG(max_diff(y, ref) == 0, "index_select differs");
    sq_tensor_release(y);
    y = NULL;
    /* gather along dim 2 with a non-contiguous int32 index of shape 2x4x3 */
    int64_t gt[3] = {2, 3, 4};
    sq_tensor *gb = rand_index(&ctx, SQ_I32, 3, gt, 7), *gi = NULL;
    CHECK_OK(&ctx, sq_transpose(&ctx, gb, 1, 2, &gi));
    CHECK_OK(&ctx, sq_gather(&ctx, x, 2, gi, &y));
    CHECK(y && y->shape[0] == 2 && y->shape[1] == 4 && y->shape[2] == 3);
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 4; j++)
            for (int k = 0; k < 3; k++) {
                int64_t v = (int64_t)sq_tensor_get_flat(gi, (i * 4 + j) * 3 + k);
                ref[(i * 4 + j) * 3 + k] = sq_tensor_get_flat(x, (i * 5 + j) * 7 + v);
            }
    CHECK_MSG(max_diff(y, ref) == 0, "gather differs");
    /* errors */
    sq_tensor *y2 = NULL, *i2 = NULL, *fi = NULL;
    int64_t m2[2] = {2, 2};
    CHECK_OK(&ctx, sq_tensor_zeros(&ctx, SQ_I64, 2, m2, &i2));
    CHECK_OK(&ctx, sq_tensor_zeros(&ctx, SQ_F32, 1, n, &fi));
    sq_tensor_set_flat(idx, 2, 5);
    CHECK_FAIL(&ctx, SQ_ERR_ARG, "index_select: index 5 at position 2 outside [0, 5) for dim 1 of 3x5x7",
               sq_index_select(&ctx, x, 1, idx, &y2));
    CHECK_FAIL(&ctx, SQ_ERR_SHAPE, "index_select: index 2x2 must be 1-d", sq_index_select(&ctx, x, 0, i2, &y2));
    CHECK_FAIL(&ctx, SQ_ERR_DTYPE, "index_select: index must be int64 or int32, got float32",
               sq_index_select(&ctx, x, 0, fi, &y2));
    CHECK_FAIL(&ctx, SQ_ERR_ARG, "index_select: dim -4 out of range", sq_index_select(&ctx, x, -4, idx, &y2));
    sq_tensor_set_flat(gb, 5, 7);
    CHECK_FAIL(&ctx, SQ_ERR_ARG, "gather: index 7 at position", sq_gather(&ctx, x, 2, gi, &y2));
    CHECK_FAIL(&ctx, SQ_ERR_SHAPE, "gather: index 2x2 does not fit input 3x5x7 along dim 0",
               sq_gather(&ctx, x, 0, i2, &y2));
    int64_t big[3] = {4, 5, 1};
    sq_tensor *ib = NULL;
    CHECK_OK(&ctx, sq_tensor_zeros(&ctx, SQ_I64, 3, big, &ib));
    CHECK_FAIL(&ctx, SQ_ERR_SHAPE, "gather: index 4x5x1 does not fit input 3x5x7 along dim 2",
               sq_gather(&ctx, x, 2, ib, &y2));
    CHECK(y2 == NULL);
    sq_tensor *rel[8] = {x, y, idx, gb, gi, i2, fi, ib};
    release_all(8, rel);
    CHECK(ctx.mem.total_cur[SQ_CPU] == 0);
}

/* ---- a small training step: every op in one graph, memory back to zero ----------------- */

TEST(graph_of_nn_ops_releases_all_memory)
{
    sq_ctx ctx;
    sq_ctx_init(&ctx, 91);
    int64_t ws[2] = {10, 8}, is[2] = {4, 3}, d[1] = {8}, ts[1] = {12}, ls[2] = {8, 5};
    sq_tensor *E = randn(&ctx, SQ_F32, 2, ws), *g = randn(&ctx, SQ_F32, 1, d), *L = randn(&ctx, SQ_F32, 2, ls);
    sq_tensor *idx = rand_index(&ctx, SQ_I64, 2, is, 10), *tg = rand_index(&ctx, SQ_I64, 1, ts, 5);
    E->requires_grad = g->requires_grad = L->requires_grad = 1;
    sq_tensor *e = NULL, *n = NULL, *a = NULL, *dr = NULL, *r = NULL, *lo = NULL, *loss = NULL;
    CHECK_OK(&ctx, sq_embedding(&ctx, idx, E, &e));        /* 4x3x8 */
    CHECK_OK(&ctx, sq_layer_norm(&ctx, e, g, NULL, 1e-5, &n));
    CHECK_OK(&ctx, sq_affine(&ctx, n, g, g, &a));
    CHECK_OK(&ctx, sq_dropout(&ctx, a, 0.1, 1, &dr));
    CHECK_OK(&ctx, sq_reshape(&ctx, dr, 2, (int64_t[]){12, 8}, &r));
    CHECK_OK(&ctx, sq_matmul(&ctx, r, L, &lo));            /* 12x5 */
    CHECK_OK(&ctx, sq_cross_entropy(&ctx, lo, tg, &loss));
    CHECK(ctx.mem.cur[SQ_CPU][SQ_MEM_SAVED] > 0);
    CHECK_OK(&ctx, sq_backward(&ctx, loss, NULL));
    CHECK(ctx.mem.cur[SQ_CPU][SQ_MEM_SAVED] == 0);
    CHECK(E->grad && g->grad && L->grad);
    sq_tensor *rel[12] = {E, g, L, idx, tg, e, n, a, dr, r, lo, loss};
    release_all(12, rel);
    CHECK(ctx.mem.total_cur[SQ_CPU] == 0);
}

SQ_TEST_MAIN_BEGIN
RUN(softmax_gradcheck);
RUN(softmax_matches_reference_noncontiguous_f32);
RUN(causal_softmax_rows_sum_to_one_zero_above_diagonal);
RUN(softmax_rejects_bad_input_and_frees_graph);
RUN(cross_entropy_gradcheck);
RUN(cross_entropy_matches_reference_noncontiguous_f32);
RUN(cross_entropy_rejects_bad_targets);
RUN(layer_norm_gradcheck);
RUN(layer_norm_matches_reference_noncontiguous_f32);
RUN(layer_norm_rejects_bad_params);
RUN(affine_gradcheck_and_reference);
RUN(embedding_gradcheck_reference_errors);
RUN(dropout_gradcheck_statistics_errors);
RUN(dropout_is_seeded);
RUN(concat_gradcheck);
RUN(concat_matches_reference_noncontiguous_and_errors);
RUN(index_select_and_gather_gradcheck);
RUN(index_select_and_gather_match_reference_noncontiguous);
RUN(graph_of_nn_ops_releases_all_memory);
SQ_TEST_MAIN_END
