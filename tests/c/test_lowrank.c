/* test_lowrank.c — the SVD (reconstruction, orthogonality, gesvd fallback,
 * NaN rejection), the Gram matrix, and low-rank decomposition: exact at full
 * rank, tail-energy error at rank r, Tucker-2 against the dense conv, rank
 * formulas and quantization on hand-worked cases, the rank search with a
 * deterministic fake clock, argument errors, and the frozen-factor GEMM skip. */
#include "sq_lowrank.h"
#include "sq_ops.h"
#include "sq_test.h"

#include <math.h>

static sq_tensor *randn(sq_ctx *ctx, sq_dtype dt, int nd, const int64_t *sh)
{
    sq_tensor *t = NULL;
    if (sq_tensor_randn(ctx, dt, nd, sh, 0, 1, &t) != SQ_OK) return NULL;
    return t;
}

/* ‖a − b‖_F / ‖b‖_F over flat elements (shapes must have equal numel). */
static double rel_err(const sq_tensor *a, const sq_tensor *b)
{
    double num = 0, den = 0;
    int64_t n = sq_tensor_numel(b);
    for (int64_t i = 0; i < n; i++) {
        double d = sq_tensor_get_flat(a, i) - sq_tensor_get_flat(b, i);
        num += d * d;
        den += sq_tensor_get_flat(b, i) * sq_tensor_get_flat(b, i);
    }
    return sqrt(num) / (den > 0 ? sqrt(den) : 1.0);
}

/* (U diag S) Vt in float64 arithmetic, compared with W. */
static double svd_recon_err(sq_tensor *W, sq_tensor *U, sq_tensor *S, sq_tensor *Vt)
{
    int64_t M = W->shape[0], K = W->shape[1], r = S->shape[0];
    double num = 0, den = 0;
    for (int64_t m = 0; m < M; m++)
        for (int64_t k = 0; k < K; k++) {
            double v = 0;
            for (int64_t i = 0; i < r; i++)
                v += sq_tensor_get_flat(U, m * r + i) * sq_tensor_get_flat(S, i) *
                     sq_tensor_get_flat(Vt, i * K + k);
            double w = sq_tensor_get_flat(W, m * K + k);
            num += (v - w) * (v - w);
            den += w * w;
        }
    return sqrt(num / den);
}

/* max |QᵀQ − I| for Q (rows, cols) (cols_are_vectors) or |Q Qᵀ − I| otherwise. */
static double orth_err(sq_tensor *Q, int cols_are_vectors)
{
    int64_t R = Q->shape[0], C = Q->shape[1];
    int64_t nv = cols_are_vectors ? C : R, len = cols_are_vectors ? R : C;
    double worst = 0;
    for (int64_t i = 0; i < nv; i++)
        for (int64_t j = 0; j < nv; j++) {
            double d = 0;
            for (int64_t t = 0; t < len; t++) {
                double a = cols_are_vectors ? sq_tensor_get_flat(Q, t * C + i) : sq_tensor_get_flat(Q, i * C + t);
                double b = cols_are_vectors ? sq_tensor_get_flat(Q, t * C + j) : sq_tensor_get_flat(Q, j * C + t);
                d += a * b;
            }
            worst = fmax(worst, fabs(d - (i == j ? 1.0 : 0.0)));
        }
    return worst;
}

TEST(svd_reconstructs_and_is_orthogonal)
{
    sq_ctx ctx;
    sq_ctx_init(&ctx, 11);
    int64_t shapes[4][2] = {{7, 5}, {5, 9}, {64, 48}, {33, 80}};
    for (int c = 0; c < 4; c++)
        for (int d = 0; d < 2; d++) {
            sq_dtype dt = d ? SQ_F64 : SQ_F32;
            sq_tensor *W = randn(&ctx, dt, 2, shapes[c]), *U, *S, *Vt;
            sq_svd_info info;
            CHECK_OK(&ctx, sq_svd(&ctx, W, 0, NULL, &U, &S, &Vt, &info));
            if (!U) continue;
            int64_t k = shapes[c][0] < shapes[c][1] ? shapes[c][0] : shapes[c][1];
            CHECK(U->shape[0] == shapes[c][0] && U->shape[1] == k && S->shape[0] == k &&
                  Vt->shape[0] == k && Vt->shape[1] == shapes[c][1]);
            CHECK(info.used == SQ_SVD_GESDD && !info.fell_back);
            double tol = d ? 1e-12 : 1e-5;
            double e = svd_recon_err(W, U, S, Vt);
            CHECK_MSG(e < tol, "%s %lldx%lld: reconstruction error %g", sq_dtype_name(dt),
                      (long long)shapes[c][0], (long long)shapes[c][1], e);
            double ou = orth_err(U, 1), ov = orth_err(Vt, 0);
            CHECK_MSG(ou < tol && ov < tol, "orthogonality U %g Vt %g", ou, ov);
            for (int64_t i = 0; i < k; i++) {
                CHECK(sq_tensor_get_flat(S, i) >= 0);
                if (i) CHECK(sq_tensor_get_flat(S, i) <= sq_tensor_get_flat(S, i - 1));
            }
            sq_tensor_release(W);
            sq_tensor_release(U);
            sq_tensor_release(S);
            sq_tensor_release(Vt);
        }
    CHECK(ctx.mem.total_cur[SQ_CPU] == 0);
}

