/* sq_lowrank.c — rank choice and quantization, SVD split of linear weights,
 * Tucker-2 of conv weights, parameter / FLOP counts, and the rank search. */
#include "sq_lowrank.h"
#include "sq_ops_internal.h"

#include <math.h>
#include <string.h>

sq_lowrank_cfg sq_lowrank_cfg_default(void)
{
    sq_lowrank_cfg c;
    memset(&c, 0, sizeof c);
    c.mode = SQ_RANK_FIXED;
    c.quantum = 1;
    c.svd.driver = SQ_SVD_AUTO;
    return c;
}

static int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

/* ---- rank choice ------------------------------------------------------------- */

sq_status sq_lowrank_check_rank(sq_ctx *ctx, const char *what, int64_t rank, int64_t M, int64_t K)
{
    if (rank < 1)
        return sq_fail(ctx, SQ_ERR_ARG, "lowrank: %s %lld < 1", what, (long long)rank);
    if (rank > min64(M, K))
        return sq_fail(ctx, SQ_ERR_ARG, "lowrank: %s %lld > min(%lld,%lld)", what, (long long)rank,
                       (long long)M, (long long)K);
    return SQ_OK;
}

static sq_status check_dims(sq_ctx *ctx, int64_t M, int64_t K)
{
    if (M < 1 || K < 1)
        return sq_fail(ctx, SQ_ERR_ARG, "lowrank: layer shape %lldx%lld must be positive",
                       (long long)M, (long long)K);
    return SQ_OK;
}

sq_status sq_lowrank_rank_ratio(sq_ctx *ctx, int64_t M, int64_t K, double R, int64_t *r0)
{
    SQ_TRY(check_dims(ctx, M, K));
    if (!(R > 0) || !isfinite(R))
        return sq_fail(ctx, SQ_ERR_ARG, "lowrank: ratio %g must be a finite number > 0", R);
    /* computed in double: M·K can exceed what an int64 product of sizes allows */
    double r = floor((double)M * (double)K / (R * ((double)M + (double)K)));
    *r0 = (int64_t)r;
    return SQ_OK;
}

sq_status sq_lowrank_rank_energy(sq_ctx *ctx, sq_tensor *S, double tau, int64_t *r)
{
    if (!S || S->ndim != 1 || S->shape[0] < 1 || !sq_is_float(S->dtype))
        return sq_fail(ctx, SQ_ERR_ARG, "lowrank: energy needs a non-empty 1-d float tensor of singular values");
    if (!(tau > 0 && tau <= 1))
        return sq_fail(ctx, SQ_ERR_ARG, "lowrank: energy threshold %g outside (0,1]", tau);
    int64_t k = S->shape[0];
    double total = 0;
    for (int64_t i = 0; i < k; i++) {
        double s = sq_tensor_get_flat(S, i);
        total += s * s;
    }
    if (!(total > 0)) { /* a zero matrix: any rank holds all of nothing */
        *r = 1;
        return SQ_OK;
    }
    /* The relative slack stops τ = 1 from failing on rounding in the sum. */
    double need = tau * total * (1.0 - 1e-12), run = 0;
    for (int64_t i = 0; i < k; i++) {
        double s = sq_tensor_get_flat(S, i);
        run += s * s;
        if (run >= need) {
            *r = i + 1;
            return SQ_OK;
        }
    }
    *r = k;
    return SQ_OK;
}

sq_status sq_lowrank_quantize(sq_ctx *ctx, int64_t r, int64_t q, int64_t M, int64_t K, int64_t *rq)
{
    SQ_TRY(check_dims(ctx, M, K));
    if (q < 1) return sq_fail(ctx, SQ_ERR_ARG, "lowrank: quantum %lld < 1", (long long)q);
    if (r < 0) return sq_fail(ctx, SQ_ERR_ARG, "lowrank: rank %lld < 0", (long long)r);
    int64_t k = min64(M, K);
    if (q > k)
        return sq_fail(ctx, SQ_ERR_ARG, "lowrank: quantum %lld > min(%lld,%lld): no rank on the grid",
                       (long long)q, (long long)M, (long long)K);
    int64_t steps = (r + q / 2) / q; /* nearest, ties up: floor(r/q + 1/2) for integers */
    int64_t top = k / q;
    if (steps < 1) steps = 1;
    if (steps > top) steps = top;
    *rq = steps * q;
    return SQ_OK;
}

/* ---- linear ---------------------------------------------------------------------- */

