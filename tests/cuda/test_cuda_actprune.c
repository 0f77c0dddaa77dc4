/* test_cuda_actprune.c — the GPU prune-and-pack and BSR weight gradient
 * (kernels/cuda/sq_cuda_actprune.h) against their CPU references
 * (sq_bsr_prune_pack with criterion l2, sq_bsr_build_transpose, sq_bsr_dw).
 *
 * Inputs: fresh random numbers (never zero) at odd sizes (R, K, M not
 * multiples of b), blocks 8/16/32/64, keep {1, .75, .5, .3, .1}, scopes
 * tensor and row; x on the device contiguous, row-padded (16-byte aligned
 * and not), or a transposed view; dy with a padded row stride.  Two input
 * kinds stress the selection: values on a coarse grid (k/4, |k| <= 4) with
 * duplicated blocks, so that block scores are exact and tie often (the tie
 * rule "lower block index wins" must match the CPU's exactly), and inputs
 * with NaN/inf entries (NaN scores rank lowest).
 *
 * Checks and tolerances:
 *   prune-and-pack: nnzb, row_ptr, col_idx, values (bitwise), col_ptr,
 *     t_row, t_blk all equal to the CPU's; every output poisoned first.
 *   dW: ||got - ref|| / ||ref|| against a float64 reference computed here
 *     from the same BSR: TF32 <= 2e-3 (10-bit mantissas: ~3e-4 expected),
 *     3xTF32 <= 1e-5 (fp32 level); the float32 CPU sq_bsr_dw is held to
 *     1e-5 against the same reference.  dw has a padded row stride whose
 *     padding must stay poisoned (no stray writes); splits 1, 3 and auto
 *     must all pass; one rerun must be bitwise identical (no atomics).
 *
 * The controls (sq_cuda_bsr_prune_pack_crit):
 *   topk_unstructured: the CSR (row_ptr, col_idx, values bitwise) and its
 *     transposed index, fused and rebuilt, equal the CPU's on the same
 *     layouts, with coarse values and signed zeros (ties in |x|) and NaN/inf;
 *     the CSR dW (sq_cuda_csr_dw) against float64 from the same entries:
 *     relative Frobenius <= 1e-6 and every entry within 1.2e-7 relative
 *     (float64 sums, one float32 rounding), padding untouched, a rerun
 *     bitwise equal.
 *   random (GPU Philox, not the CPU's stream, so no entry-wise reference):
 *     exactly k blocks (k per block row), ascending, values = x's blocks,
 *     transposed index = the CPU's built from the same BSR; same seed ->
 *     same blocks, another seed or the next call -> other blocks, one Philox
 *     offset per call; over 3000 draws every block's frequency within 5
 *     standard deviations of k/nblocks (kr/nbc per row).
 *
 * Exit codes: 0 all passed, 1 a failure, 77 no usable GPU (ctest: skipped). */
#include "cuda/sq_cuda_actprune.h"
#include "cuda/sq_cuda_kernels.h"
#include "sq_bsr.h"
#include "sq_device.h"
#include "sq_select.h"
#include "sq_tensor.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_test.h"

static void *dalloc(tc *t, size_t bytes)
{
    void *d = NULL;
    if (sq_cuda_alloc(&t->ctx, bytes, &d) != SQ_OK) die("device alloc: %s", t->ctx.err);
    t->live++;
    return d;
}

static void dfree(tc *t, void *d)
{
    if (!d) return;
    sq_cuda_free_block(&t->ctx, d);
    t->live--;
}

static void h2d(tc *t, void *d, const void *h, size_t n)
{
    if (n && sq_cuda_copy_h2d(&t->ctx, d, h, n) != SQ_OK) die("h2d: %s", t->ctx.err);
}

/* returns 0 and reports a failure when the copy (or an earlier kernel) failed */
static int d2h(tc *t, void *h, const void *d, size_t n)
{
    if (!n) return 1;
    sq_status st = sq_cuda_copy_d2h(&t->ctx, h, d, n);
    if (st != SQ_OK) report(t, 0, "d2h: %s: %s", sq_status_name(st), t->ctx.err);
    return st == SQ_OK;
}

static void poison(tc *t, sq_dtype dt, void *d, int64_t n)
{
    if (n > 0 && sq_cuda_fill(&t->ctx, dt, d, n, dt == SQ_F32 ? NAN : -7.0) != SQ_OK)
        die("poison: %s", t->ctx.err);
}

/* a value that is never zero: N(0,1) pushed away from 0, or k/4 with 1 <= |k| <= 4 */
static double draw(tc *t, int coarse)
{
    if (coarse) {
        int k = 1 + (int)(sq_rng_uniform(&t->rng) * 4);
        return (sq_rng_uniform(&t->rng) < 0.5 ? -k : k) / 4.0;
    }
    double v = sq_rng_normal(&t->rng);
    return v >= 0 ? v + 1e-3 : v - 1e-3;
}

/* ---- one prune-and-pack case (+ dW on its result) ----------------------------------- */

enum { LAY_CONTIG, LAY_PAD_ALIGNED, LAY_PAD_ODD, LAY_TRANSPOSED, NLAY };
static const char *lay_name[NLAY] = {"contig", "pad16", "pad-odd", "transposed"};
enum { DATA_NORMAL, DATA_COARSE, DATA_NONFINITE };

static int cmp_i64(const int64_t *a, const int64_t *b, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        if (a[i] != b[i]) return (int)(i < 1000000 ? i : 1000000);
    return -1;
}
static int cmp_i32(const int32_t *a, const int32_t *b, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        if (a[i] != b[i]) return (int)(i < 1000000 ? i : 1000000);
    return -1;
}