TEST(svd_noncontiguous_and_truncated)
{
    sq_ctx ctx;
    sq_ctx_init(&ctx, 12);
    int64_t sh[2] = {9, 14};
    sq_tensor *W = randn(&ctx, SQ_F64, 2, sh), *Wt = NULL, *U, *S, *Vt, *Ur, *Sr, *Vr;
    CHECK_OK(&ctx, sq_transpose(&ctx, W, 0, 1, &Wt)); /* (14,9), strided */
    CHECK(!sq_tensor_is_contiguous(Wt));
    CHECK_OK(&ctx, sq_svd(&ctx, Wt, 0, NULL, &U, &S, &Vt, NULL));
    CHECK(svd_recon_err(Wt, U, S, Vt) < 1e-12);
    CHECK_OK(&ctx, sq_svd(&ctx, Wt, 4, NULL, &Ur, &Sr, &Vr, NULL));
    CHECK(Ur->shape[0] == 14 && Ur->shape[1] == 4 && Sr->shape[0] == 4 && Vr->shape[0] == 4 &&
          Vr->shape[1] == 9);
    for (int64_t i = 0; i < 4; i++) CHECK_NEAR(sq_tensor_get_flat(Sr, i), sq_tensor_get_flat(S, i), 1e-12);
    for (int64_t m = 0; m < 14; m++) /* leading columns, up to the sign LAPACK chose (same run: same sign) */
        for (int64_t i = 0; i < 4; i++)
            CHECK_NEAR(sq_tensor_get_flat(Ur, m * 4 + i), sq_tensor_get_flat(U, m * 9 + i), 1e-12);
    for (int64_t i = 0; i < 4 * 9; i++) CHECK_NEAR(sq_tensor_get_flat(Vr, i), sq_tensor_get_flat(Vt, i), 1e-12);
    sq_tensor *x = NULL, *y = NULL, *z = NULL;
    CHECK_FAIL(&ctx, SQ_ERR_ARG, "svd: rank 10 > min(14,9)", sq_svd(&ctx, Wt, 10, NULL, &x, &y, &z, NULL));
    CHECK(!x && !y && !z);
    sq_tensor *e[] = {W, Wt, U, S, Vt, Ur, Sr, Vr};
    for (int i = 0; i < 8; i++) sq_tensor_release(e[i]);
    CHECK(ctx.mem.total_cur[SQ_CPU] == 0);
}

TEST(svd_fallback_to_gesvd)
{
    sq_ctx ctx;
    sq_ctx_init(&ctx, 13);
    int64_t sh[2] = {20, 12};
    sq_tensor *W = randn(&ctx, SQ_F32, 2, sh), *U = NULL, *S = NULL, *Vt = NULL;
    sq_svd_info info;
    sq_svd_opts o = {SQ_SVD_AUTO, SQ_SVD_FAKE_GESDD_FAIL};
    CHECK_OK(&ctx, sq_svd(&ctx, W, 0, &o, &U, &S, &Vt, &info));
    CHECK(info.fell_back == 1 && info.used == SQ_SVD_GESVD && info.gesdd_info > 0);
    if (U) {
        CHECK(svd_recon_err(W, U, S, Vt) < 1e-5);
        CHECK(orth_err(U, 1) < 1e-5 && orth_err(Vt, 0) < 1e-5);
    }
    sq_tensor_release(U);
    sq_tensor_release(S);
    sq_tensor_release(Vt);
    U = S = Vt = NULL;
    /* gesvd requested directly */
    sq_svd_opts g = {SQ_SVD_GESVD, 0};
    CHECK_OK(&ctx, sq_svd(&ctx, W, 0, &g, &U, &S, &Vt, &info));
    CHECK(info.used == SQ_SVD_GESVD && !info.fell_back);
    if (U) CHECK(svd_recon_err(W, U, S, Vt) < 1e-5);
    sq_tensor_release(U);
    sq_tensor_release(S);
    sq_tensor_release(Vt);
    U = S = Vt = NULL;
    /* gesdd only: its failure is the error */
    sq_svd_opts d = {SQ_SVD_GESDD, SQ_SVD_FAKE_GESDD_FAIL};
    CHECK_FAIL(&ctx, SQ_ERR_NUMERIC, "gesdd did not converge on 20x12", sq_svd(&ctx, W, 0, &d, &U, &S, &Vt, NULL));
    CHECK(!U && !S && !Vt);
    /* both fail: an error message, no factors */
    sq_svd_opts b = {SQ_SVD_AUTO, SQ_SVD_FAKE_GESDD_FAIL | SQ_SVD_FAKE_GESVD_FAIL};
    CHECK_FAIL(&ctx, SQ_ERR_NUMERIC, "svd: gesdd and gesvd did not converge", sq_svd(&ctx, W, 0, &b, &U, &S, &Vt, NULL));
    CHECK(!U && !S && !Vt);
    sq_tensor_release(W);
    CHECK(ctx.mem.total_cur[SQ_CPU] == 0);
}