static void energies(sq_tensor *S, int64_t r, double *kept, double *tail, double *total)
{
    double t = 0, h = 0;
    int64_t k = S->shape[0];
    for (int64_t i = 0; i < k; i++) {
        double s = sq_tensor_get_flat(S, i);
        t += s * s;
        if (i < r) h += s * s;
    }
    /* the tail summed on its own, not as total − head (cancellation) */
    double tl = 0;
    for (int64_t i = r; i < k; i++) {
        double s = sq_tensor_get_flat(S, i);
        tl += s * s;
    }
    *total = t;
    *tail = tl;
    *kept = t > 0 ? h / t : 1.0;
}

sq_status sq_lowrank_linear(sq_ctx *ctx, sq_tensor *W, const sq_lowrank_cfg *cfg, sq_tensor **A,
                            sq_tensor **B, sq_lowrank_info *info)
{
    *A = *B = NULL;
    char sb[64];
    SQ_TRY(sq_need_float_cpu(ctx, "lowrank", "weight", W));
    if (!cfg) return sq_fail(ctx, SQ_ERR_ARG, "lowrank: configuration is missing");
    if (W->ndim != 2)
        return sq_fail(ctx, SQ_ERR_SHAPE, "lowrank: weight must be 2-d (M,K), got %s",
                       SQ_SHAPE(W, sb));
    int64_t M = W->shape[0], K = W->shape[1];
    SQ_TRY(check_dims(ctx, M, K));
    if (cfg->quantum < 1)
        return sq_fail(ctx, SQ_ERR_ARG, "lowrank: quantum %lld < 1", (long long)cfg->quantum);
    int64_t raw = 0, rank = 0;
    switch (cfg->mode) {
    case SQ_RANK_FIXED:
        SQ_TRY(sq_lowrank_check_rank(ctx, "rank", cfg->rank, M, K));
        raw = rank = cfg->rank;
        break;
    case SQ_RANK_RATIO:
        SQ_TRY(sq_lowrank_rank_ratio(ctx, M, K, cfg->ratio, &raw));
        SQ_TRY(sq_lowrank_quantize(ctx, raw, cfg->quantum, M, K, &rank));
        break;
    case SQ_RANK_ENERGY:
        if (!(cfg->energy > 0 && cfg->energy <= 1))
            return sq_fail(ctx, SQ_ERR_ARG, "lowrank: energy threshold %g outside (0,1]", cfg->energy);
        if (cfg->quantum > min64(M, K)) /* fail before the SVD, not after */
            return sq_fail(ctx, SQ_ERR_ARG, "lowrank: quantum %lld > min(%lld,%lld): no rank on the grid",
                           (long long)cfg->quantum, (long long)M, (long long)K);
        break;
    default:
        return sq_fail(ctx, SQ_ERR_ARG, "lowrank: unknown rank mode %d", (int)cfg->mode);
    }

    sq_status st = SQ_OK;
    sq_tensor *U = NULL, *S = NULL, *Vt = NULL, *a = NULL, *b = NULL;
    sq_svd_info sinfo;
    SQ_CHECK(sq_svd(ctx, W, 0, &cfg->svd, &U, &S, &Vt, &sinfo));
    if (cfg->mode == SQ_RANK_ENERGY) {
        SQ_CHECK(sq_lowrank_rank_energy(ctx, S, cfg->energy, &raw));
        SQ_CHECK(sq_lowrank_quantize(ctx, raw, cfg->quantum, M, K, &rank));
    }
    int64_t k = S->shape[0], sa[2] = {M, rank}, sbs[2] = {rank, K};
    SQ_CHECK(sq_tensor_empty(ctx, W->dtype, 2, sa, &a));
    SQ_CHECK(sq_tensor_empty(ctx, W->dtype, 2, sbs, &b));
    /* A[m,i] = U[m,i]·√σᵢ ; B[i,k] = √σᵢ·Vt[i,k] (the root split keeps both
     * factors equally scaled, which is what fine-tuning wants) */
    if (W->dtype == SQ_F32) {
        const float *u = sq_tensor_data(U), *s = sq_tensor_data(S), *v = sq_tensor_data(Vt);
        float *ap = sq_tensor_data(a), *bp = sq_tensor_data(b);
        for (int64_t m = 0; m < M; m++)
            for (int64_t i = 0; i < rank; i++) ap[m * rank + i] = u[m * k + i] * sqrtf(s[i]);
        for (int64_t i = 0; i < rank; i++) {
            float rs = sqrtf(s[i]);
            for (int64_t j = 0; j < K; j++) bp[i * K + j] = rs * v[i * K + j];
        }
    } else {
        const double *u = sq_tensor_data(U), *s = sq_tensor_data(S), *v = sq_tensor_data(Vt);
        double *ap = sq_tensor_data(a), *bp = sq_tensor_data(b);
        for (int64_t m = 0; m < M; m++)
            for (int64_t i = 0; i < rank; i++) ap[m * rank + i] = u[m * k + i] * sqrt(s[i]);
        for (int64_t i = 0; i < rank; i++) {
            double rs = sqrt(s[i]);
            for (int64_t j = 0; j < K; j++) bp[i * K + j] = rs * v[i * K + j];
        }
    }
    if (info) {
        info->rank = rank;
        info->rank_raw = raw;
        energies(S, rank, &info->energy_kept, &info->tail_sq, &info->total_sq);
        info->svd = sinfo;
    }
    *A = a;
    *B = b;
    a = b = NULL;
done:
    sq_tensor_release(U);
    sq_tensor_release(S);
    sq_tensor_release(Vt);
    sq_tensor_release(a);
    sq_tensor_release(b);
    return st;
}

