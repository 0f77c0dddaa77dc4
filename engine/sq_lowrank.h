/* sq_lowrank.h — low-rank decomposition of linear and conv weights with
 * rank quantization (methods.md §2, Hajimolahoseini et al. 2309.03824).
 *
 *   linear  W (M,K)  ->  B = Σ_r^½ V_rᵀ (r,K)   first factor, no bias
 *                        A = U_r Σ_r^½ (M,r)    second factor, carries the bias
 *                        so x Wᵀ + b ≈ (x Bᵀ) Aᵀ + b
 *   conv    W (O,C,kh,kw)  ->  Tucker-2 (HOSVD on the output and input modes):
 *                        first (r_in,C,1,1)      = U_inᵀ
 *                        core  (r_out,r_in,kh,kw) = W ×₁ U_outᵀ ×₂ U_inᵀ
 *                                                  (original stride / padding)
 *                        last  (O,r_out,1,1)     = U_out (carries the bias)
 *
 * Rank choice: from a compression ratio R, r0 = floor(M·K / (R·(M+K))); or
 * from an energy threshold τ, the smallest r with Σ_{i≤r}σᵢ²/Σσᵢ² ≥ τ.
 * Rank quantization (sq_lowrank_quantize) then moves r to the q-grid:
 *   r_q = q · floor(r/q + ½)            nearest multiple, ties round up,
 *   clamped to [q, q · floor(min(M,K)/q)].
 * The upper clamp stays on the grid (a rank of min(M,K) that is not a
 * multiple of q is never produced); q > min(M,K) has no grid point and is
 * an error.  An explicitly requested rank is taken as given.
 *
 * A rank search (sq_lowrank_search) times grid ranks around r0 through a
 * caller-supplied callback and picks the fastest one within a parameter
 * budget; the engine never times anything itself here, so the same search
 * runs on any device the callback measures.
 *
 * Every function checks its arguments first and fails with SQ_ERR_ARG and a
 * message such as "lowrank: rank 80 > min(64,128)". */
#ifndef SQ_LOWRANK_H
#define SQ_LOWRANK_H

#include "sq_linalg.h"

typedef enum {
    SQ_RANK_FIXED = 0,  /* cfg.rank as given */
    SQ_RANK_RATIO,      /* r0 from cfg.ratio, then quantized */
    SQ_RANK_ENERGY      /* smallest r reaching cfg.energy, then quantized */
} sq_rank_mode;

typedef struct {
    sq_rank_mode mode;
    int64_t rank;        /* SQ_RANK_FIXED: 1 <= rank <= min(M,K) */
    double ratio;        /* SQ_RANK_RATIO: R > 0 (dense params / factor params) */
    double energy;       /* SQ_RANK_ENERGY: τ in (0,1] */
    int64_t quantum;     /* q >= 1 (1: no quantization); unused by SQ_RANK_FIXED */
    sq_svd_opts svd;     /* driver choice (default SQ_SVD_AUTO) */
} sq_lowrank_cfg;

/* Defaults: fixed mode with rank 0 (so the caller must set one), q = 1, auto SVD. */
sq_lowrank_cfg sq_lowrank_cfg_default(void);

/* What a decomposition did (for the run record). */
typedef struct {
    int64_t rank;         /* the rank used */
    int64_t rank_raw;     /* before quantization (== rank for SQ_RANK_FIXED) */
    double energy_kept;   /* Σ_{i≤r}σᵢ² / Σσᵢ² */
    double tail_sq;       /* Σ_{i>r}σᵢ² = ‖W − A B‖_F² (exact arithmetic) */
    double total_sq;      /* Σσᵢ² = ‖W‖_F² */
    sq_svd_info svd;
} sq_lowrank_info;

/* ---- rank choice ----------------------------------------------------------- */
/* r0 = floor(M·K / (R·(M+K))), R > 0; may be 0 (quantization lifts it to q). */
sq_status sq_lowrank_rank_ratio(sq_ctx *ctx, int64_t M, int64_t K, double R, int64_t *r0);
/* S (k) singular values, descending; τ in (0,1].  An all-zero S gives 1. */
sq_status sq_lowrank_rank_energy(sq_ctx *ctx, sq_tensor *S, double tau, int64_t *r);
/* Rounds r >= 0 to the q-grid as described at the top of this file. */
sq_status sq_lowrank_quantize(sq_ctx *ctx, int64_t r, int64_t q, int64_t M, int64_t K,
                              int64_t *rq);
/* Checks 1 <= rank <= min(M,K) ("rank 80 > min(64,128)"). */
sq_status sq_lowrank_check_rank(sq_ctx *ctx, const char *what, int64_t rank, int64_t M, int64_t K);

/* ---- decomposition ----------------------------------------------------------- */
/* W (M,K) float32/float64 -> A (M,r), B (r,K), same dtype, new references
 * owned by the caller (NULL on failure).  info may be NULL.  The SVD runs in
 * W's dtype. */