TEST(svd_rejects_nonfinite)
{
    sq_ctx ctx;
    sq_ctx_init(&ctx, 14);
    int64_t sh[2] = {4, 6};
    sq_tensor *W = randn(&ctx, SQ_F32, 2, sh), *U = NULL, *S = NULL, *Vt = NULL;
    sq_tensor_set_flat(W, 1 * 6 + 2, NAN);
    CHECK_FAIL(&ctx, SQ_ERR_NUMERIC, "svd: matrix 4x6 has a non-finite entry (NaN at [1,2], 0-based)",
               sq_svd(&ctx, W, 0, NULL, &U, &S, &Vt, NULL));
    CHECK(!U && !S && !Vt);
    sq_tensor_set_flat(W, 1 * 6 + 2, 0);
    sq_tensor_set_flat(W, 3 * 6 + 5, -INFINITY);
    CHECK_FAIL(&ctx, SQ_ERR_NUMERIC, "-Inf at [3,5]", sq_svd(&ctx, W, 0, NULL, &U, &S, &Vt, NULL));
    sq_lowrank_cfg cfg = sq_lowrank_cfg_default();
    cfg.rank = 2;
    sq_tensor *A = NULL, *B = NULL;
    CHECK_FAIL(&ctx, SQ_ERR_NUMERIC, "non-finite", sq_lowrank_linear(&ctx, W, &cfg, &A, &B, NULL));
    CHECK(!A && !B);
    int64_t v[1] = {5};
    sq_tensor *vec = randn(&ctx, SQ_F32, 1, v);
    CHECK_FAIL(&ctx, SQ_ERR_SHAPE, "svd: need a non-empty 2-d matrix, got 5", sq_svd(&ctx, vec, 0, NULL, &U, &S, &Vt, NULL));
    sq_tensor_release(vec);
    sq_tensor_release(W);
    CHECK(ctx.mem.total_cur[SQ_CPU] == 0);
}

TEST(gram_matches_naive_and_accumulates)
{
    sq_ctx ctx;
    sq_ctx_init(&ctx, 15);
    int64_t xs[2] = {37, 11}, hs[2] = {11, 11};
    sq_tensor *X = randn(&ctx, SQ_F32, 2, xs), *H32, *H64;
    CHECK_OK(&ctx, sq_tensor_zeros(&ctx, SQ_F32, 2, hs, &H32));
    CHECK_OK(&ctx, sq_tensor_zeros(&ctx, SQ_F64, 2, hs, &H64));
    int64_t calls = ctx.stats.gemm_calls;
    CHECK_OK(&ctx, sq_gram(&ctx, X, H32));
    CHECK(ctx.stats.gemm_calls == calls + 1); /* one GEMM */
    CHECK_OK(&ctx, sq_gram(&ctx, X, H32));    /* accumulates: 2 XᵀX */
    CHECK_OK(&ctx, sq_gram(&ctx, X, H64));    /* float32 X into a float64 H */
    double worst32 = 0, worst64 = 0;
    for (int64_t i = 0; i < 11; i++)
        for (int64_t j = 0; j < 11; j++) {
            double ref = 0;
            for (int64_t n = 0; n < 37; n++)
                ref += sq_tensor_get_flat(X, n * 11 + i) * sq_tensor_get_flat(X, n * 11 + j);
            worst32 = fmax(worst32, fabs(sq_tensor_get_flat(H32, i * 11 + j) - 2 * ref) / (1 + fabs(ref)));
            worst64 = fmax(worst64, fabs(sq_tensor_get_flat(H64, i * 11 + j) - ref) / (1 + fabs(ref)));
            CHECK(sq_tensor_get_flat(H32, i * 11 + j) == sq_tensor_get_flat(H32, j * 11 + i));
        }
    CHECK_MSG(worst32 < 1e-5 && worst64 < 1e-12, "gram errors f32 %g f64 %g", worst32, worst64);
    int64_t bad[2] = {10, 10};
    sq_tensor *Hb;
    CHECK_OK(&ctx, sq_tensor_zeros(&ctx, SQ_F32, 2, bad, &Hb));
    CHECK_FAIL(&ctx, SQ_ERR_SHAPE, "gram: X 37x11 and H 10x10 do not fit", sq_gram(&ctx, X, Hb));
    sq_tensor_release(Hb);
    sq_tensor_release(X);
    sq_tensor_release(H32);
    sq_tensor_release(H64);
    CHECK(ctx.mem.total_cur[SQ_CPU] == 0);
}

TEST(linear_full_rank_reproduces_dense)
{
    sq_ctx ctx;
    sq_ctx_init(&ctx, 16);
    int64_t ws[2] = {24, 40}, bs[1] = {24}, xs[2] = {5, 40};
    sq_tensor *W = randn(&ctx, SQ_F32, 2, ws), *b = randn(&ctx, SQ_F32, 1, bs), *x = randn(&ctx, SQ_F32, 2, xs);
    sq_tensor *A = NULL, *B = NULL, *y = NULL, *h = NULL, *y2 = NULL;
    sq_lowrank_cfg cfg = sq_lowrank_cfg_default();
    cfg.rank = 24;
    sq_lowrank_info info;
    CHECK_OK(&ctx, sq_lowrank_linear(&ctx, W, &cfg, &A, &B, &info));
    if (A) {
        CHECK(A->shape[0] == 24 && A->shape[1] == 24 && B->shape[0] == 24 && B->shape[1] == 40);
        CHECK_OK(&ctx, sq_linear(&ctx, x, W, b, &y));
        CHECK_OK(&ctx, sq_linear(&ctx, x, B, NULL, &h)); /* first factor: no bias */
        CHECK_OK(&ctx, sq_linear(&ctx, h, A, b, &y2));   /* second factor carries it */
        double e = rel_err(y2, y);
        CHECK_MSG(e < 1e-5, "full-rank output error %g", e);
        CHECK_NEAR(info.energy_kept, 1.0, 1e-12);
        CHECK(info.rank == 24 && info.rank_raw == 24);
    }
    sq_tensor *e[] = {W, b, x, A, B, y, h, y2};
    for (int i = 0; i < 8; i++) sq_tensor_release(e[i]);
    CHECK(ctx.mem.total_cur[SQ_CPU] == 0);
}

