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
    /* CTA tile rows: automatic, then each width forced (16-byte path only) */
    const int mt_list[4] = {0, 128, 192, 256};
    for (int mi = 0; mi < (vec ? 4 : 1); mi++)
    for (int pr = 0; pr < 2; pr++)
        for (int si = 0; si < 3; si++) {
            if (!big && si == 0 && pr == 1) continue;
            sq_cuda_dw_prec prec = pr ? SQ_CUDA_DW_3XTF32 : SQ_CUDA_DW_TF32;
            double tol = pr ? 1e-5 : 2e-3;
            poison(t, SQ_F32, dwdev, M * ldw);
            st = sq_cuda_bsr_dw_tile(ctx, dwdev, ldw, dyd, ldy, M, gm, prec, splits_list[si], mt_list[mi]);
            if (st != SQ_OK) {
                report(t, 0, "%s dW %s splits %d tile %d: %s: %s", tag, pr ? "3xtf32" : "tf32", splits_list[si],
                       mt_list[mi], sq_status_name(st), ctx->err);
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
                   "%s dW M=%lld tile %-4s %-6s splits %-4s rel %.2e (tol %.0e; vs cpu f32 %.2e)%s%s", tag,
                   (long long)M, mi == 0 ? (vec ? "auto" : "128") : mi == 1 ? "128" : mi == 2 ? "192" : "256",
                   pr ? "3xtf32" : "tf32",
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
    st = sq_cuda_bsr_dw_tile(ctx, dd, K, xd, K, 8, &gm, SQ_CUDA_DW_TF32, 0, 100);
    report(t, st == SQ_ERR_ARG, "bsr_dw with a 100-row tile -> %s: %s", sq_status_name(st), ctx->err);
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

    sq_cuda_mem_stats ms;
    sq_cuda_mem_get(&t->ctx, &ms);
    report(t, t->live == 0 && ms.live_blocks == 0 && t->ctx.mem.total_cur[SQ_CUDA] == 0,
           "allocator accounting back to 0 (%lld live blocks)", (long long)ms.live_blocks);
    sq_cuda_free(&t->ctx);
    printf("%d passed, %d failed\n", t->passed, t->failed);
    return t->failed ? 1 : 0;
}