/* ---- Tucker-2 ------------------------------------------------------------------------ */

sq_status sq_lowrank_tucker2_rank_ratio(sq_ctx *ctx, int64_t O, int64_t C, int64_t kh, int64_t kw,
                                        double R, int64_t q, int64_t *r_out, int64_t *r_in)
{
    if (O < 1 || C < 1 || kh < 1 || kw < 1)
        return sq_fail(ctx, SQ_ERR_ARG, "lowrank: conv shape %lldx%lldx%lldx%lld must be positive",
                       (long long)O, (long long)C, (long long)kh, (long long)kw);
    if (!(R > 0) || !isfinite(R))
        return sq_fail(ctx, SQ_ERR_ARG, "lowrank: ratio %g must be a finite number > 0", R);
    double o = (double)O, c = (double)C, s = (double)(kh * kw);
    /* (C·O·s) α² + (C² + O²) α − C·O·s / R = 0, positive root */
    double qa = c * o * s, qb = c * c + o * o, qc = -c * o * s / R;
    double alpha = (-qb + sqrt(qb * qb - 4 * qa * qc)) / (2 * qa);
    SQ_TRY(sq_lowrank_quantize(ctx, (int64_t)floor(alpha * o), q, O, C * kh * kw, r_out));
    SQ_TRY(sq_lowrank_quantize(ctx, (int64_t)floor(alpha * c), q, C, O * kh * kw, r_in));
    return SQ_OK;
}

/* Energy kept by the leading r of a spectrum S. */
static double energy_of(sq_tensor *S, int64_t r)
{
    double kept, tail, total;
    energies(S, r, &kept, &tail, &total);
    return kept;
}