/* ‖W − A B‖_F² in float64 */
static double factor_err_sq(sq_tensor *W, sq_tensor *A, sq_tensor *B)
{
    int64_t M = W->shape[0], K = W->shape[1], r = A->shape[1];
    double s = 0;
    for (int64_t m = 0; m < M; m++)
        for (int64_t k = 0; k < K; k++) {
            double v = sq_tensor_get_flat(W, m * K + k);
            for (int64_t i = 0; i < r; i++) v -= sq_tensor_get_flat(A, m * r + i) * sq_tensor_get_flat(B, i * K + k);
            s += v * v;
        }
    return s;
}

TEST(linear_rank_r_error_is_the_tail)
{
    sq_ctx ctx;
    sq_ctx_init(&ctx, 17);
    int64_t ws[2] = {30, 20};
    for (int d = 0; d < 2; d++) {
        sq_dtype dt = d ? SQ_F64 : SQ_F32;
        sq_tensor *W = randn(&ctx, dt, 2, ws), *A = NULL, *B = NULL, *U, *S, *Vt;
        CHECK_OK(&ctx, sq_svd(&ctx, W, 0, NULL, &U, &S, &Vt, NULL));
        int64_t ranks[3] = {1, 7, 19};
        for (int c = 0; c < 3; c++) {
            sq_lowrank_cfg cfg = sq_lowrank_cfg_default();
            cfg.rank = ranks[c];
            sq_lowrank_info info;
            CHECK_OK(&ctx, sq_lowrank_linear(&ctx, W, &cfg, &A, &B, &info));
            if (!A) continue;
            double tail = 0;
            for (int64_t i = ranks[c]; i < 20; i++) tail += sq_tensor_get_flat(S, i) * sq_tensor_get_flat(S, i);
            double err = factor_err_sq(W, A, B), tol = d ? 1e-10 : 1e-4;
            CHECK_MSG(fabs(err - tail) <= tol * info.total_sq, "%s rank %lld: ‖W-AB‖² %.9g vs tail %.9g",
                      sq_dtype_name(dt), (long long)ranks[c], err, tail);
            CHECK(fabs(info.tail_sq - tail) <= 1e-12 * info.total_sq);
            sq_tensor_release(A);
            sq_tensor_release(B);
            A = B = NULL;
        }
        sq_tensor_release(W);
        sq_tensor_release(U);
        sq_tensor_release(S);
        sq_tensor_release(Vt);
    }
    CHECK(ctx.mem.total_cur[SQ_CPU] == 0);
}

/* W ≈ core ×₁ U_out ×₂ U_in rebuilt from the three conv weights. */
static double tucker_recon_err(sq_tensor *W, sq_tensor *f, sq_tensor *g, sq_tensor *l)
{
    int64_t O = W->shape[0], C = W->shape[1], S = W->shape[2] * W->shape[3];
    int64_t ri = f->shape[0], ro = l->shape[1];
    double num = 0, den = 0;
    for (int64_t o = 0; o < O; o++)
        for (int64_t c = 0; c < C; c++)
            for (int64_t s = 0; s < S; s++) {
                double v = 0;
                for (int64_t a = 0; a < ro; a++)
                    for (int64_t b = 0; b < ri; b++)
                        v += sq_tensor_get_flat(l, o * ro + a) * sq_tensor_get_flat(g, (a * ri + b) * S + s) *
                             sq_tensor_get_flat(f, b * C + c);
                double w = sq_tensor_get_flat(W, (o * C + c) * S + s);
                num += (v - w) * (v - w);
                den += w * w;
            }
    return sqrt(num / den);
}

TEST(tucker2_full_ranks_reproduce_conv)
{
    sq_ctx ctx;
    sq_ctx_init(&ctx, 18);
    struct { int64_t O, C, k; int stride, pad; } cases[3] = {{6, 4, 3, 2, 1}, {5, 7, 3, 1, 0}, {9, 3, 1, 1, 0}};
    for (int c = 0; c < 3; c++) {
        int64_t O = cases[c].O, C = cases[c].C, k = cases[c].k;
        int64_t ws[4] = {O, C, k, k}, bs[1] = {O}, xs[4] = {2, C, 7, 6};
        sq_tensor *W = randn(&ctx, SQ_F32, 4, ws), *b = randn(&ctx, SQ_F32, 1, bs), *x = randn(&ctx, SQ_F32, 4, xs);
        sq_tensor *f = NULL, *g = NULL, *l = NULL, *y = NULL, *h1 = NULL, *h2 = NULL, *y2 = NULL;
        int64_t r_out = O < C * k * k ? O : C * k * k, r_in = C < O * k * k ? C : O * k * k;
        sq_tucker2_info info;
        CHECK_OK(&ctx, sq_lowrank_tucker2(&ctx, W, r_out, r_in, NULL, &f, &g, &l, &info));
        if (f) {
            CHECK(f->shape[0] == r_in && f->shape[1] == C && f->shape[2] == 1 && f->shape[3] == 1);
            CHECK(g->shape[0] == r_out && g->shape[1] == r_in && g->shape[2] == k && g->shape[3] == k);
            CHECK(l->shape[0] == O && l->shape[1] == r_out && l->shape[2] == 1 && l->shape[3] == 1);
            double we = tucker_recon_err(W, f, g, l);
            CHECK_MSG(we < 1e-5, "case %d: weight reconstruction %g", c, we);
            CHECK_NEAR(info.energy_out, 1.0, 1e-9);
            CHECK_NEAR(info.energy_in, 1.0, 1e-9);
            int s = cases[c].stride, p = cases[c].pad;
            CHECK_OK(&ctx, sq_conv2d(&ctx, x, W, b, s, p, &y));
            CHECK_OK(&ctx, sq_conv2d(&ctx, x, f, NULL, 1, 0, &h1));
            CHECK_OK(&ctx, sq_conv2d(&ctx, h1, g, NULL, s, p, &h2));
            CHECK_OK(&ctx, sq_conv2d(&ctx, h2, l, b, 1, 0, &y2));
            if (y && y2) {
                CHECK(sq_shape_equal(y, y2));
                double e = rel_err(y2, y);
                CHECK_MSG(e < 1e-5, "case %d: conv output error %g", c, e);
            }
        }
        sq_tensor *e[] = {W, b, x, f, g, l, y, h1, h2, y2};
        for (int i = 0; i < 10; i++) sq_tensor_release(e[i]);
    }
    CHECK(ctx.mem.total_cur[SQ_CPU] == 0);
}