sq_status sq_lowrank_linear(sq_ctx *ctx, sq_tensor *W, const sq_lowrank_cfg *cfg, sq_tensor **A,
                            sq_tensor **B, sq_lowrank_info *info);

/* Tucker-2 ranks from a compression ratio R for a conv W (O,C,kh,kw): the
 * same fraction α of both channel counts, with
 *   C·r_in + r_in·r_out·kh·kw + r_out·O = O·C·kh·kw / R   at r_in = αC, r_out = αO,
 * floored, then each quantized with q (against min(O, C·kh·kw) and
 * min(C, O·kh·kw), the ranks of the two unfoldings). */
sq_status sq_lowrank_tucker2_rank_ratio(sq_ctx *ctx, int64_t O, int64_t C, int64_t kh, int64_t kw,
                                        double R, int64_t q, int64_t *r_out, int64_t *r_in);

typedef struct {
    double energy_out, energy_in;   /* energy kept by the leading vectors of each unfolding */
    sq_svd_info svd_out, svd_in;
} sq_tucker2_info;

/* W (O,C,kh,kw) -> first (r_in,C,1,1), core (r_out,r_in,kh,kw), last (O,r_out,1,1);
 * 1 <= r_out <= min(O, C·kh·kw), 1 <= r_in <= min(C, O·kh·kw).
 * New references owned by the caller (NULL on failure); info may be NULL. */
sq_status sq_lowrank_tucker2(sq_ctx *ctx, sq_tensor *W, int64_t r_out, int64_t r_in,
                             const sq_svd_opts *svd, sq_tensor **first, sq_tensor **core,
                             sq_tensor **last, sq_tucker2_info *info);

/* ---- cost ------------------------------------------------------------------------ */
typedef struct {
    int64_t params_dense, params_lowrank;   /* weights (+ bias) */
    double flops_dense, flops_lowrank;      /* 2·MACs of one forward pass */
} sq_lowrank_cost;

/* Linear (M,K) at rank r for `rows` input rows (batch × tokens). */
sq_lowrank_cost sq_lowrank_linear_cost(int64_t M, int64_t K, int64_t r, int has_bias, int64_t rows);
/* Conv (O,C,kh,kw) with Tucker-2 ranks for N images of H×W at stride / pad:
 * the first 1×1 runs at the input resolution, core and last at the output's. */
sq_lowrank_cost sq_lowrank_conv_cost(int64_t O, int64_t C, int64_t kh, int64_t kw, int64_t r_out,
                                     int64_t r_in, int has_bias, int64_t N, int64_t H, int64_t W,
                                     int stride, int pad);

/* ---- rank search ----------------------------------------------------------------- */
/* Seconds for one candidate rank (forward+backward of the decomposed layer,
 * say, as the caller measures it).  A failure aborts the search. */
typedef sq_status (*sq_rank_time_fn)(sq_ctx *ctx, int64_t rank, void *arg, double *seconds);
/* Parameters a candidate rank costs (NULL: linear, r·(M+K)). */
typedef int64_t (*sq_rank_params_fn)(int64_t rank, void *arg);

typedef struct {
    int64_t M, K;          /* layer shape (the grid's upper end is q·floor(min(M,K)/q)) */
    int64_t r0;            /* centre (need not be on the grid: it is quantized first) */
    int64_t quantum;       /* q >= 1 */
    int64_t window;        /* grid steps each side of the centre (>= 0): 2·window+1 candidates at most */
    int64_t max_params;    /* budget on params(rank); 0: no budget */
    int time_over_budget;  /* 1: time candidates over the budget too (for the latency-vs-rank record) */
    sq_rank_params_fn params; /* NULL: r·(M+K) */
    void *params_arg;
} sq_rank_search_cfg;

typedef struct {
    int64_t rank;
    int64_t params;
    int within_budget;
    int timed;             /* 0 when skipped (over budget and !time_over_budget) */
    double seconds;        /* NaN when not timed */
} sq_rank_trial;

/* Evaluates candidates q·(c+j), j = -window..window, c = quantize(r0)/q,
 * keeping those in [q, q·floor(min(M,K)/q)], in ascending rank order.
 * trials: caller-owned array of max_trials >= 2·window+1 entries; *n_trials
 * candidates are written (all of them, also on a budget failure).  *best is
 * the fastest candidate within budget (ties: the smaller rank); if none is
 * within budget the call fails with SQ_ERR_ARG naming the budget. */
sq_status sq_lowrank_search(sq_ctx *ctx, const sq_rank_search_cfg *cfg, sq_rank_time_fn time_fn,
                            void *time_arg, sq_rank_trial *trials, int max_trials, int *n_trials,
                            int64_t *best);

#endif