sq_status sq_lowrank_tucker2(sq_ctx *ctx, sq_tensor *W, int64_t r_out, int64_t r_in,
                             const sq_svd_opts *svd, sq_tensor **first, sq_tensor **core,
                             sq_tensor **last, sq_tucker2_info *info)
{
    *first = *core = *last = NULL;
    char sb[64];
    SQ_TRY(sq_need_float_cpu(ctx, "tucker2", "weight", W));
    if (W->ndim != 4)
        return sq_fail(ctx, SQ_ERR_SHAPE, "tucker2: weight must be 4-d (O,C,kh,kw), got %s",
                       SQ_SHAPE(W, sb));
    int64_t O = W->shape[0], C = W->shape[1], kh = W->shape[2], kw = W->shape[3], S = kh * kw;
    if (O < 1 || C < 1 || S < 1)
        return sq_fail(ctx, SQ_ERR_SHAPE, "tucker2: weight %s is empty", SQ_SHAPE(W, sb));
    SQ_TRY(sq_lowrank_check_rank(ctx, "rank_out", r_out, O, C * S));
    SQ_TRY(sq_lowrank_check_rank(ctx, "rank_in", r_in, C, O * S));

    sq_status st = SQ_OK;
    sq_dtype dt = W->dtype;
    sq_tensor *Wc = NULL, *W1 = NULL, *Wp = NULL, *W2 = NULL, *Uo = NULL, *So = NULL, *Vo = NULL;
    sq_tensor *Ui = NULL, *Si = NULL, *Vi = NULL, *T1 = NULL, *f = NULL, *g = NULL, *l = NULL;
    sq_svd_info io, ii;
    SQ_CHECK(sq_tensor_contiguous_raw(ctx, W, &Wc));
    /* mode-1 unfolding (O, C·S) is W itself; mode-2 (C, O·S) needs a permute */
    int64_t s1[2] = {O, C * S}, st1[2] = {C * S, 1};
    SQ_CHECK(sq_view_raw(ctx, Wc, 2, s1, st1, Wc->offset, &W1));
    int64_t sp[4] = {C, O, kh, kw}, stp[4] = {S, C * S, kw, 1};
    SQ_CHECK(sq_view_raw(ctx, Wc, 4, sp, stp, Wc->offset, &Wp));
    SQ_CHECK(sq_tensor_clone(ctx, Wp, &T1)); /* (C,O,kh,kw) contiguous */
    int64_t s2[2] = {C, O * S}, st2[2] = {O * S, 1};
    SQ_CHECK(sq_view_raw(ctx, T1, 2, s2, st2, T1->offset, &W2));
    sq_tensor_release(T1);
    T1 = NULL;
    SQ_CHECK(sq_svd(ctx, W1, 0, svd, &Uo, &So, &Vo, &io));
    SQ_CHECK(sq_svd(ctx, W2, 0, svd, &Ui, &Si, &Vi, &ii));
    int64_t ko = So->shape[0], ki = Si->shape[0];

    /* T1 (r_out, C·S) = U_outᵀ W_(1) */
    int64_t st_[2] = {r_out, C * S};
    SQ_CHECK(sq_tensor_empty(ctx, dt, 2, st_, &T1));
    sq_cpu_gemm(&ctx->stats, dt, 1, 0, r_out, C * S, O, 1.0, sq_tensor_data(Uo), ko,
                sq_tensor_data(W1), C * S, 0.0, sq_tensor_data(T1), C * S);
    /* core[a] (r_in, S) = U_inᵀ (r_in, C) · T1[a] (C, S) */
    int64_t sc[4] = {r_out, r_in, kh, kw};
    SQ_CHECK(sq_tensor_empty(ctx, dt, 4, sc, &g));
    size_t es = sq_dtype_size(dt);
    for (int64_t a = 0; a < r_out; a++)
        sq_cpu_gemm(&ctx->stats, dt, 1, 0, r_in, S, C, 1.0, sq_tensor_data(Ui), ki,
                    (const char *)sq_tensor_data(T1) + (size_t)(a * C * S) * es, S, 0.0,
                    (char *)sq_tensor_data(g) + (size_t)(a * r_in * S) * es, S);
    /* first (r_in,C,1,1) = U_inᵀ ; last (O,r_out,1,1) = U_out */
    int64_t sf[4] = {r_in, C, 1, 1}, sl[4] = {O, r_out, 1, 1};
    SQ_CHECK(sq_tensor_empty(ctx, dt, 4, sf, &f));
    SQ_CHECK(sq_tensor_empty(ctx, dt, 4, sl, &l));
    for (int64_t b = 0; b < r_in; b++)
        for (int64_t c = 0; c < C; c++)
            memcpy((char *)sq_tensor_data(f) + (size_t)(b * C + c) * es,
                   (const char *)sq_tensor_data(Ui) + (size_t)(c * ki + b) * es, es);
    for (int64_t o = 0; o < O; o++)
        memcpy((char *)sq_tensor_data(l) + (size_t)(o * r_out) * es,
               (const char *)sq_tensor_data(Uo) + (size_t)(o * ko) * es, (size_t)r_out * es);
    if (info) {
        info->energy_out = energy_of(So, r_out);
        info->energy_in = energy_of(Si, r_in);
        info->svd_out = io;
        info->svd_in = ii;
    }
    *first = f;
    *core = g;
    *last = l;
    f = g = l = NULL;
done:
    sq_tensor_release(Wc);
    sq_tensor_release(W1);
    sq_tensor_release(Wp);
    sq_tensor_release(W2);
    sq_tensor_release(Uo);
    sq_tensor_release(So);
    sq_tensor_release(Vo);
    sq_tensor_release(Ui);
    sq_tensor_release(Si);
    sq_tensor_release(Vi);
    sq_tensor_release(T1);
    sq_tensor_release(f);
    sq_tensor_release(g);
    sq_tensor_release(l);
    return st;
}

/* ---- cost --------------------------------------------------------------------------- */

sq_lowrank_cost sq_lowrank_linear_cost(int64_t M, int64_t K, int64_t r, int has_bias, int64_t rows)
{
    sq_lowrank_cost c;
    int64_t bias = has_bias ? M : 0;
    c.params_dense = M * K + bias;
    c.params_lowrank = r * K + M * r + bias;
    c.flops_dense = 2.0 * (double)rows * (double)M * (double)K;
    c.flops_lowrank = 2.0 * (double)rows * (double)r * ((double)K + (double)M);
    return c;
}