TEST(tucker2_truncated_core_is_projection)
{
    /* At lower ranks the reconstruction is the projection of W onto the
     * leading subspaces: its error can only fall as the ranks grow. */
    sq_ctx ctx;
    sq_ctx_init(&ctx, 19);
    int64_t ws[4] = {8, 6, 3, 3};
    sq_tensor *W = randn(&ctx, SQ_F64, 4, ws);
    double prev = INFINITY;
    for (int64_t r = 1; r <= 6; r++) {
        sq_tensor *f = NULL, *g = NULL, *l = NULL;
        CHECK_OK(&ctx, sq_lowrank_tucker2(&ctx, W, r + 2, r, NULL, &f, &g, &l, NULL));
        if (!f) continue;
        double e = tucker_recon_err(W, f, g, l);
        CHECK_MSG(e <= prev + 1e-12, "rank %lld error %g after %g", (long long)r, e, prev);
        prev = e;
        sq_tensor_release(f);
        sq_tensor_release(g);
        sq_tensor_release(l);
    }
    CHECK(prev < 1e-12); /* r_out 8 = O, r_in 6 = C: exact */
    sq_tensor *f = NULL, *g = NULL, *l = NULL;
    CHECK_FAIL(&ctx, SQ_ERR_ARG, "lowrank: rank_in 7 > min(6,72)", sq_lowrank_tucker2(&ctx, W, 4, 7, NULL, &f, &g, &l, NULL));
    CHECK_FAIL(&ctx, SQ_ERR_ARG, "lowrank: rank_out 0 < 1", sq_lowrank_tucker2(&ctx, W, 0, 2, NULL, &f, &g, &l, NULL));
    CHECK(!f && !g && !l);
    sq_tensor_release(W);
    CHECK(ctx.mem.total_cur[SQ_CPU] == 0);
}

TEST(rank_formulas_and_quantization)
{
    sq_ctx ctx;
    sq_ctx_init(&ctx, 20);
    int64_t r;
    /* r0 = floor(M·K / (R·(M+K))) */
    CHECK_OK(&ctx, sq_lowrank_rank_ratio(&ctx, 512, 512, 2.0, &r));
    CHECK(r == 128);                                          /* 262144 / 2048 */
    CHECK_OK(&ctx, sq_lowrank_rank_ratio(&ctx, 768, 3072, 4.0, &r));
    CHECK(r == 153);                                          /* 2359296 / 15360 = 153.6 */
    CHECK_OK(&ctx, sq_lowrank_rank_ratio(&ctx, 10, 10, 100.0, &r));
    CHECK(r == 0);                                            /* 100 / 2000 */
    /* nearest multiple of q, ties up, within [q, q·floor(min/q)] */
    struct { int64_t r, q, M, K, want; } qc[] = {
        {153, 8, 768, 3072, 152},   /* 19.125 steps -> 19 */
        {153, 32, 768, 3072, 160},  /* 4.78 -> 5 */
        {153, 64, 768, 3072, 128},  /* 2.39 -> 2 */
        {12, 8, 64, 64, 16},        /* 1.5 -> 2: tie rounds up */
        {11, 8, 64, 64, 8},         /* 1.375 -> 1 */
        {3, 8, 64, 64, 8},          /* 0.375 -> 0, lifted to q */
        {0, 16, 64, 64, 16},        /* ratio gave 0: lifted to q */
        {99, 64, 100, 200, 64},     /* 1.55 -> 2, but 128 > 100: top of the grid */
        {100, 1, 100, 200, 100},    /* q = 1: unchanged */
        {7, 3, 50, 50, 6},          /* 2.33 -> 2 */
        {8, 3, 50, 50, 9},          /* 2.67 -> 3 */
    };
    for (size_t i = 0; i < sizeof qc / sizeof qc[0]; i++) {
        r = -1;
        CHECK_OK(&ctx, sq_lowrank_quantize(&ctx, qc[i].r, qc[i].q, qc[i].M, qc[i].K, &r));
        CHECK_MSG(r == qc[i].want, "quantize(%lld, q=%lld, %lldx%lld) = %lld, want %lld", (long long)qc[i].r,
                  (long long)qc[i].q, (long long)qc[i].M, (long long)qc[i].K, (long long)r, (long long)qc[i].want);
    }
    CHECK_FAIL(&ctx, SQ_ERR_ARG, "lowrank: quantum 0 < 1", sq_lowrank_quantize(&ctx, 10, 0, 64, 64, &r));
    CHECK_FAIL(&ctx, SQ_ERR_ARG, "lowrank: quantum 64 > min(32,48)", sq_lowrank_quantize(&ctx, 10, 64, 32, 48, &r));
    CHECK_FAIL(&ctx, SQ_ERR_ARG, "lowrank: ratio 0 must be", sq_lowrank_rank_ratio(&ctx, 8, 8, 0.0, &r));
    CHECK_FAIL(&ctx, SQ_ERR_ARG, "lowrank: ratio -2 must be", sq_lowrank_rank_ratio(&ctx, 8, 8, -2.0, &r));
    /* Tucker-2 from a ratio: O = C = 64, 3x3, R = 4 -> α = 0.4011, r = 25, q = 8 -> 24;
     * 64·24 + 24·24·9 + 24·64 = 8256 params <= 36864 / 4 */
    int64_t ro, ri;
    CHECK_OK(&ctx, sq_lowrank_tucker2_rank_ratio(&ctx, 64, 64, 3, 3, 4.0, 1, &ro, &ri));
    CHECK(ro == 25 && ri == 25);
    CHECK_OK(&ctx, sq_lowrank_tucker2_rank_ratio(&ctx, 64, 64, 3, 3, 4.0, 8, &ro, &ri));
    CHECK(ro == 24 && ri == 24);
    sq_lowrank_cost c = sq_lowrank_conv_cost(64, 64, 3, 3, ro, ri, 0, 1, 8, 8, 1, 1);
    CHECK(c.params_lowrank == 8256 && c.params_dense == 36864);
    CHECK(c.params_lowrank * 4 <= c.params_dense);
    CHECK(ctx.mem.total_cur[SQ_CPU] == 0);
}