static double rel(const double *ref, const float *got, int64_t M, int64_t K, int64_t ld, int *nonfinite)
{
    double num = 0, den = 0;
    *nonfinite = 0;
    for (int64_t m = 0; m < M; m++)
        for (int64_t k = 0; k < K; k++) {
            double g = got[m * ld + k], r = ref[m * K + k];
            if (!isfinite(g)) (*nonfinite)++;
            num += (g - r) * (g - r);
            den += r * r;
        }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

static void test_dw(tc *t, const char *tag, sq_bsr *ref, const sq_cuda_bsr *gm, const float *x, int64_t M,
                    int big)
{
    sq_ctx *ctx = &t->ctx;
    /* dy rows padded; by 4 when M % 4 == 0, so that the 16-byte (wide-tile)
     * path runs, else by 3 (scalar loads) */
    const int64_t R = ref->rows, K = ref->cols, b = ref->b, ldy = M + (M % 4 == 0 ? 4 : 3), ldw = K + 2;
    const int vec = M % 4 == 0;
    /* dy (R,M) random, on the device with row stride ldy */
    float *dyh = xmalloc((size_t)(R * ldy) * 4);
    for (int64_t i = 0; i < R * ldy; i++) dyh[i] = (float)draw(t, 0);
    float *dyd = dalloc(t, (size_t)(R * ldy) * 4);
    h2d(t, dyd, dyh, (size_t)(R * ldy) * 4);

    /* float64 reference from the kept blocks: dW[m, j*b+c] += dy[r,m] * x[r, j*b+c] */
    double *dwd = calloc((size_t)(M * K), sizeof *dwd);
    if (!dwd) die("out of host memory");
    const int64_t *rp = sq_tensor_data(ref->row_ptr);
    const int32_t *ci = sq_tensor_data(ref->col_idx);
    for (int64_t i = 0; i < ref->nbr; i++)
        for (int64_t p = rp[i]; p < rp[i + 1]; p++)
            for (int64_t r = i * b; r < (i + 1) * b && r < R; r++)
                for (int64_t c = (int64_t)ci[p] * b; c < ((int64_t)ci[p] + 1) * b && c < K; c++) {
                    double xv = x[r * K + c];
                    const float *dr = dyh + r * ldy;
                    for (int64_t m = 0; m < M; m++) dwd[m * K + c] += (double)dr[m] * xv;
                }

    /* the CPU float32 kernel against the same reference */
    int64_t dsh[2] = {R, M}, wsh[2] = {M, K};
    sq_tensor *dyt = NULL, *dwt = NULL;
    if (sq_tensor_empty(ctx, SQ_F32, 2, dsh, &dyt) != SQ_OK || sq_tensor_empty(ctx, SQ_F32, 2, wsh, &dwt) != SQ_OK)
        die("host tensors: %s", ctx->err);
    for (int64_t r = 0; r < R; r++) memcpy((float *)sq_tensor_data(dyt) + r * M, dyh + r * ldy, (size_t)M * 4);
    int nf = 0;
    sq_status st = sq_bsr_dw(ctx, dyt, ref, dwt);
    if (st != SQ_OK) report(t, 0, "%s cpu sq_bsr_dw: %s", tag, ctx->err);
    else {
        double e = rel(dwd, sq_tensor_data(dwt), M, K, K, &nf);
        if (e > 1e-5 || nf) report(t, 0, "%s cpu sq_bsr_dw vs float64: rel %.2e", tag, e);
    }

    float *dwh = xmalloc((size_t)(M * ldw) * 4), *first = xmalloc((size_t)(M * ldw) * 4);
    float *dwdev = dalloc(t, (size_t)(M * ldw) * 4);
    const int splits_list[3] = {0, 1, 3};
    /* CTA tile rows: automatic (kernel too), then each width forced with each
     * kernel (16-byte path only; wgmma for TF32, b 32/64 on an sm_90a build) */
    const int mt_list[4] = {0, 128, 192, 256};
    const int wg = sq_cuda_bsr_dw_has_wgmma(ctx) && (b == 32 || b == 64) && vec;
    for (int mi = 0; mi < (vec ? 4 : 1); mi++)
    for (int kv = 0; kv < 2; kv++)
    for (int pr = 0; pr < 2; pr++)
        for (int si = 0; si < 3; si++) {
            if (!big && si == 0 && pr == 1) continue;
            if (kv == 1 && (mi == 0 || pr == 1 || !wg)) continue;
            sq_cuda_dw_kernel kern = mi == 0 ? SQ_CUDA_DW_AUTO : kv ? SQ_CUDA_DW_WGMMA : SQ_CUDA_DW_MMA;
            const char *kname = mi == 0 ? "auto" : kv ? "wgmma" : "mma";
            sq_cuda_dw_prec prec = pr ? SQ_CUDA_DW_3XTF32 : SQ_CUDA_DW_TF32;
            double tol = pr ? 1e-5 : 2e-3;
            poison(t, SQ_F32, dwdev, M * ldw);
            st = sq_cuda_bsr_dw_tile(ctx, dwdev, ldw, dyd, ldy, M, gm, prec, splits_list[si], mt_list[mi], kern);
            if (st != SQ_OK) {
                report(t, 0, "%s dW %s splits %d tile %d %s: %s: %s", tag, pr ? "3xtf32" : "tf32", splits_list[si],
                       mt_list[mi], kname, sq_status_name(st), ctx->err);
                continue;
            }
            if (!d2h(t, dwh, dwdev, (size_t)(M * ldw) * 4)) continue;
            double e = rel(dwd, dwh, M, K, ldw, &nf);
            int64_t stray = 0;
            for (int64_t m = 0; m < M; m++)
                for (int64_t c = K; c < ldw; c++) stray += !isnan(dwh[m * ldw + c]);
            double ecpu = 0;
            {
                int nf2;
                float *cw = sq_tensor_data(dwt);
                double *cd = xmalloc((size_t)(M * K) * sizeof *cd);
                for (int64_t q = 0; q < M * K; q++) cd[q] = cw[q];
                ecpu = rel(cd, dwh, M, K, ldw, &nf2);
                free(cd);
            }
            report(t, e <= tol && nf == 0 && stray == 0,
                   "%s dW M=%lld tile %-4s %-5s %-6s splits %-4s rel %.2e (tol %.0e; vs cpu f32 %.2e)%s%s", tag,
                   (long long)M, mi == 0 ? (vec ? "auto" : "128") : mi == 1 ? "128" : mi == 2 ? "192" : "256",
                   kname, pr ? "3xtf32" : "tf32",
                   si == 0 ? "auto" : si == 1 ? "1" : "3", e, tol, ecpu, nf ? " NON-FINITE" : "",
                   stray ? " WROTE PADDING" : "");
            if (mi == 0 && pr == 0 && si == 1) memcpy(first, dwh, (size_t)(M * ldw) * 4);
        }
    /* rerun: bitwise the same */
    poison(t, SQ_F32, dwdev, M * ldw);
    st = sq_cuda_bsr_dw(ctx, dwdev, ldw, dyd, ldy, M, gm, SQ_CUDA_DW_TF32, 1);
    if (st == SQ_OK && d2h(t, dwh, dwdev, (size_t)(M * ldw) * 4)) {
        int same = 1;
        for (int64_t m = 0; m < M && same; m++) same = memcmp(dwh + m * ldw, first + m * ldw, (size_t)K * 4) == 0;
        if (!same) report(t, 0, "%s dW rerun differs bitwise", tag);
    }
    sq_tensor_release(dyt);
    sq_tensor_release(dwt);
    dfree(t, dyd);
    dfree(t, dwdev);
    free(dyh);
    free(dwh);
    free(first);
    free(dwd);
}

/* Prune-and-pack x (R,K) on both sides, compare everything; then dW. */
static void test_case(tc *t, int64_t R, int64_t K, int64_t b, double keep, sq_prune_scope scope, int lay,
                      int data, int64_t M, int big)
{
    sq_ctx *ctx = &t->ctx;
    char tag[160];
    snprintf(tag, sizeof tag, "%lldx%lld b%-2lld keep %.2f %-6s %-10s%s", (long long)R, (long long)K,
             (long long)b, keep, sq_prune_scope_name(scope), lay_name[lay],
             data == DATA_COARSE ? " coarse" : data == DATA_NONFINITE ? " nan/inf" : "");
    /* x: float32 values on the host, contiguous */
    float *x = xmalloc((size_t)(R * K) * 4);
    for (int64_t i = 0; i < R * K; i++) x[i] = (float)draw(t, data == DATA_COARSE);
    int64_t nbr = (R + b - 1) / b, nbc = (K + b - 1) / b;
    if (data == DATA_COARSE && nbr * nbc >= 4 && R >= b && K >= b) {
        /* copy full block (0,0) over a few others: exact ties at equal scores */
        for (int q = 0; q < 3; q++) {
            int64_t id = 1 + (int64_t)(sq_rng_uniform(&t->rng) * (double)(nbr * nbc - 1));
            int64_t i = id / nbc, j = id % nbc;
            if ((i + 1) * b > R || (j + 1) * b > K) continue;
            for (int64_t r = 0; r < b; r++) memcpy(x + (i * b + r) * K + j * b, x + r * K, (size_t)b * 4);
        }
    }
    if (data == DATA_NONFINITE) {
        x[(R / 2) * K + K / 3] = NAN;
        x[(R - 1) * K + K - 1] = INFINITY;
        x[0] = -INFINITY;
    }
    /* CPU reference */
    int64_t sh[2] = {R, K};
    sq_tensor *xt = NULL;
    if (sq_tensor_empty(ctx, SQ_F32, 2, sh, &xt) != SQ_OK) die("host tensor: %s", ctx->err);
    memcpy(sq_tensor_data(xt), x, (size_t)(R * K) * 4);
    sq_bsr *ref = NULL;
    sq_status st = sq_bsr_prune_pack(ctx, xt, b, keep, SQ_PRUNE_L2, scope, SQ_MEM_OTHER, &ref);
    if (st == SQ_OK) st = sq_bsr_build_transpose(ctx, ref, SQ_MEM_OTHER);
    if (st != SQ_OK) die("cpu prune_pack: %s", ctx->err);

    /* device copy of x in the chosen layout */
    int64_t s0, s1, n;
    switch (lay) {
    case LAY_PAD_ALIGNED: s0 = ((K + 3) / 4) * 4 + 4, s1 = 1, n = R * s0; break;
    case LAY_PAD_ODD: s0 = K + 3, s1 = 1, n = R * s0; break;
    case LAY_TRANSPOSED: s0 = 1, s1 = R + 1, n = K * s1; break;
    default: s0 = K, s1 = 1, n = R * K; break;
    }
    float *xh = xmalloc((size_t)n * 4);
    for (int64_t i = 0; i < n; i++) xh[i] = 12345.0f; /* gaps: large, so reading them would change scores */
    for (int64_t r = 0; r < R; r++)
        for (int64_t c = 0; c < K; c++) xh[r * s0 + c * s1] = x[r * K + c];
    float *xd = dalloc(t, (size_t)n * 4);
    h2d(t, xd, xh, (size_t)n * 4);

    sq_cuda_bsr gm;
    st = sq_cuda_bsr_shape(ctx, R, K, b, keep, scope, &gm);
    if (st == SQ_OK) st = sq_cuda_bsr_alloc(ctx, &gm, SQ_MEM_SAVED);
    if (st != SQ_OK) die("bsr alloc: %s", ctx->err);
    int64_t nz = gm.nnzb, bb = b * b;
    poison(t, SQ_I64, gm.row_ptr, nbr + 1);
    poison(t, SQ_I32, gm.col_idx, nz);
    poison(t, SQ_F32, gm.values, nz * bb);
    poison(t, SQ_I64, gm.col_ptr, nbc + 1);
    poison(t, SQ_I32, gm.t_row, nz);
    poison(t, SQ_I32, gm.t_blk, nz);
    st = sq_cuda_bsr_prune_pack(ctx, &gm, xd, s0, s1, keep, scope);
    if (st != SQ_OK) {
        report(t, 0, "%s prune_pack: %s: %s", tag, sq_status_name(st), ctx->err);
    } else {
        int64_t *rp = xmalloc((size_t)(nbr + 1) * 8), *cp = xmalloc((size_t)(nbc + 1) * 8);
        int32_t *ci = xmalloc((size_t)nz * 4 + 4), *tr = xmalloc((size_t)nz * 4 + 4), *tb = xmalloc((size_t)nz * 4 + 4);
        float *v = xmalloc((size_t)(nz * bb) * 4 + 4);
        int ok = d2h(t, rp, gm.row_ptr, (size_t)(nbr + 1) * 8) && d2h(t, ci, gm.col_idx, (size_t)nz * 4) &&
                 d2h(t, v, gm.values, (size_t)(nz * bb) * 4) && d2h(t, cp, gm.col_ptr, (size_t)(nbc + 1) * 8) &&
                 d2h(t, tr, gm.t_row, (size_t)nz * 4) && d2h(t, tb, gm.t_blk, (size_t)nz * 4);
        if (ok) {
            int e_rp = cmp_i64(rp, sq_tensor_data(ref->row_ptr), nbr + 1);
            int e_ci = nz == ref->nnzb ? cmp_i32(ci, sq_tensor_data(ref->col_idx), nz) : 0;
            int e_v = nz == ref->nnzb ? memcmp(v, sq_tensor_data(ref->values), (size_t)(nz * bb) * 4) != 0 : 1;
            int e_cp = cmp_i64(cp, sq_tensor_data(ref->col_ptr), nbc + 1);
            int e_tr = nz == ref->nnzb ? cmp_i32(tr, sq_tensor_data(ref->t_row), nz) : 0;
            int e_tb = nz == ref->nnzb ? cmp_i32(tb, sq_tensor_data(ref->t_blk), nz) : 0;
            int good = nz == ref->nnzb && e_rp < 0 && e_ci < 0 && !e_v && e_cp < 0 && e_tr < 0 && e_tb < 0;
            report(t, good, "%s prune_pack nnzb %lld/%lld: BSR and transposed index %s", tag, (long long)nz,
                   (long long)(nbr * nbc), good ? "equal the CPU's" : "DIFFER");
            if (!good)
                printf("       nnzb gpu %lld cpu %lld; first diff row_ptr %d col_idx %d values %d col_ptr %d "
                       "t_row %d t_blk %d\n", (long long)nz, (long long)ref->nnzb, e_rp, e_ci, e_v, e_cp, e_tr, e_tb);
            if (good && M > 0 && (b == 8 || b == 16 || b == 32 || b == 64) && data == DATA_NORMAL)
                test_dw(t, tag, ref, &gm, x, M, big);
        }
        free(rp), free(cp), free(ci), free(tr), free(tb), free(v);
    }
    sq_cuda_bsr_free(ctx, &gm);
    dfree(t, xd);
    sq_bsr_free(ref);
    sq_tensor_release(xt);
    free(x);
    free(xh);
}

/* ---- the controls: topk_unstructured (CSR) and random ---------------------------------- */

/* x (R,K) host floats -> a device copy in layout lay; *s0, *s1 its strides */
static float *upload(tc *t, const float *x, int64_t R, int64_t K, int lay, int64_t *s0, int64_t *s1)
{
    int64_t n;
    switch (lay) {
    case LAY_PAD_ALIGNED: *s0 = ((K + 3) / 4) * 4 + 4, *s1 = 1, n = R * *s0; break;
    case LAY_PAD_ODD: *s0 = K + 3, *s1 = 1, n = R * *s0; break;
    case LAY_TRANSPOSED: *s0 = 1, *s1 = R + 1, n = K * *s1; break;
    default: *s0 = K, *s1 = 1, n = R * K; break;
    }
    float *xh = xmalloc((size_t)n * 4);
    for (int64_t i = 0; i < n; i++) xh[i] = 12345.0f; /* gaps: large, reading them would change the pick */
    for (int64_t r = 0; r < R; r++)
        for (int64_t c = 0; c < K; c++) xh[r * *s0 + c * *s1] = x[r * K + c];
    float *xd = dalloc(t, (size_t)n * 4);
    h2d(t, xd, xh, (size_t)n * 4);
    free(xh);
    return xd;
}

/* The device BSR's six buffers against a host BSR's (same sizes): 1 when all equal. */
static int same_bsr(tc *t, const sq_cuda_bsr *gm, const sq_bsr *ref, int *e)
{
    const int64_t nz = gm->nnzb, bb = gm->b * gm->b, nbr = gm->nbr, nbc = gm->nbc;
    int64_t *rp = xmalloc((size_t)(nbr + 1) * 8), *cp = xmalloc((size_t)(nbc + 1) * 8);
    int32_t *ci = xmalloc((size_t)nz * 4 + 4), *tr = xmalloc((size_t)nz * 4 + 4), *tb = xmalloc((size_t)nz * 4 + 4);
    float *v = xmalloc((size_t)(nz * bb) * 4 + 4);
    int good = 0;
    for (int q = 0; q < 7; q++) e[q] = -1;
    if (d2h(t, rp, gm->row_ptr, (size_t)(nbr + 1) * 8) && d2h(t, ci, gm->col_idx, (size_t)nz * 4) &&
        d2h(t, v, gm->values, (size_t)(nz * bb) * 4) && d2h(t, cp, gm->col_ptr, (size_t)(nbc + 1) * 8) &&
        d2h(t, tr, gm->t_row, (size_t)nz * 4) && d2h(t, tb, gm->t_blk, (size_t)nz * 4)) {
        int same_n = nz == ref->nnzb && nbr == ref->nbr && nbc == ref->nbc && gm->b == ref->b;
        e[0] = same_n ? -1 : 0;
        e[1] = same_n ? cmp_i64(rp, sq_tensor_data(ref->row_ptr), nbr + 1) : 0;
        e[2] = same_n ? cmp_i32(ci, sq_tensor_data(ref->col_idx), nz) : 0;
        e[3] = same_n && memcmp(v, sq_tensor_data(ref->values), (size_t)(nz * bb) * 4) == 0 ? -1 : 0;
        e[4] = same_n ? cmp_i64(cp, sq_tensor_data(ref->col_ptr), nbc + 1) : 0;
        e[5] = same_n ? cmp_i32(tr, sq_tensor_data(ref->t_row), nz) : 0;
        e[6] = same_n ? cmp_i32(tb, sq_tensor_data(ref->t_blk), nz) : 0;
        good = 1;
        for (int q = 0; q < 7; q++) good &= e[q] < 0;
    }
    free(rp), free(cp), free(ci), free(tr), free(tb), free(v);
    return good;
}

/* CSR dW on the device vs a float64 reference from the CPU's kept entries
 * (and the CPU's float32 sq_bsr_dw on b = 1 vs the same reference). */
static void test_csr_dw(tc *t, const char *tag, sq_bsr *ref, const sq_cuda_bsr *gm, const float *x, int64_t M)
{
    sq_ctx *ctx = &t->ctx;
    const int64_t R = ref->rows, K = ref->cols, ldy = M + 3, ldw = K + 2;
    float *dyh = xmalloc((size_t)(R * ldy) * 4);
    for (int64_t i = 0; i < R * ldy; i++) dyh[i] = (float)draw(t, 0);
    float *dyd = dalloc(t, (size_t)(R * ldy) * 4);
    h2d(t, dyd, dyh, (size_t)(R * ldy) * 4);
    double *dwd = calloc((size_t)(M * K), sizeof *dwd);
    if (!dwd) die("out of host memory");
    const int64_t *rp = sq_tensor_data(ref->row_ptr);
    const int32_t *ci = sq_tensor_data(ref->col_idx);
    for (int64_t r = 0; r < R; r++)
        for (int64_t p = rp[r]; p < rp[r + 1]; p++) {
            double xv = x[r * K + ci[p]];
            for (int64_t m = 0; m < M; m++) dwd[m * K + ci[p]] += (double)dyh[r * ldy + m] * xv;
        }
    int64_t dsh[2] = {R, M}, wsh[2] = {M, K};
    sq_tensor *dyt = NULL, *dwt = NULL;
    if (sq_tensor_empty(ctx, SQ_F32, 2, dsh, &dyt) != SQ_OK || sq_tensor_empty(ctx, SQ_F32, 2, wsh, &dwt) != SQ_OK)
        die("host tensors: %s", ctx->err);
    for (int64_t r = 0; r < R; r++) memcpy((float *)sq_tensor_data(dyt) + r * M, dyh + r * ldy, (size_t)M * 4);
    int nf = 0;
    if (sq_bsr_dw(ctx, dyt, ref, dwt) != SQ_OK) report(t, 0, "%s cpu sq_bsr_dw (csr): %s", tag, ctx->err);
    else {
        double e = rel(dwd, sq_tensor_data(dwt), M, K, K, &nf);
        if (e > 1e-5 || nf) report(t, 0, "%s cpu sq_bsr_dw (csr) vs float64: rel %.2e", tag, e);
    }
    float *dwh = xmalloc((size_t)(M * ldw) * 4), *again = xmalloc((size_t)(M * ldw) * 4);
    float *dwdev = dalloc(t, (size_t)(M * ldw) * 4);
    poison(t, SQ_F32, dwdev, M * ldw);
    sq_status st = sq_cuda_csr_dw(ctx, dwdev, ldw, dyd, ldy, M, gm);
    if (st != SQ_OK) report(t, 0, "%s csr_dw: %s: %s", tag, sq_status_name(st), ctx->err);
    else if (d2h(t, dwh, dwdev, (size_t)(M * ldw) * 4)) {
        double e = rel(dwd, dwh, M, K, ldw, &nf), emax = 0;
        int64_t stray = 0;
        for (int64_t m = 0; m < M; m++) {
            for (int64_t c = K; c < ldw; c++) stray += !isnan(dwh[m * ldw + c]);
            /* each entry within 2 float32 roundings of the exact value */
            for (int64_t c = 0; c < K; c++) {
                double d = fabs(dwh[m * ldw + c] - dwd[m * K + c]) / (fabs(dwd[m * K + c]) + 1e-30);
                if (dwd[m * K + c] != 0 && d > emax) emax = d;
                if (dwd[m * K + c] == 0 && dwh[m * ldw + c] != 0) emax = INFINITY;
            }
        }
        poison(t, SQ_F32, dwdev, M * ldw);
        int same = sq_cuda_csr_dw(ctx, dwdev, ldw, dyd, ldy, M, gm) == SQ_OK &&
                   d2h(t, again, dwdev, (size_t)(M * ldw) * 4);
        for (int64_t m = 0; m < M && same; m++) same = memcmp(dwh + m * ldw, again + m * ldw, (size_t)K * 4) == 0;
        report(t, e <= 1e-6 && emax <= 1.2e-7 && !nf && !stray && same,
               "%s csr dW M=%lld rel %.2e, max entry rel %.2e (tol 1e-6, 1.2e-7)%s%s%s", tag, (long long)M, e, emax,
               nf ? " NON-FINITE" : "", stray ? " WROTE PADDING" : "", same ? "" : " RERUN DIFFERS");
    }
    sq_tensor_release(dyt);
    sq_tensor_release(dwt);
    dfree(t, dyd);
    dfree(t, dwdev);
    free(dyh), free(dwh), free(again), free(dwd);
}

/* topk_unstructured: the GPU CSR equals the CPU's (entries, ties, NaN), the
 * transposed index both fused and rebuilt; then the CSR dW. */
static void test_unstructured(tc *t, int64_t R, int64_t K, int64_t b, double keep, sq_prune_scope scope, int lay,
                              int data, int64_t M)
{
    sq_ctx *ctx = &t->ctx;
    char tag[160];
    snprintf(tag, sizeof tag, "unstructured %lldx%lld b%-2lld keep %.2f %-6s %-10s%s", (long long)R, (long long)K,
             (long long)b, keep, sq_prune_scope_name(scope), lay_name[lay],
             data == DATA_COARSE ? " coarse" : data == DATA_NONFINITE ? " nan/inf" : "");
    float *x = xmalloc((size_t)(R * K) * 4);
    for (int64_t i = 0; i < R * K; i++) x[i] = (float)draw(t, data == DATA_COARSE);
    if (data == DATA_COARSE) /* signed zeros tie with each other */
        for (int64_t i = 0; i < R * K; i += 7) x[i] = (i / 7) % 2 ? -0.0f : 0.0f;
    if (data == DATA_NONFINITE) {
        x[(R / 2) * K + K / 3] = NAN;
        x[(R - 1) * K + K - 1] = INFINITY;
        x[0] = -INFINITY;
        x[R * K / 3] = NAN;
    }
    int64_t sh[2] = {R, K};
    sq_tensor *xt = NULL;
    if (sq_tensor_empty(ctx, SQ_F32, 2, sh, &xt) != SQ_OK) die("host tensor: %s", ctx->err);
    memcpy(sq_tensor_data(xt), x, (size_t)(R * K) * 4);
    sq_bsr *ref = NULL;
    sq_status st = sq_bsr_prune_pack(ctx, xt, b, keep, SQ_PRUNE_TOPK_UNSTRUCTURED, scope, SQ_MEM_OTHER, &ref);
    if (st == SQ_OK) st = sq_bsr_build_transpose(ctx, ref, SQ_MEM_OTHER);
    if (st != SQ_OK) die("cpu prune_pack: %s", ctx->err);
    int64_t s0, s1;
    float *xd = upload(t, x, R, K, lay, &s0, &s1);
    sq_cuda_bsr gm;
    st = sq_cuda_bsr_shape_crit(ctx, R, K, b, keep, SQ_PRUNE_TOPK_UNSTRUCTURED, scope, &gm);
    if (st == SQ_OK) st = sq_cuda_bsr_alloc(ctx, &gm, SQ_MEM_SAVED);
    if (st != SQ_OK) die("csr alloc: %s", ctx->err);
    const int64_t nz = gm.nnzb;
    poison(t, SQ_I64, gm.row_ptr, R + 1);
    poison(t, SQ_I32, gm.col_idx, nz);
    poison(t, SQ_F32, gm.values, nz);
    poison(t, SQ_I64, gm.col_ptr, K + 1);
    poison(t, SQ_I32, gm.t_row, nz);
    poison(t, SQ_I32, gm.t_blk, nz);
    st = sq_cuda_bsr_prune_pack_crit(ctx, &gm, xd, s0, s1, b, keep, SQ_PRUNE_TOPK_UNSTRUCTURED, scope);
    int e[7];
    if (st != SQ_OK) {
        report(t, 0, "%s prune_pack: %s: %s", tag, sq_status_name(st), ctx->err);
    } else {
        int good = same_bsr(t, &gm, ref, e);
        report(t, good, "%s: %lld/%lld entries, CSR and transposed index %s", tag, (long long)nz,
               (long long)(R * K), good ? "equal the CPU's" : "DIFFER");
        if (!good)
            printf("       nnz gpu %lld cpu %lld; first diff n %d row_ptr %d col_idx %d values %d col_ptr %d "
                   "t_row %d t_blk %d\n", (long long)nz, (long long)ref->nnzb, e[0], e[1], e[2], e[3], e[4], e[5], e[6]);
        /* the index as backward rebuilds it */
        poison(t, SQ_I64, gm.col_ptr, K + 1);
        poison(t, SQ_I32, gm.t_row, nz);
        poison(t, SQ_I32, gm.t_blk, nz);
        st = sq_cuda_bsr_build_transpose(ctx, &gm);
        int good2 = st == SQ_OK && same_bsr(t, &gm, ref, e);
        report(t, good2, "%s: transposed index rebuilt from the CSR equals the CPU's", tag);
        if (good && good2 && M > 0 && data != DATA_NONFINITE) test_csr_dw(t, tag, ref, &gm, x, M);
    }
    sq_cuda_bsr_free(ctx, &gm);
    dfree(t, xd);
    sq_bsr_free(ref);
    sq_tensor_release(xt);
    free(x);
}

/* One random prune-and-pack of x (device) into gm; the kept blocks' flat ids (nbr*nbc
 * flags) into kept.  Checks the structure: exactly k (k per row), ascending,
 * values = x's blocks, transposed index = the CPU's built from the same BSR. */
static int random_once(tc *t, const char *tag, const float *x, const float *xd, int64_t s0, int64_t s1,
                       sq_cuda_bsr *gm, double keep, sq_prune_scope scope, uint8_t *kept, int verbose)
{
    sq_ctx *ctx = &t->ctx;
    const int64_t R = gm->rows, K = gm->cols, b = gm->b, nbr = gm->nbr, nbc = gm->nbc, nz = gm->nnzb, bb = b * b;
    poison(t, SQ_I64, gm->row_ptr, nbr + 1);
    poison(t, SQ_I32, gm->col_idx, nz);
    sq_status st = sq_cuda_bsr_prune_pack_crit(ctx, gm, xd, s0, s1, b, keep, SQ_PRUNE_RANDOM, scope);
    if (st != SQ_OK) {
        report(t, 0, "%s random prune_pack: %s: %s", tag, sq_status_name(st), ctx->err);
        return 0;
    }
    int64_t *rp = xmalloc((size_t)(nbr + 1) * 8);
    int32_t *ci = xmalloc((size_t)nz * 4 + 4);
    int ok = d2h(t, rp, gm->row_ptr, (size_t)(nbr + 1) * 8) && d2h(t, ci, gm->col_idx, (size_t)nz * 4);
    const int64_t kr = sq_select_count(keep, nbc);
    memset(kept, 0, (size_t)(nbr * nbc));
    int64_t bad = 0;
    if (ok) {
        bad += rp[0] != 0 || rp[nbr] != nz;
        for (int64_t i = 0; i < nbr && !bad; i++) {
            if (rp[i + 1] < rp[i] || (scope == SQ_PRUNE_SCOPE_ROW && rp[i + 1] - rp[i] != kr)) bad++;
            for (int64_t p = rp[i]; p < rp[i + 1] && !bad; p++) {
                if (ci[p] < 0 || ci[p] >= nbc || (p > rp[i] && ci[p] <= ci[p - 1])) bad++;
                else kept[i * nbc + ci[p]] = 1;
            }
        }
    }
    if (ok && !bad && verbose) { /* values and the transposed index, on a few draws */
        float *v = xmalloc((size_t)(nz * bb) * 4 + 4);
        ok = d2h(t, v, gm->values, (size_t)(nz * bb) * 4);
        for (int64_t i = 0; ok && i < nbr; i++)
            for (int64_t p = rp[i]; p < rp[i + 1]; p++)
                for (int64_t r = 0; r < b; r++)
                    for (int64_t c = 0; c < b; c++) {
                        int64_t row = i * b + r, col = (int64_t)ci[p] * b + c;
                        float want = row < R && col < K ? x[row * K + col] : 0.0f;
                        bad += memcmp(&v[p * bb + r * b + c], &want, 4) != 0;
                    }
        free(v);
        sq_bsr *h = NULL;
        if (sq_bsr_new(ctx, SQ_F32, R, K, b, nz, SQ_MEM_OTHER, &h) != SQ_OK) die("bsr_new: %s", ctx->err);
        memcpy(sq_tensor_data(h->row_ptr), rp, (size_t)(nbr + 1) * 8);
        memcpy(sq_tensor_data(h->col_idx), ci, (size_t)nz * 4);
        int e[7];
        if (sq_bsr_build_transpose(ctx, h, SQ_MEM_OTHER) != SQ_OK) die("build_transpose: %s", ctx->err);
        /* values: compare the device's with themselves (checked above) */
        if (d2h(t, sq_tensor_data(h->values), gm->values, (size_t)(nz * bb) * 4)) bad += !same_bsr(t, gm, h, e);
        sq_bsr_free(h);
    }
    if (verbose || !ok || bad)
        report(t, ok && !bad, "%s random: %lld blocks (%s), ascending, in range%s", tag, (long long)nz,
               scope == SQ_PRUNE_SCOPE_ROW ? "k per block row" : "exactly k",
               verbose ? ", values = x's blocks, transposed index = the CPU's" : "");
    free(rp), free(ci);
    return ok && !bad;
}

static void test_random(tc *t)
{
    sq_ctx *ctx = &t->ctx;
    /* structure, on odd sizes and every layout */
    static const int64_t shapes[][3] = {{203, 157, 16}, {67, 150, 8}, {1000, 333, 32}, {5, 3, 8}};
    int c = 0;
    for (int s = 0; s < 4; s++)
        for (int sc = 0; sc < 2; sc++)
            for (int ki = 0; ki < 3; ki++, c++) {
                const double keeps[3] = {1, 0.5, 0.1};
                int64_t R = shapes[s][0], K = shapes[s][1], b = shapes[s][2], s0, s1;
                char tag[128];
                snprintf(tag, sizeof tag, "%lldx%lld b%-2lld keep %.2f %-6s %-10s", (long long)R, (long long)K,
                         (long long)b, keeps[ki], sq_prune_scope_name((sq_prune_scope)sc), lay_name[c % NLAY]);
                float *x = xmalloc((size_t)(R * K) * 4);
                for (int64_t i = 0; i < R * K; i++) x[i] = (float)draw(t, 0);
                float *xd = upload(t, x, R, K, c % NLAY, &s0, &s1);
                sq_cuda_bsr gm;
                if (sq_cuda_bsr_shape_crit(ctx, R, K, b, keeps[ki], SQ_PRUNE_RANDOM, (sq_prune_scope)sc, &gm) != SQ_OK ||
                    sq_cuda_bsr_alloc(ctx, &gm, SQ_MEM_SAVED) != SQ_OK)
                    die("alloc: %s", ctx->err);
                uint8_t *kept = xmalloc((size_t)(gm.nbr * gm.nbc));
                random_once(t, tag, x, xd, s0, s1, &gm, keeps[ki], (sq_prune_scope)sc, kept, 1);
                sq_cuda_bsr_free(ctx, &gm);
                dfree(t, xd);
                free(x), free(kept);
            }
    /* seeds and offsets; then selection frequencies over many draws */
    const int64_t R = 30, K = 37, b = 8; /* 4 x 5 blocks, the last row and column padded */
    float *x = xmalloc((size_t)(R * K) * 4);
    for (int64_t i = 0; i < R * K; i++) x[i] = (float)draw(t, 0);
    int64_t s0, s1;
    float *xd = upload(t, x, R, K, LAY_CONTIG, &s0, &s1);
    for (int sc = 0; sc < 2; sc++) {
        const sq_prune_scope scope = (sq_prune_scope)sc;
        const double keep = 0.3;
        sq_cuda_bsr gm;
        if (sq_cuda_bsr_shape_crit(ctx, R, K, b, keep, SQ_PRUNE_RANDOM, scope, &gm) != SQ_OK ||
            sq_cuda_bsr_alloc(ctx, &gm, SQ_MEM_SAVED) != SQ_OK)
            die("alloc: %s", ctx->err);
        const int64_t nb = gm.nbr * gm.nbc;
        uint8_t *a = xmalloc((size_t)nb), *a2 = xmalloc((size_t)nb), *bseed = xmalloc((size_t)nb),
                *next = xmalloc((size_t)nb);
        uint64_t seed, off0, off1;
        const char *sn = sq_prune_scope_name(scope);
        sq_cuda_rng_seed(ctx, 1234);
        random_once(t, "seed 1234", x, xd, s0, s1, &gm, keep, scope, a, 0);
        sq_cuda_rng_state(ctx, &seed, &off0);
        random_once(t, "seed 1234, next", x, xd, s0, s1, &gm, keep, scope, next, 0);
        sq_cuda_rng_state(ctx, &seed, &off1);
        sq_cuda_rng_seed(ctx, 1234);
        random_once(t, "seed 1234 again", x, xd, s0, s1, &gm, keep, scope, a2, 0);
        sq_cuda_rng_seed(ctx, 1235);
        random_once(t, "seed 1235", x, xd, s0, s1, &gm, keep, scope, bseed, 0);
        report(t, memcmp(a, a2, (size_t)nb) == 0, "random %s: the same seed keeps the same blocks", sn);
        report(t, memcmp(a, bseed, (size_t)nb) != 0, "random %s: another seed keeps other blocks", sn);
        report(t, memcmp(a, next, (size_t)nb) != 0 && off0 == 1 && off1 == 2,
               "random %s: each call advances the Philox offset (%llu, %llu) and draws anew", sn,
               (unsigned long long)off0, (unsigned long long)off1);
        /* frequencies: every block is kept with probability k/nb (tensor)
         * or kr/nbc (row); N draws, 5 standard deviations */
        const int N = 3000;
        int64_t *cnt = calloc((size_t)nb, sizeof *cnt);
        if (!cnt) die("out of host memory");
        int okall = 1;
        for (int d = 0; d < N && okall; d++) {
            okall = random_once(t, "frequency draw", x, xd, s0, s1, &gm, keep, scope, a, 0);
            for (int64_t p = 0; p < nb; p++) cnt[p] += a[p];
        }
        double pexp = sc ? (double)sq_select_count(keep, gm.nbc) / (double)gm.nbc : (double)gm.nnzb / (double)nb;
        double sd = sqrt(pexp * (1 - pexp) / N), worst = 0;
        for (int64_t p = 0; p < nb; p++) {
            double dev = fabs((double)cnt[p] / N - pexp);
            if (dev > worst) worst = dev;
        }
        report(t, okall && worst <= 5 * sd, "random %s: %d draws, each of %lld blocks kept with frequency %.3f "
               "(max deviation %.4f, tol 5 sd = %.4f)", sn, N, (long long)nb, pexp, worst, 5 * sd);
        free(cnt);
        sq_cuda_bsr_free(ctx, &gm);
        free(a), free(a2), free(bseed), free(next);
    }
    dfree(t, xd);
    free(x);
}

/* the controls' argument errors and accounting */
static void test_controls_misc(tc *t)
{
    sq_ctx *ctx = &t->ctx;
    const int64_t R = 45, K = 70, b = 16;
    float *xd = dalloc(t, (size_t)(R * K) * 4), *dd = dalloc(t, (size_t)(R * K) * 4);
    sq_cuda_fill(ctx, SQ_F32, xd, R * K, 1.0);
    sq_cuda_bsr blk, csr, odd;
    int64_t saved0 = ctx->mem.cur[SQ_CUDA][SQ_MEM_SAVED];
    sq_status st = sq_cuda_bsr_shape_crit(ctx, R, K, b, 0.5, SQ_PRUNE_L2, SQ_PRUNE_SCOPE_TENSOR, &blk);
    if (st == SQ_OK) st = sq_cuda_bsr_shape_crit(ctx, R, K, b, 0.5, SQ_PRUNE_TOPK_UNSTRUCTURED, SQ_PRUNE_SCOPE_TENSOR, &csr);
    if (st == SQ_OK) st = sq_cuda_bsr_alloc(ctx, &blk, SQ_MEM_SAVED);
    if (st == SQ_OK) st = sq_cuda_bsr_alloc(ctx, &csr, SQ_MEM_SAVED);
    if (st != SQ_OK) die("alloc: %s", ctx->err);
    /* 3x5 blocks, keep 8 of them: 8*256 = 2048 of 3150 entries */
    report(t, csr.b == 1 && csr.nbr == R && csr.nbc == K && csr.nnzb == 2048 &&
                  ctx->mem.cur[SQ_CUDA][SQ_MEM_SAVED] - saved0 == sq_cuda_bsr_bytes(&blk) + sq_cuda_bsr_bytes(&csr),
           "csr shape %lldx%lld b %lld nnz %lld, SAVED charged its %lld bytes", (long long)csr.nbr,
           (long long)csr.nbc, (long long)csr.b, (long long)csr.nnzb, (long long)sq_cuda_bsr_bytes(&csr));
    st = sq_cuda_bsr_prune_pack_crit(ctx, &blk, xd, K, 1, b, 0.5, SQ_PRUNE_TOPK_UNSTRUCTURED, SQ_PRUNE_SCOPE_TENSOR);
    report(t, st == SQ_ERR_ARG, "unstructured into a BSR-shaped matrix -> %s: %s", sq_status_name(st), ctx->err);
    st = sq_cuda_bsr_prune_pack_crit(ctx, &csr, xd, K, 1, b, 0.5, SQ_PRUNE_TOPK_UNSTRUCTURED, SQ_PRUNE_SCOPE_ROW);
    report(t, st == SQ_ERR_ARG, "unstructured scope row into a scope-tensor shape -> %s: %s", sq_status_name(st),
           ctx->err);
    st = sq_cuda_bsr_shape_crit(ctx, R, K, b, 0.5, (sq_prune_criterion)7, SQ_PRUNE_SCOPE_TENSOR, &odd);
    report(t, st == SQ_ERR_ARG, "shape with criterion 7 -> %s: %s", sq_status_name(st), ctx->err);
    uint64_t seed, off0, off1;
    sq_cuda_rng_state(ctx, &seed, &off0);
    st = sq_cuda_bsr_prune_pack_crit(ctx, &blk, xd, K, 1, b, 0.3, SQ_PRUNE_RANDOM, SQ_PRUNE_SCOPE_TENSOR);
    sq_cuda_rng_state(ctx, &seed, &off1);
    report(t, st == SQ_ERR_ARG && off1 == off0, "random with room for another keep -> %s, RNG untouched: %s",
           sq_status_name(st), ctx->err);
    st = sq_cuda_bsr_prune_pack_crit(ctx, &blk, xd, K, 1, b, 0.5, SQ_PRUNE_L2, SQ_PRUNE_SCOPE_TENSOR);
    if (st == SQ_OK) st = sq_cuda_csr_dw(ctx, dd, K, xd, K, 8, &blk);
    report(t, st == SQ_ERR_ARG, "csr_dw on a 16x16-block BSR -> %s: %s", sq_status_name(st), ctx->err);
    st = sq_cuda_csr_dw(ctx, dd, K - 1, xd, K, 8, &csr);
    report(t, st == SQ_ERR_ARG, "csr_dw with ldw < K -> %s: %s", sq_status_name(st), ctx->err);
    report(t, sq_cuda_sync(ctx) == SQ_OK, "no launch failed for rejected arguments");
    sq_cuda_bsr_free(ctx, &blk);
    sq_cuda_bsr_free(ctx, &csr);
    report(t, ctx->mem.cur[SQ_CUDA][SQ_MEM_SAVED] == saved0, "csr and bsr freed: SAVED back");
    dfree(t, xd);
    dfree(t, dd);
}

/* ---- densify, accounting, argument errors ---------------------------------------------- */

static void test_misc(tc *t)
{
    sq_ctx *ctx = &t->ctx;
    const int64_t R = 45, K = 70, b = 16;
    float *x = xmalloc((size_t)(R * K) * 4);
    for (int64_t i = 0; i < R * K; i++) x[i] = (float)draw(t, 0);
    float *xd = dalloc(t, (size_t)(R * K) * 4), *dd = dalloc(t, (size_t)(R * K) * 4);
    h2d(t, xd, x, (size_t)(R * K) * 4);
    sq_cuda_bsr gm;
    int64_t saved0 = ctx->mem.cur[SQ_CUDA][SQ_MEM_SAVED];
    sq_status st = sq_cuda_bsr_shape(ctx, R, K, b, 0.5, SQ_PRUNE_SCOPE_TENSOR, &gm);
    if (st == SQ_OK) st = sq_cuda_bsr_alloc(ctx, &gm, SQ_MEM_SAVED);
    if (st != SQ_OK) die("alloc: %s", ctx->err);
    report(t, ctx->mem.cur[SQ_CUDA][SQ_MEM_SAVED] - saved0 == sq_cuda_bsr_bytes(&gm),
           "bsr_alloc charges its %lld bytes to SAVED", (long long)sq_cuda_bsr_bytes(&gm));
    st = sq_cuda_bsr_prune_pack(ctx, &gm, xd, K, 1, 0.5, SQ_PRUNE_SCOPE_TENSOR);
    poison(t, SQ_F32, dd, R * K);
    if (st == SQ_OK) st = sq_cuda_bsr_to_dense(ctx, dd, &gm);
    float *back = xmalloc((size_t)(R * K) * 4);
    if (st != SQ_OK) report(t, 0, "to_dense: %s", ctx->err);
    else if (d2h(t, back, dd, (size_t)(R * K) * 4)) {
        /* kept blocks equal x, the rest 0; about half of the 3x5 blocks survive */
        int64_t kept = 0, bad = 0;
        for (int64_t i = 0; i < 3; i++)
            for (int64_t j = 0; j < 5; j++) {
                int64_t nzr = 0, eq = 0, cnt = 0;
                for (int64_t r = i * b; r < (i + 1) * b && r < R; r++)
                    for (int64_t c = j * b; c < (j + 1) * b && c < K; c++) {
                        cnt++;
                        nzr += back[r * K + c] != 0;
                        eq += back[r * K + c] == x[r * K + c];
                    }
                if (nzr == 0) continue;
                kept++;
                bad += eq != cnt;
            }
        report(t, kept == gm.nnzb && bad == 0, "bsr_to_dense: %lld kept blocks equal x, the rest 0", (long long)kept);
    }
    /* wrong room for the keep ratio, unsupported block size for dW, bad strides */
    st = sq_cuda_bsr_prune_pack(ctx, &gm, xd, K, 1, 0.3, SQ_PRUNE_SCOPE_TENSOR);
    report(t, st == SQ_ERR_ARG, "prune_pack with room for another keep -> %s: %s", sq_status_name(st), ctx->err);
    sq_cuda_bsr odd = gm;
    odd.b = 12;
    odd.nbr = (R + 11) / 12;
    odd.nbc = (K + 11) / 12;
    st = sq_cuda_bsr_dw(ctx, dd, K, xd, K, R, &odd, SQ_CUDA_DW_TF32, 0);
    report(t, st == SQ_ERR_ARG, "bsr_dw with b = 12 -> %s: %s", sq_status_name(st), ctx->err);
    st = sq_cuda_bsr_dw(ctx, dd, K - 1, xd, K, 10, &gm, SQ_CUDA_DW_TF32, 0);
    report(t, st == SQ_ERR_ARG, "bsr_dw with ldw < K -> %s: %s", sq_status_name(st), ctx->err);
    st = sq_cuda_bsr_dw_tile(ctx, dd, K, xd, K, 8, &gm, SQ_CUDA_DW_TF32, 0, 100, SQ_CUDA_DW_AUTO);
    report(t, st == SQ_ERR_ARG, "bsr_dw with a 100-row tile -> %s: %s", sq_status_name(st), ctx->err);
    /* b = 16 has no wgmma kernel: asking for it is an argument error, not a wrong result */
    st = sq_cuda_bsr_dw_tile(ctx, dd, K, xd, K, 8, &gm, SQ_CUDA_DW_TF32, 0, 0, SQ_CUDA_DW_WGMMA);
    report(t, st == SQ_ERR_ARG, "bsr_dw wgmma with b = 16 -> %s: %s", sq_status_name(st), ctx->err);
    st = sq_cuda_bsr_shape(ctx, R, K, b, 1.5, SQ_PRUNE_SCOPE_TENSOR, &odd);
    report(t, st == SQ_ERR_ARG, "bsr_shape keep 1.5 -> %s: %s", sq_status_name(st), ctx->err);
    report(t, sq_cuda_sync(ctx) == SQ_OK, "no launch failed for rejected arguments");
    sq_cuda_bsr_free(ctx, &gm);
    report(t, ctx->mem.cur[SQ_CUDA][SQ_MEM_SAVED] == saved0 && gm.values == NULL,
           "bsr_free returns the SAVED bytes");
    dfree(t, xd);
    dfree(t, dd);
    free(x);
    free(back);
}

int main(void)
{
    tc T;
    memset(&T, 0, sizeof T);
    tc *t = &T;
    sq_ctx_init(&t->ctx, 20261123);
    sq_rng_seed(&t->rng, 4242);
    sq_status st = sq_cuda_init(&t->ctx, 0);
    if (st == SQ_ERR_DEVICE) {
        printf("SKIP: no CUDA device (%s)\n", t->ctx.err);
        return 77;
    }
    if (st != SQ_OK) {
        printf("FAIL sq_cuda_init: %s: %s\n", sq_status_name(st), t->ctx.err);
        return 1;
    }
    char dev[256];
    printf("device: %s\n", sq_cuda_device_str(&t->ctx, dev, sizeof dev));
    printf("wgmma BSR dW kernel: %s\n", sq_cuda_bsr_dw_has_wgmma(&t->ctx) ? "yes" : "no (not an sm_90a build on sm_90)");
    sq_cuda_set_sync_launches(&t->ctx, 1);

    const int64_t bs[4] = {8, 16, 32, 64};
    const double keeps[5] = {1, 0.75, 0.5, 0.3, 0.1};
    /* (R, K, M): odd everything; M % 4 == 0 (16-byte dy loads); M > 128 (two
     * m tiles) and K > 128 (two column groups at b 64) */
    const int64_t shapes[3][3] = {{203, 157, 77}, {1000, 333, 96}, {67, 150, 130}};
    int c = 0;
    for (int s = 0; s < 3; s++)
        for (int bi = 0; bi < 4; bi++)
            for (int ki = 0; ki < 5; ki++)
                for (int sc = 0; sc < 2; sc++, c++)
                    test_case(t, shapes[s][0], shapes[s][1], bs[bi], keeps[ki], (sq_prune_scope)sc, c % NLAY,
                              DATA_NORMAL, shapes[s][2], 0);
    /* a grid large enough for the automatic split choice to matter; M = 452
     * leaves a partial last tile at every tile width */
    for (int bi = 1; bi < 4; bi++) {
        test_case(t, 3000, 260, bs[bi], 0.5, SQ_PRUNE_SCOPE_TENSOR, LAY_PAD_ALIGNED, DATA_NORMAL, 256, 1);
        test_case(t, 2000, 200, bs[bi], 0.3, SQ_PRUNE_SCOPE_ROW, LAY_CONTIG, DATA_NORMAL, 452, 1);
    }
    /* ties and non-finite scores */
    for (int bi = 0; bi < 4; bi++)
        for (int ki = 1; ki < 5; ki++)
            for (int sc = 0; sc < 2; sc++)
                test_case(t, 301, 187, bs[bi], keeps[ki], (sq_prune_scope)sc, (bi + ki) % NLAY, DATA_COARSE, 0, 0);
    for (int sc = 0; sc < 2; sc++) {
        test_case(t, 97, 101, 16, 0.5, (sq_prune_scope)sc, LAY_CONTIG, DATA_NONFINITE, 0, 0);
        test_case(t, 97, 101, 8, 0.3, (sq_prune_scope)sc, LAY_PAD_ODD, DATA_NONFINITE, 0, 0);
    }
    /* degenerate grids: one partial block; block size not a power of two */
    test_case(t, 5, 3, 8, 0.5, SQ_PRUNE_SCOPE_TENSOR, LAY_CONTIG, DATA_NORMAL, 9, 0);
    test_case(t, 70, 9, 16, 0.5, SQ_PRUNE_SCOPE_ROW, LAY_PAD_ODD, DATA_NORMAL, 33, 0);
    test_case(t, 130, 61, 12, 0.3, SQ_PRUNE_SCOPE_TENSOR, LAY_CONTIG, DATA_NORMAL, 0, 0);
    test_case(t, 130, 61, 7, 0.5, SQ_PRUNE_SCOPE_ROW, LAY_TRANSPOSED, DATA_NORMAL, 0, 0);
    test_misc(t);

    /* the controls: topk_unstructured against the CPU entry for entry, then random */
    const int64_t ushapes[3][3] = {{203, 157, 77}, {1000, 333, 130}, {67, 150, 33}};
    const double ukeeps[3] = {1, 0.5, 0.1};
    c = 0;
    for (int s = 0; s < 3; s++)
        for (int bi = 0; bi < 4; bi++)
            for (int ki = 0; ki < 3; ki++)
                for (int sc = 0; sc < 2; sc++, c++)
                    test_unstructured(t, ushapes[s][0], ushapes[s][1], bs[bi], ukeeps[ki], (sq_prune_scope)sc,
                                      c % NLAY, DATA_NORMAL, ushapes[s][2]);
    for (int bi = 0; bi < 4; bi += 2)
        for (int ki = 1; ki < 5; ki += 2)
            for (int sc = 0; sc < 2; sc++)
                test_unstructured(t, 301, 187, bs[bi], keeps[ki], (sq_prune_scope)sc, (bi + ki + sc) % NLAY,
                                  DATA_COARSE, 45);
    for (int sc = 0; sc < 2; sc++) {
        test_unstructured(t, 97, 101, 16, 0.5, (sq_prune_scope)sc, LAY_CONTIG, DATA_NONFINITE, 0);
        test_unstructured(t, 97, 101, 8, 0.3, (sq_prune_scope)sc, LAY_TRANSPOSED, DATA_NONFINITE, 0);
    }
    test_unstructured(t, 5, 3, 8, 0.5, SQ_PRUNE_SCOPE_TENSOR, LAY_CONTIG, DATA_NORMAL, 9);
    test_unstructured(t, 5, 3, 8, 0.5, SQ_PRUNE_SCOPE_ROW, LAY_PAD_ODD, DATA_NORMAL, 9);
    test_unstructured(t, 70, 9, 16, 0.3, SQ_PRUNE_SCOPE_ROW, LAY_PAD_ODD, DATA_NORMAL, 200);
    test_unstructured(t, 130, 61, 12, 0.3, SQ_PRUNE_SCOPE_TENSOR, LAY_CONTIG, DATA_NORMAL, 31);
    test_unstructured(t, 130, 61, 7, 0.5, SQ_PRUNE_SCOPE_ROW, LAY_TRANSPOSED, DATA_NORMAL, 31);
    test_random(t);
    test_controls_misc(t);

    sq_cuda_mem_stats ms;
    sq_cuda_mem_get(&t->ctx, &ms);
    report(t, t->live == 0 && ms.live_blocks == 0 && t->ctx.mem.total_cur[SQ_CUDA] == 0,
           "allocator accounting back to 0 (%lld live blocks)", (long long)ms.live_blocks);
    sq_cuda_free(&t->ctx);
    printf("%d passed, %d failed\n", t->passed, t->failed);
    return t->failed ? 1 : 0;
}