sq_lowrank_cost sq_lowrank_conv_cost(int64_t O, int64_t C, int64_t kh, int64_t kw, int64_t r_out,
                                     int64_t r_in, int has_bias, int64_t N, int64_t H, int64_t W,
                                     int stride, int pad)
{
    sq_lowrank_cost c;
    int64_t bias = has_bias ? O : 0, S = kh * kw;
    int64_t Ho = stride > 0 ? (H + 2 * pad - kh) / stride + 1 : 0;
    int64_t Wo = stride > 0 ? (W + 2 * pad - kw) / stride + 1 : 0;
    if (Ho < 0) Ho = 0;
    if (Wo < 0) Wo = 0;
    double in_px = (double)N * (double)H * (double)W, out_px = (double)N * (double)Ho * (double)Wo;
    c.params_dense = O * C * S + bias;
    c.params_lowrank = r_in * C + r_out * r_in * S + O * r_out + bias;
    c.flops_dense = 2.0 * out_px * (double)O * (double)C * (double)S;
    c.flops_lowrank = 2.0 * (in_px * (double)C * (double)r_in +
                             out_px * (double)r_in * (double)r_out * (double)S +
                             out_px * (double)r_out * (double)O);
    return c;
}

/* ---- rank search ---------------------------------------------------------------------- */

sq_status sq_lowrank_search(sq_ctx *ctx, const sq_rank_search_cfg *cfg, sq_rank_time_fn time_fn,
                            void *time_arg, sq_rank_trial *trials, int max_trials, int *n_trials,
                            int64_t *best)
{
    *n_trials = 0;
    *best = 0;
    if (!cfg || !time_fn || !trials)
        return sq_fail(ctx, SQ_ERR_ARG, "lowrank search: configuration, time callback and trial array are required");
    if (cfg->window < 0)
        return sq_fail(ctx, SQ_ERR_ARG, "lowrank search: window %lld < 0", (long long)cfg->window);
    if (cfg->max_params < 0)
        return sq_fail(ctx, SQ_ERR_ARG, "lowrank search: parameter budget %lld < 0",
                       (long long)cfg->max_params);
    int64_t centre, q = cfg->quantum;
    SQ_TRY(sq_lowrank_quantize(ctx, cfg->r0, q, cfg->M, cfg->K, &centre));
    int64_t c = centre / q, top = min64(cfg->M, cfg->K) / q;
    int64_t lo = c - cfg->window < 1 ? 1 : c - cfg->window;
    int64_t hi = c + cfg->window > top ? top : c + cfg->window;
    int64_t n = hi - lo + 1;
    if (n > max_trials)
        return sq_fail(ctx, SQ_ERR_ARG, "lowrank search: %lld candidates but room for %d trials",
                       (long long)n, max_trials);
    int found = 0;
    for (int64_t j = lo; j <= hi; j++) {
        sq_rank_trial *t = &trials[*n_trials];
        t->rank = j * q;
        t->params = cfg->params ? cfg->params(t->rank, cfg->params_arg) : t->rank * (cfg->M + cfg->K);
        t->within_budget = cfg->max_params == 0 || t->params <= cfg->max_params;
        t->timed = 0;
        t->seconds = NAN;
        (*n_trials)++;
        if (!t->within_budget && !cfg->time_over_budget) continue;
        double sec = NAN;
        SQ_TRY(time_fn(ctx, t->rank, time_arg, &sec));
        if (!(sec >= 0) || !isfinite(sec))
            return sq_fail(ctx, SQ_ERR_ARG, "lowrank search: time callback gave %g s for rank %lld",
                           sec, (long long)t->rank);
        t->seconds = sec;
        t->timed = 1;
        /* ascending order: a strict < keeps the smaller rank on a tie */
        if (t->within_budget && (!found || sec < trials[found - 1].seconds)) found = *n_trials;
    }
    if (!found)
        return sq_fail(ctx, SQ_ERR_ARG,
                       "lowrank search: no rank in %lld..%lld (step %lld) meets the budget of %lld parameters (rank %lld needs %lld)",
                       (long long)(lo * q), (long long)(hi * q), (long long)q,
                       (long long)cfg->max_params, (long long)trials[0].rank,
                       (long long)trials[0].params);
    *best = trials[found - 1].rank;
    return SQ_OK;
}