TEST(costs_hand_worked)
{
    /* linear 768x3072 with bias, rank 128, 10 rows */
    sq_lowrank_cost c = sq_lowrank_linear_cost(768, 3072, 128, 1, 10);
    CHECK(c.params_dense == 768 * 3072 + 768);
    CHECK(c.params_lowrank == 128 * 3072 + 768 * 128 + 768);
    CHECK_NEAR(c.flops_dense, 2.0 * 10 * 768 * 3072, 0);
    CHECK_NEAR(c.flops_lowrank, 2.0 * 10 * 128 * (3072 + 768), 0);
    /* conv 32->16, 3x3, stride 2 pad 1 on 2 images of 8x8 -> 4x4 outputs;
     * ranks r_out 8, r_in 4, bias */
    c = sq_lowrank_conv_cost(16, 32, 3, 3, 8, 4, 1, 2, 8, 8, 2, 1);
    CHECK(c.params_dense == 16 * 32 * 9 + 16);
    CHECK(c.params_lowrank == 4 * 32 + 8 * 4 * 9 + 16 * 8 + 16);
    CHECK_NEAR(c.flops_dense, 2.0 * 2 * 16 * 16 * 32 * 9, 0);
    CHECK_NEAR(c.flops_lowrank, 2.0 * (2 * 64 * 32 * 4 + 2 * 16 * 4 * 8 * 9 + 2 * 16 * 8 * 16), 0);
}

TEST(energy_threshold)
{
    sq_ctx ctx;
    sq_ctx_init(&ctx, 21);
    int64_t ks[1] = {4};
    sq_tensor *S;
    CHECK_OK(&ctx, sq_tensor_empty(&ctx, SQ_F64, 1, ks, &S));
    double sv[4] = {3, 2, 1, 0.5}; /* σ² 9, 4, 1, 0.25; total 14.25 */
    for (int i = 0; i < 4; i++) sq_tensor_set_flat(S, i, sv[i]);
    struct { double tau; int64_t want; } ec[] = {
        {0.5, 1}, {9 / 14.25, 1}, {0.64, 2}, {0.9, 2}, {13 / 14.25, 2}, {0.95, 3}, {0.99, 4}, {1.0, 4}};
    for (size_t i = 0; i < sizeof ec / sizeof ec[0]; i++) {
        int64_t r = -1;
        CHECK_OK(&ctx, sq_lowrank_rank_energy(&ctx, S, ec[i].tau, &r));
        CHECK_MSG(r == ec[i].want, "tau %.6f -> %lld, want %lld", ec[i].tau, (long long)r, (long long)ec[i].want);
    }
    int64_t r;
    CHECK_FAIL(&ctx, SQ_ERR_ARG, "energy threshold 0 outside (0,1]", sq_lowrank_rank_energy(&ctx, S, 0.0, &r));
    CHECK_FAIL(&ctx, SQ_ERR_ARG, "energy threshold 1.5 outside (0,1]", sq_lowrank_rank_energy(&ctx, S, 1.5, &r));
    sq_tensor_release(S);

    /* through the decomposition: W = diag(3,2,1,0.5) padded to 6x4, shuffled
     * by nothing (the SVD of a diagonal matrix is itself) */
    int64_t ws[2] = {6, 4};
    sq_tensor *W, *A = NULL, *B = NULL;
    CHECK_OK(&ctx, sq_tensor_zeros(&ctx, SQ_F64, 2, ws, &W));
    for (int i = 0; i < 4; i++) sq_tensor_set_flat(W, i * 4 + i, sv[i]);
    sq_lowrank_cfg cfg = sq_lowrank_cfg_default();
    cfg.mode = SQ_RANK_ENERGY;
    cfg.energy = 0.9;
    sq_lowrank_info info;
    CHECK_OK(&ctx, sq_lowrank_linear(&ctx, W, &cfg, &A, &B, &info));
    CHECK(info.rank == 2 && info.rank_raw == 2 && A && A->shape[1] == 2);
    CHECK_NEAR(info.energy_kept, 13 / 14.25, 1e-12);
    CHECK_NEAR(info.tail_sq, 1.25, 1e-12);
    sq_tensor_release(A);
    sq_tensor_release(B);
    A = B = NULL;
    cfg.quantum = 3; /* raw 2 -> nearest multiple of 3 is 3 */
    CHECK_OK(&ctx, sq_lowrank_linear(&ctx, W, &cfg, &A, &B, &info));
    CHECK(info.rank == 3 && info.rank_raw == 2);
    sq_tensor_release(A);
    sq_tensor_release(B);
    A = B = NULL;
    cfg.energy = 1.2;
    CHECK_FAIL(&ctx, SQ_ERR_ARG, "energy threshold 1.2 outside (0,1]", sq_lowrank_linear(&ctx, W, &cfg, &A, &B, NULL));
    sq_tensor_release(W);
    CHECK(ctx.mem.total_cur[SQ_CPU] == 0);
}

TEST(linear_bad_arguments)
{
    sq_ctx ctx;
    sq_ctx_init(&ctx, 22);
    int64_t ws[2] = {64, 128};
    sq_tensor *W = randn(&ctx, SQ_F32, 2, ws), *A = NULL, *B = NULL;
    sq_lowrank_cfg cfg = sq_lowrank_cfg_default();
    cfg.rank = 80;
    CHECK_FAIL(&ctx, SQ_ERR_ARG, "lowrank: rank 80 > min(64,128)", sq_lowrank_linear(&ctx, W, &cfg, &A, &B, NULL));
    cfg.rank = 0;
    CHECK_FAIL(&ctx, SQ_ERR_ARG, "lowrank: rank 0 < 1", sq_lowrank_linear(&ctx, W, &cfg, &A, &B, NULL));
    cfg.mode = SQ_RANK_RATIO;
    cfg.ratio = 2;
    cfg.quantum = 0;
    CHECK_FAIL(&ctx, SQ_ERR_ARG, "lowrank: quantum 0 < 1", sq_lowrank_linear(&ctx, W, &cfg, &A, &B, NULL));
    cfg.quantum = 128;
    CHECK_FAIL(&ctx, SQ_ERR_ARG, "lowrank: quantum 128 > min(64,128)", sq_lowrank_linear(&ctx, W, &cfg, &A, &B, NULL));
    cfg.mode = SQ_RANK_ENERGY;
    cfg.quantum = 8;
    cfg.energy = 0;
    CHECK_FAIL(&ctx, SQ_ERR_ARG, "energy threshold 0 outside (0,1]", sq_lowrank_linear(&ctx, W, &cfg, &A, &B, NULL));
    CHECK(!A && !B);
    /* ratio 2 on 64x128: r0 = floor(8192 / 384) = 21 -> q 8 -> 24 */
    cfg.mode = SQ_RANK_RATIO;
    sq_lowrank_info info;
    CHECK_OK(&ctx, sq_lowrank_linear(&ctx, W, &cfg, &A, &B, &info));
    CHECK(info.rank_raw == 21 && info.rank == 24 && A && A->shape[1] == 24 && B->shape[0] == 24);
    sq_tensor_release(A);
    sq_tensor_release(B);
    int64_t s3[3] = {2, 3, 4};
    sq_tensor *W3 = randn(&ctx, SQ_F32, 3, s3);
    A = B = NULL;
    CHECK_FAIL(&ctx, SQ_ERR_SHAPE, "lowrank: weight must be 2-d (M,K), got 2x3x4", sq_lowrank_linear(&ctx, W3, &cfg, &A, &B, NULL));
    sq_tensor_release(W3);
    sq_tensor_release(W);
    CHECK(ctx.mem.total_cur[SQ_CPU] == 0);
}

/* A deterministic fake clock: a staircase where multiples of 64 are fast. */
typedef struct { int calls; int off_grid; int64_t q; } fake_clock;

static sq_status fake_time(sq_ctx *ctx, int64_t rank, void *arg, double *seconds)
{
    (void)ctx;
    fake_clock *fc = arg;
    fc->calls++;
    if (rank % fc->q) fc->off_grid++;
    *seconds = 1e-3 * (double)rank + (rank % 64 ? 0.5 : 0.0);
    return SQ_OK;
}

static sq_status flat_time(sq_ctx *ctx, int64_t rank, void *arg, double *seconds)
{
    (void)ctx;
    (void)rank;
    (void)arg;
    *seconds = 0.25;
    return SQ_OK;
}

static sq_status failing_time(sq_ctx *ctx, int64_t rank, void *arg, double *seconds)
{
    (void)arg;
    (void)seconds;
    return sq_fail(ctx, SQ_ERR_DEVICE, "timer: device lost at rank %lld", (long long)rank);
}

TEST(rank_search_picks_fastest_within_budget)
{
    sq_ctx ctx;
    sq_ctx_init(&ctx, 23);
    /* 256x256, r0 = 100, q = 16: centre 96, window 3 -> 48..144 step 16 */
    sq_rank_search_cfg cfg = {256, 256, 100, 16, 3, 512 * 140, 0, NULL, NULL};
    sq_rank_trial tr[16];
    int n = 0;
    int64_t best = 0;
    fake_clock fc = {0, 0, 16};
    CHECK_OK(&ctx, sq_lowrank_search(&ctx, &cfg, fake_time, &fc, tr, 16, &n, &best));
    CHECK(n == 7);
    for (int i = 0; i < n; i++) {
        CHECK(tr[i].rank == 48 + 16 * i);
        CHECK(tr[i].rank % 16 == 0);
        CHECK(tr[i].params == tr[i].rank * 512);
        CHECK(tr[i].within_budget == (tr[i].rank <= 140));
        CHECK(tr[i].timed == tr[i].within_budget);
    }
    CHECK(fc.off_grid == 0 && fc.calls == 6); /* 144 is over budget: not timed */
    /* 64 (0.064 s) beats 128 (0.128 s) and every off-staircase rank (>= 0.548 s) */
    CHECK_MSG(best == 64, "best %lld, want 64", (long long)best);
    /* a budget below 64: only 48 is left, slow as it is */
    cfg.max_params = 512 * 60;
    CHECK_OK(&ctx, sq_lowrank_search(&ctx, &cfg, fake_time, &fc, tr, 16, &n, &best));
    CHECK(best == 48);
    cfg.max_params = 512 * 120;
    /* timing everything for the latency-vs-rank record does not change the pick */
    cfg.time_over_budget = 1;
    fc.calls = 0;
    CHECK_OK(&ctx, sq_lowrank_search(&ctx, &cfg, fake_time, &fc, tr, 16, &n, &best));
    CHECK(best == 64 && fc.calls == 7 && tr[6].timed && !tr[6].within_budget);
    /* ties go to the smaller rank; the window is clipped to the grid */
    sq_rank_search_cfg c2 = {100, 200, 40, 16, 4, 0, 0, NULL, NULL}; /* centre 48: 16..96 of -16..112 */
    CHECK_OK(&ctx, sq_lowrank_search(&ctx, &c2, flat_time, NULL, tr, 16, &n, &best));
    CHECK(n == 6 && tr[0].rank == 16 && tr[5].rank == 96 && best == 16);
    /* no candidate in budget: an error naming it, trials still reported */
    cfg.max_params = 100;
    cfg.time_over_budget = 0;
    CHECK_FAIL(&ctx, SQ_ERR_ARG, "no rank in 48..144 (step 16) meets the budget of 100 parameters",
               sq_lowrank_search(&ctx, &cfg, fake_time, &fc, tr, 16, &n, &best));
    CHECK(n == 7 && best == 0);
    cfg.max_params = 0;
    CHECK_FAIL(&ctx, SQ_ERR_ARG, "7 candidates but room for 4", sq_lowrank_search(&ctx, &cfg, fake_time, &fc, tr, 4, &n, &best));
    CHECK_FAIL(&ctx, SQ_ERR_DEVICE, "device lost at rank 48", sq_lowrank_search(&ctx, &cfg, failing_time, NULL, tr, 16, &n, &best));
    cfg.quantum = 0;
    CHECK_FAIL(&ctx, SQ_ERR_ARG, "quantum 0 < 1", sq_lowrank_search(&ctx, &cfg, fake_time, &fc, tr, 16, &n, &best));
    cfg.quantum = 512;
    CHECK_FAIL(&ctx, SQ_ERR_ARG, "quantum 512 > min(256,256)", sq_lowrank_search(&ctx, &cfg, fake_time, &fc, tr, 16, &n, &best));
}

TEST(frozen_first_factor_skips_its_weight_gemm)
{
    sq_ctx ctx;
    sq_ctx_init(&ctx, 24);
    int64_t ws[2] = {12, 16}, xs[2] = {5, 16};
    sq_tensor *W = randn(&ctx, SQ_F32, 2, ws), *x = randn(&ctx, SQ_F32, 2, xs), *A = NULL, *B = NULL;
    sq_lowrank_cfg cfg = sq_lowrank_cfg_default();
    cfg.rank = 4;
    CHECK_OK(&ctx, sq_lowrank_linear(&ctx, W, &cfg, &A, &B, NULL));
    for (int frozen = 0; frozen < 2 && A; frozen++) {
        B->requires_grad = !frozen; /* first factor */
        A->requires_grad = 1;       /* second factor */
        sq_tensor *h = NULL, *y = NULL, *loss = NULL;
        int64_t before = ctx.stats.weight_grad_gemms;
        CHECK_OK(&ctx, sq_linear(&ctx, x, B, NULL, &h));
        CHECK_OK(&ctx, sq_linear(&ctx, h, A, NULL, &y));
        CHECK_OK(&ctx, sq_sum(&ctx, y, SQ_ALL_DIMS, 0, &loss));
        CHECK_OK(&ctx, sq_backward(&ctx, loss, NULL));
        CHECK_MSG(ctx.stats.weight_grad_gemms - before == (frozen ? 1 : 2), "frozen %d: %lld weight GEMMs",
                  frozen, (long long)(ctx.stats.weight_grad_gemms - before));
        CHECK(A->grad != NULL && (B->grad != NULL) == !frozen);
        sq_tensor_release(A->grad);
        sq_tensor_release(B->grad);
        A->grad = B->grad = NULL;
        sq_tensor_release(h);
        sq_tensor_release(y);
        sq_tensor_release(loss);
    }
    sq_tensor_release(W);
    sq_tensor_release(x);
    sq_tensor_release(A);
    sq_tensor_release(B);
    CHECK(ctx.mem.total_cur[SQ_CPU] == 0);
}

SQ_TEST_MAIN_BEGIN
    RUN(svd_reconstructs_and_is_orthogonal);
    RUN(svd_noncontiguous_and_truncated);
    RUN(svd_fallback_to_gesvd);
    RUN(svd_rejects_nonfinite);
    RUN(gram_matches_naive_and_accumulates);
    RUN(linear_full_rank_reproduces_dense);
    RUN(linear_rank_r_error_is_the_tail);
    RUN(tucker2_full_ranks_reproduce_conv);
    RUN(tucker2_truncated_core_is_projection);
    RUN(rank_formulas_and_quantization);
    RUN(costs_hand_worked);
    RUN(energy_threshold);
    RUN(linear_bad_arguments);
    RUN(rank_search_picks_fastest_within_budget);
    RUN(frozen_first_factor_skips_its_weight_gemm);
SQ_TEST_MAIN_END
