/* test_cuda_kernels.c — every CUDA kernel against a CPU reference.
 *
 * Inputs are fresh random numbers at odd sizes (3x5x7, 129x257, rows of
 * 1000+), strided views where a kernel takes strides, float32 and float64.
 * References are computed here in double from the same (dtype-rounded)
 * inputs.  Outputs are poisoned with NaN before each launch, so an element
 * a kernel forgets to write fails the comparison.
 *
 * Error measure: ||got - ref|| / ||ref|| over the finite reference entries
 * (non-finite entries must match exactly: -inf of a masked log-softmax, NaN
 * of a NaN max).  Tolerances: float32 1e-5, float64 1e-12, TF32 GEMM 2e-3
 * (TF32 keeps 10 mantissa bits; expected error is a few 1e-4).  Index
 * outputs (argmax, dropout masks) must match exactly.
 *
 * Exit codes: 0 all passed, 1 a failure, 77 no usable GPU (ctest: skipped). */
#include "cuda/sq_cuda_kernels.h"
#include "sq_cpu.h"
#include "sq_device.h"
#include "sq_tensor.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_test.h"

/* ---- infrastructure ----------------------------------------------------------------- */

static const char *dn(sq_dtype dt) { return dt == SQ_F32 ? "f32" : "f64"; }
static double tol_of(sq_dtype dt) { return dt == SQ_F32 ? 1e-5 : 1e-12; }

static double *rnd(tc *t, int64_t n, double lo, double hi)
{
    double *x = xmalloc((size_t)n * sizeof *x);
    for (int64_t i = 0; i < n; i++) x[i] = lo + (hi - lo) * sq_rng_uniform(&t->rng);
    return x;
}

static double *rndn(tc *t, int64_t n)
{
    double *x = xmalloc((size_t)n * sizeof *x);
    for (int64_t i = 0; i < n; i++) x[i] = sq_rng_normal(&t->rng);
    return x;
}

/* inputs are rounded to the dtype so that the reference sees what the GPU sees */
static void round_dt(sq_dtype dt, double *x, int64_t n)
{
    if (dt == SQ_F32)
        for (int64_t i = 0; i < n; i++) x[i] = (double)(float)x[i];
}

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

static void *dev_from(tc *t, sq_dtype dt, const double *x, int64_t n)
{
    size_t es = sq_dtype_size(dt);
    void *h = xmalloc((size_t)n * es);
    for (int64_t i = 0; i < n; i++) {
        if (dt == SQ_F32) ((float *)h)[i] = (float)x[i];
        else ((double *)h)[i] = x[i];
    }
    void *d = dalloc(t, (size_t)n * es);
    if (sq_cuda_copy_h2d(&t->ctx, d, h, (size_t)n * es) != SQ_OK) die("h2d: %s", t->ctx.err);
    free(h);
    return d;
}

static int64_t *dev_i64(tc *t, const int64_t *x, int64_t n)
{
    void *d = dalloc(t, (size_t)n * 8);
    if (sq_cuda_copy_h2d(&t->ctx, d, x, (size_t)n * 8) != SQ_OK) die("h2d: %s", t->ctx.err);
    return d;
}

/* n elements of NaN (floats) or -7 (ints): whatever a kernel leaves unwritten fails */
static void *dev_poison(tc *t, sq_dtype dt, int64_t n)
{
    void *d = dalloc(t, (size_t)n * sq_dtype_size(dt));
    if (sq_cuda_fill(&t->ctx, dt, d, n, sq_is_float(dt) ? NAN : -7.0) != SQ_OK)
        die("poison: %s", t->ctx.err);
    return d;
}

static double *host_from(tc *t, sq_dtype dt, const void *d, int64_t n)
{
    size_t es = sq_dtype_size(dt);
    void *h = xmalloc((size_t)n * es);
    double *x = xmalloc((size_t)n * sizeof *x);
    sq_status st = sq_cuda_copy_d2h(&t->ctx, h, d, (size_t)n * es);
    if (st != SQ_OK) {
        report(t, 0, "d2h: %s", t->ctx.err);
        for (int64_t i = 0; i < n; i++) x[i] = NAN;
    } else {
        for (int64_t i = 0; i < n; i++)
            x[i] = dt == SQ_F32 ? (double)((float *)h)[i] : dt == SQ_F64 ? ((double *)h)[i]
                                                           : (double)((int64_t *)h)[i];
    }
    free(h);
    return x;
}

static double rel_err(const double *ref, const double *got, int64_t n, int64_t *bad_nonfinite)
{
    double num = 0, den = 0;
    int64_t bad = 0;
    for (int64_t i = 0; i < n; i++) {
        if (!isfinite(ref[i])) {
            if (!(isnan(ref[i]) ? isnan(got[i]) : got[i] == ref[i])) bad++;
            continue;
        }
        if (!isfinite(got[i])) {
            bad++;
            continue;
        }
        num += (got[i] - ref[i]) * (got[i] - ref[i]);
        den += ref[i] * ref[i];
    }
    *bad_nonfinite = bad;
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

/* downloads dev (n of dt), compares with ref, reports; returns 1 when it passed */
static int check(tc *t, const char *what, sq_dtype dt, const double *ref, const void *dev, int64_t n,
                 double tol)
{
    double *got = host_from(t, dt, dev, n);
    int64_t bad = 0;
    double e = rel_err(ref, got, n, &bad);
    int ok = bad == 0 && e <= tol;
    report(t, ok, "%-34s %s n=%-8lld rel %.2e (tol %.0e)%s", what, dn(dt), (long long)n, e, tol,
           bad ? " NON-FINITE MISMATCH" : "");
    if (!ok) /* show the first differing element */
        for (int64_t i = 0; i < n; i++)
            if (!(got[i] == ref[i]) && !(isnan(got[i]) && isnan(ref[i])) &&
                (!isfinite(got[i]) || fabs(got[i] - ref[i]) > tol * (1 + fabs(ref[i])))) {
                printf("       first difference at %lld: got %.17g want %.17g\n", (long long)i, got[i], ref[i]);
                break;
            }
    free(got);
    return ok;
}

static int check_i64(tc *t, const char *what, const int64_t *ref, const int64_t *dev, int64_t n)
{
    int64_t *got = xmalloc((size_t)n * 8);
    sq_status st = sq_cuda_copy_d2h(&t->ctx, got, dev, (size_t)n * 8);
    int64_t bad = -1;
    if (st == SQ_OK)
        for (int64_t i = 0; i < n && bad < 0; i++)
            if (got[i] != ref[i]) bad = i;
    int ok = st == SQ_OK && bad < 0;
    report(t, ok, "%-34s i64 n=%-8lld exact%s", what, (long long)n, st != SQ_OK ? " (copy failed)" : "");
    if (bad >= 0) printf("       first difference at %lld: got %lld want %lld\n", (long long)bad,
                         (long long)got[bad], (long long)ref[bad]);
    free(got);
    return ok;
}

/* ---- memory, allocator, copies ------------------------------------------------------------ */

static void test_memory(tc *t)
{
    sq_ctx *ctx = &t->ctx;
    report(t, sq_device_available(SQ_CUDA) == 1, "sq_device_available(SQ_CUDA) with a GPU");
    sq_cuda_mem_stats m0, m1, m2;
    sq_cuda_mem_get(ctx, &m0);
    int64_t cur0 = ctx->mem.total_cur[SQ_CUDA];

    /* a CUDA storage is charged exactly what it asked for, like a CPU one */
    sq_storage *s = NULL;
    sq_status st = sq_storage_new(ctx, SQ_CUDA, SQ_MEM_OTHER, 1001, &s);
    report(t, st == SQ_OK && ctx->mem.total_cur[SQ_CUDA] == cur0 + 1001 &&
                  ctx->mem.cur[SQ_CUDA][SQ_MEM_OTHER] >= 1001,
           "storage on cuda charges 1001 bytes (charged %lld)", (long long)(ctx->mem.total_cur[SQ_CUDA] - cur0));
    sq_cuda_mem_get(ctx, &m1);
    report(t, m1.requested == m0.requested + 1001 && m1.in_use >= m0.in_use + 1001 &&
                  m1.reserved >= m1.in_use,
           "allocator: requested %lld, in use %lld, reserved %lld", (long long)m1.requested,
           (long long)m1.in_use, (long long)m1.reserved);
    if (s) sq_storage_release(s);
    sq_cuda_mem_get(ctx, &m2);
    report(t, ctx->mem.total_cur[SQ_CUDA] == cur0 && m2.requested == m0.requested &&
                  m2.in_use == m0.in_use && m2.cached > 0,
           "release returns accounting to the start (cached %lld bytes kept)", (long long)m2.cached);
    /* the same size comes back from the cache */
    st = sq_storage_new(ctx, SQ_CUDA, SQ_MEM_PARAM, 1001, &s);
    sq_cuda_mem_stats m3;
    sq_cuda_mem_get(ctx, &m3);
    report(t, st == SQ_OK && m3.cache_hits == m2.cache_hits + 1 && m3.cuda_mallocs == m2.cuda_mallocs,
           "second allocation of the same size is a cache hit");
    if (s) sq_storage_release(s);

    /* 1 PB cannot be had: SQ_ERR_NOMEM with a message, and the context goes on */
    void *p = NULL;
    st = sq_device_alloc(ctx, SQ_CUDA, (size_t)1 << 50, &p);
    report(t, st == SQ_ERR_NOMEM && p == NULL && strstr(ctx->err, "bytes") && strstr(ctx->err, "free"),
           "1 PiB allocation -> %s: %s", sq_status_name(st), ctx->err);
    sq_cuda_mem_stats m4;
    sq_cuda_mem_get(ctx, &m4);
    report(t, m4.cache_flushes == m3.cache_flushes + 1 && m4.in_use == m0.in_use,
           "the failed allocation flushed the cache once and left nothing live");
    double one = 1.5, back = 0;
    void *d = dalloc(t, 8);
    CALL(t, sq_cuda_fill(ctx, SQ_F64, d, 1, one));
    CALL(t, sq_cuda_copy_d2h(ctx, &back, d, 8));
    report(t, back == one, "the context works after the failed allocation");
    dfree(t, d);

    /* copies larger than the staging buffers, odd length */
    int64_t n = 3 * 1000 * 1000 + 7;
    double *h = rndn(t, n), *h2 = xmalloc((size_t)n * 8);
    void *dd = dalloc(t, (size_t)n * 8), *dd2 = dalloc(t, (size_t)n * 8);
    CALL(t, sq_cuda_copy_h2d(ctx, dd, h, (size_t)n * 8));
    CALL(t, sq_cuda_copy_d2d(ctx, dd2, dd, (size_t)n * 8));
    CALL(t, sq_cuda_copy_d2h(ctx, h2, dd2, (size_t)n * 8));
    report(t, memcmp(h, h2, (size_t)n * 8) == 0, "h2d -> d2d -> d2h round trip of %lld bytes is exact",
           (long long)(n * 8));
    dfree(t, dd);
    dfree(t, dd2);
    free(h);
    free(h2);
}

/* ---- GEMM ------------------------------------------------------------------------------------- */

static void gemm_ref(int tA, int tB, int64_t M, int64_t N, int64_t K, double alpha, const double *A,
                     int64_t lda, const double *B, int64_t ldb, double beta, double *C, int64_t ldc)
{
    for (int64_t i = 0; i < M; i++)
        for (int64_t j = 0; j < N; j++) {
            double acc = 0;
            for (int64_t k = 0; k < K; k++)
                acc += (tA ? A[k * lda + i] : A[i * lda + k]) * (tB ? B[j * ldb + k] : B[k * ldb + j]);
            C[i * ldc + j] = alpha * acc + beta * C[i * ldc + j];
        }
}

static void test_gemm(tc *t, sq_dtype dt, int tf32)
{
    sq_ctx *ctx = &t->ctx;
    sq_cuda_set_tf32(ctx, tf32);
    double tol = tf32 ? 2e-3 : dt == SQ_F32 ? 1e-5 : 1e-12;
    const int64_t M = 129, N = 257, K = 65;
    for (int tA = 0; tA < 2; tA++)
        for (int tB = 0; tB < 2; tB++) {
            /* padded leading dimensions: the kernels see sub-matrices */
            int64_t ar = tA ? K : M, ac = tA ? M : K, br = tB ? N : K, bc = tB ? K : N;
            int64_t lda = ac + 3, ldb = bc + 5, ldc = N + 2;
            double *A = rndn(t, ar * lda), *B = rndn(t, br * ldb), *C = rndn(t, M * ldc);
            round_dt(dt, A, ar * lda);
            round_dt(dt, B, br * ldb);
            round_dt(dt, C, M * ldc);
            void *dA = dev_from(t, dt, A, ar * lda), *dB = dev_from(t, dt, B, br * ldb);
            void *dC = dev_from(t, dt, C, M * ldc);
            int64_t calls = ctx->stats.gemm_calls;
            CALL(t, sq_cuda_gemm(ctx, dt, tA, tB, M, N, K, 0.75, dA, lda, dB, ldb, -0.5, dC, ldc));
            gemm_ref(tA, tB, M, N, K, 0.75, A, lda, B, ldb, -0.5, C, ldc);
            char name[64];
            snprintf(name, sizeof name, "gemm%s %c%c 129x257x65 ld+", tf32 ? " tf32" : "", tA ? 'T' : 'N',
                     tB ? 'T' : 'N');
            check(t, name, dt, C, dC, M * ldc, tol);
            if (tA == 0 && tB == 0)
                report(t, ctx->stats.gemm_calls == calls + 1, "gemm counts its call in ctx->stats");
            dfree(t, dA);
            dfree(t, dB);
            dfree(t, dC);
            free(A);
            free(B);
            free(C);
        }
    /* batched, with B shared by every batch (stride 0) */
    const int64_t bt = 3, m = 33, n = 17, k = 41;
    double *A = rndn(t, bt * m * k), *B = rndn(t, k * n), *C = xmalloc((size_t)(bt * m * n) * 8);
    round_dt(dt, A, bt * m * k);
    round_dt(dt, B, k * n);
    for (int64_t i = 0; i < bt * m * n; i++) C[i] = 0;
    void *dA = dev_from(t, dt, A, bt * m * k), *dB = dev_from(t, dt, B, k * n), *dC = dev_poison(t, dt, bt * m * n);
    CALL(t, sq_cuda_gemm_batched(ctx, dt, 0, 0, bt, m, n, k, 1.0, dA, k, m * k, dB, n, 0, 0.0, dC, n, m * n));
    for (int64_t b = 0; b < bt; b++) gemm_ref(0, 0, m, n, k, 1.0, A + b * m * k, k, B, n, 0.0, C + b * m * n, n);
    check(t, tf32 ? "gemm_batched tf32 3x33x17x41 B bcast" : "gemm_batched 3x33x17x41 B bcast", dt, C, dC,
          bt * m * n, tol);
    dfree(t, dA);
    dfree(t, dB);
    dfree(t, dC);
    free(A);
    free(B);
    free(C);
    sq_cuda_set_tf32(ctx, 0);
}

/* ---- copy, fill, convert ----------------------------------------------------------------------- */

static void test_copy(tc *t, sq_dtype dt)
{
    sq_ctx *ctx = &t->ctx;
    /* src: a (7,5,9) buffer; view (3,5,7) = permute(2,1,0) of its [0:7, :, 2:5] part */
    int64_t sn = 7 * 5 * 9;
    double *S = rndn(t, sn);
    round_dt(dt, S, sn);
    void *dS = dev_from(t, dt, S, sn);
    int64_t shape[3] = {3, 5, 7}, sst[3] = {1, 9, 45}, off = 2;
    double *ref = xmalloc(105 * 8);
    for (int64_t a = 0; a < 3; a++)
        for (int64_t b = 0; b < 5; b++)
            for (int64_t c = 0; c < 7; c++) ref[(a * 5 + b) * 7 + c] = S[off + a * sst[0] + b * sst[1] + c * sst[2]];
    void *dO = dev_poison(t, dt, 105);
    CALL(t, sq_cuda_copy_strided(ctx, dt, dO, NULL, (char *)dS + off * sq_dtype_size(dt), sst, 3, shape));
    check(t, "copy_strided permuted+narrowed 3x5x7", dt, ref, dO, 105, 0);
    /* strided destination: write into every other column of a (3,5,15) buffer */
    int64_t dn_ = 3 * 5 * 15, ost[3] = {75, 15, 2};
    double *ref2 = xmalloc((size_t)dn_ * 8);
    for (int64_t i = 0; i < dn_; i++) ref2[i] = NAN;
    for (int64_t a = 0; a < 3; a++)
        for (int64_t b = 0; b < 5; b++)
            for (int64_t c = 0; c < 7; c++) ref2[a * 75 + b * 15 + c * 2] = ref[(a * 5 + b) * 7 + c];
    void *dO2 = dev_poison(t, dt, dn_);
    CALL(t, sq_cuda_copy_strided(ctx, dt, dO2, ost, (char *)dS + off * sq_dtype_size(dt), sst, 3, shape));
    check(t, "copy_strided into strided dest", dt, ref2, dO2, dn_, 0);
    /* broadcast source (stride 0) */
    int64_t bsh[2] = {129, 257}, bst[2] = {0, 1};
    double *row = rndn(t, 257), *ref3 = xmalloc(129 * 257 * 8);
    round_dt(dt, row, 257);
    for (int64_t i = 0; i < 129 * 257; i++) ref3[i] = row[i % 257];
    void *dR = dev_from(t, dt, row, 257), *dO3 = dev_poison(t, dt, 129 * 257);
    CALL(t, sq_cuda_copy_strided(ctx, dt, dO3, NULL, dR, bst, 2, bsh));
    check(t, "copy_strided broadcast row 129x257", dt, ref3, dO3, 129 * 257, 0);

    /* fill and convert */
    int64_t n = 1001;
    double *fr = xmalloc((size_t)n * 8);
    for (int64_t i = 0; i < n; i++) fr[i] = 3.25;
    void *dF = dev_poison(t, dt, n);
    CALL(t, sq_cuda_fill(ctx, dt, dF, n, 3.25));
    check(t, "fill", dt, fr, dF, n, 0);
    sq_dtype other = dt == SQ_F32 ? SQ_F64 : SQ_F32;
    double *cv = rndn(t, n);
    round_dt(SQ_F32, cv, n); /* representable in both */
    void *dC = dev_from(t, other, cv, n), *dC2 = dev_poison(t, dt, n);
    CALL(t, sq_cuda_convert(ctx, dt, dC2, other, dC, n));
    check(t, dt == SQ_F32 ? "convert f64 -> f32" : "convert f32 -> f64", dt, cv, dC2, n, 0);
    dfree(t, dS), dfree(t, dO), dfree(t, dO2), dfree(t, dR), dfree(t, dO3), dfree(t, dF), dfree(t, dC), dfree(t, dC2);
    free(S), free(ref), free(ref2), free(row), free(ref3), free(fr), free(cv);
}

static void test_copy_int(tc *t)
{
    sq_ctx *ctx = &t->ctx;
    int64_t h[35], ref[35];
    for (int i = 0; i < 35; i++) h[i] = (int64_t)i * 1000003 - 17;
    int64_t shape[2] = {5, 7}, st[2] = {1, 5}; /* transpose of a (7,5) */
    for (int a = 0; a < 5; a++)
        for (int b = 0; b < 7; b++) ref[a * 7 + b] = h[a + b * 5];
    int64_t *d = dev_i64(t, h, 35), *o = dev_poison(t, SQ_I64, 35);
    CALL(t, sq_cuda_copy_strided(ctx, SQ_I64, o, NULL, d, st, 2, shape));
    check_i64(t, "copy_strided int64 transpose 5x7", ref, o, 35);
    dfree(t, d);
    dfree(t, o);
}

/* ---- elementwise --------------------------------------------------------------------------------- */

static double binref(sq_binop op, double a, double b)
{
    return op == SQ_BIN_ADD ? a + b : op == SQ_BIN_SUB ? a - b : op == SQ_BIN_MUL ? a * b : a / b;
}

static void test_binary(tc *t, sq_dtype dt)
{
    sq_ctx *ctx = &t->ctx;
    static const char *names[] = {"add", "sub", "mul", "div"};
    /* out (3,5,7); a = transpose view of a (7,5,3) buffer; b (1,5,1) broadcast */
    int64_t shape[3] = {3, 5, 7}, ast[3] = {1, 3, 15}, bst[3] = {0, 1, 0}, n = 105;
    double *A = rndn(t, 105), *B = rnd(t, 5, 0.5, 2.0), *dY = rndn(t, n);
    round_dt(dt, A, 105);
    round_dt(dt, B, 5);
    round_dt(dt, dY, n);
    void *dA = dev_from(t, dt, A, 105), *dB = dev_from(t, dt, B, 5), *ddY = dev_from(t, dt, dY, n);
    for (int op = 0; op < 4; op++) {
        double ref[105], ga[105], gb[105], gbs[5] = {0};
        for (int64_t i = 0; i < 3; i++)
            for (int64_t j = 0; j < 5; j++)
                for (int64_t k = 0; k < 7; k++) {
                    int64_t o = (i * 5 + j) * 7 + k;
                    double a = A[i * ast[0] + j * ast[1] + k * ast[2]], b = B[j], g = dY[o];
                    ref[o] = binref((sq_binop)op, a, b);
                    ga[o] = op == SQ_BIN_MUL ? g * b : op == SQ_BIN_DIV ? g / b : g;
                    gb[o] = op == SQ_BIN_ADD ? g : op == SQ_BIN_SUB ? -g : op == SQ_BIN_MUL ? g * a : -g * a / (b * b);
                    gbs[j] += gb[o];
                }
        void *dO = dev_poison(t, dt, n), *dGa = dev_poison(t, dt, n), *dGb = dev_poison(t, dt, n);
        void *dGbs = dev_poison(t, dt, 5);
        char nm[64];
        CALL(t, sq_cuda_binary(ctx, (sq_binop)op, dt, dO, dA, ast, dB, bst, 3, shape));
        snprintf(nm, sizeof nm, "binary %s 3x5x7 strided+bcast", names[op]);
        check(t, nm, dt, ref, dO, n, tol_of(dt));
        CALL(t, sq_cuda_binary_bwd(ctx, (sq_binop)op, dt, dGa, dGb, ddY, dA, ast, dB, bst, 3, shape));
        snprintf(nm, sizeof nm, "binary_bwd %s da", names[op]);
        check(t, nm, dt, ga, dGa, n, tol_of(dt));
        snprintf(nm, sizeof nm, "binary_bwd %s db (full)", names[op]);
        check(t, nm, dt, gb, dGb, n, tol_of(dt));
        CALL(t, sq_cuda_sum_to(ctx, dt, dGbs, bst, dGb, 3, shape));
        snprintf(nm, sizeof nm, "sum_to db -> (1,5,1) after %s", names[op]);
        check(t, nm, dt, gbs, dGbs, 5, tol_of(dt));
        dfree(t, dO), dfree(t, dGa), dfree(t, dGb), dfree(t, dGbs);
    }
    dfree(t, dA), dfree(t, dB), dfree(t, ddY);
    free(A), free(B), free(dY);

    /* 129x257 + a column vector (129,1), and sum_to over the rows */
    int64_t sh2[2] = {129, 257}, s_a[2] = {257, 1}, s_b[2] = {1, 0}, m = 129 * 257;
    double *X = rndn(t, m), *c = rndn(t, 129), *r2 = xmalloc((size_t)m * 8), cs[257] = {0};
    round_dt(dt, X, m);
    round_dt(dt, c, 129);
    for (int64_t i = 0; i < m; i++) {
        r2[i] = X[i] * c[i / 257];
        cs[i % 257] += X[i];
    }
    void *dX = dev_from(t, dt, X, m), *dc = dev_from(t, dt, c, 129), *dO = dev_poison(t, dt, m), *dS = dev_poison(t, dt, 257);
    CALL(t, sq_cuda_binary(ctx, SQ_BIN_MUL, dt, dO, dX, s_a, dc, s_b, 2, sh2));
    check(t, "binary mul 129x257 * (129,1)", dt, r2, dO, m, tol_of(dt));
    int64_t s_row[2] = {0, 1};
    CALL(t, sq_cuda_sum_to(ctx, dt, dS, s_row, dX, 2, sh2));
    check(t, "sum_to 129x257 -> (1,257)", dt, cs, dS, 257, tol_of(dt));
    dfree(t, dX), dfree(t, dc), dfree(t, dO), dfree(t, dS);
    free(X), free(c), free(r2);
}

static void test_scalar_maps(tc *t, sq_dtype dt)
{
    sq_ctx *ctx = &t->ctx;
    int64_t n = 1031;
    double *x = rnd(t, n, 0.1, 3.0), *g = rndn(t, n), *r = xmalloc((size_t)n * 8);
    round_dt(dt, x, n);
    round_dt(dt, g, n);
    void *dx = dev_from(t, dt, x, n), *dg = dev_from(t, dt, g, n), *dy = dev_poison(t, dt, n);
    for (int64_t i = 0; i < n; i++) r[i] = x[i] * -1.5 + 0.25;
    CALL(t, sq_cuda_scale_shift(ctx, dt, dy, dx, n, -1.5, 0.25));
    check(t, "scale_shift", dt, r, dy, n, tol_of(dt));
    for (int64_t i = 0; i < n; i++) r[i] = pow(x[i], 2.5);
    CALL(t, sq_cuda_fill(ctx, dt, dy, n, NAN));
    CALL(t, sq_cuda_pow_scalar(ctx, dt, dy, dx, n, 2.5));
    check(t, "pow_scalar 2.5", dt, r, dy, n, tol_of(dt));
    for (int64_t i = 0; i < n; i++) r[i] = g[i] * 2.5 * pow(x[i], 1.5);
    CALL(t, sq_cuda_fill(ctx, dt, dy, n, NAN));
    CALL(t, sq_cuda_pow_scalar_bwd(ctx, dt, dy, dg, dx, n, 2.5));
    check(t, "pow_scalar_bwd 2.5", dt, r, dy, n, tol_of(dt));
    dfree(t, dx), dfree(t, dg), dfree(t, dy);
    free(x), free(g), free(r);
}

static double un_f(sq_unop op, double x)
{
    switch (op) {
    case SQ_UN_NEG: return -x;
    case SQ_UN_EXP: return exp(x);
    case SQ_UN_LOG: return log(x);
    case SQ_UN_SQRT: return sqrt(x);
    case SQ_UN_ABS: return fabs(x);
    case SQ_UN_RELU: return x > 0 ? x : 0;
    case SQ_UN_GELU: return 0.5 * x * (1 + erf(x / sqrt(2.0)));
    case SQ_UN_SIGMOID: return 1 / (1 + exp(-x));
    default: return tanh(x);
    }
}

static double un_d(sq_unop op, double x) /* derivative at the input x */
{
    switch (op) {
    case SQ_UN_NEG: return -1;
    case SQ_UN_EXP: return exp(x);
    case SQ_UN_LOG: return 1 / x;
    case SQ_UN_SQRT: return 0.5 / sqrt(x);
    case SQ_UN_ABS: return x > 0 ? 1 : x < 0 ? -1 : 0;
    case SQ_UN_RELU: return x > 0 ? 1 : 0;
    case SQ_UN_GELU: return 0.5 * (1 + erf(x / sqrt(2.0))) + x * exp(-0.5 * x * x) / sqrt(2 * M_PI);
    case SQ_UN_SIGMOID: {
        double s = 1 / (1 + exp(-x));
        return s * (1 - s);
    }
    default: return 1 - tanh(x) * tanh(x);
    }
}

static void test_unary(tc *t, sq_dtype dt)
{
    sq_ctx *ctx = &t->ctx;
    int64_t n = 1031;
    for (int op = 0; op < SQ_UN_COUNT; op++) {
        int pos = op == SQ_UN_LOG || op == SQ_UN_SQRT;
        double *x = pos ? rnd(t, n, 0.05, 4.0) : rnd(t, n, -4.0, 4.0), *g = rndn(t, n);
        round_dt(dt, x, n);
        round_dt(dt, g, n);
        double *y = xmalloc((size_t)n * 8), *dxr = xmalloc((size_t)n * 8);
        for (int64_t i = 0; i < n; i++) {
            y[i] = un_f((sq_unop)op, x[i]);
            dxr[i] = g[i] * un_d((sq_unop)op, x[i]);
        }
        void *dx = dev_from(t, dt, x, n), *dg = dev_from(t, dt, g, n), *dy = dev_poison(t, dt, n);
        void *ddx = dev_poison(t, dt, n);
        char nm[64];
        CALL(t, sq_cuda_unary(ctx, (sq_unop)op, dt, dy, dx, n));
        snprintf(nm, sizeof nm, "unary %s", sq_unop_name((sq_unop)op));
        check(t, nm, dt, y, dy, n, tol_of(dt));
        /* backward from what the engine saves: the GPU's own output, or the input */
        const void *sv = sq_cuda_unary_bwd_uses_output((sq_unop)op) ? dy : dx;
        CALL(t, sq_cuda_unary_bwd(ctx, (sq_unop)op, dt, ddx, dg, sv, n));
        snprintf(nm, sizeof nm, "unary_bwd %s", sq_unop_name((sq_unop)op));
        /* from a rounded saved output, float32 derivatives carry its rounding too */
        check(t, nm, dt, dxr, ddx, n, dt == SQ_F32 ? 2e-5 : 1e-12);
        dfree(t, dx), dfree(t, dg), dfree(t, dy), dfree(t, ddx);
        free(x), free(g), free(y), free(dxr);
    }
}

/* ---- reductions ------------------------------------------------------------------------------------ */

/* reference over a strided (outer, len, inner) view; NaN is the largest, first wins */
static void red_ref(sq_cuda_red op, const double *x, int64_t outer, int64_t len, int64_t inner,
                    const int64_t xs[3], double *out, int64_t *am)
{
    for (int64_t o = 0; o < outer; o++)
        for (int64_t i = 0; i < inner; i++) {
            double acc = 0, best = 0;
            int64_t bi = -1;
            for (int64_t l = 0; l < len; l++) {
                double v = x[o * xs[0] + l * xs[1] + i * xs[2]];
                acc += v;
                if (bi < 0 || v > best || (isnan(v) && !isnan(best))) {
                    best = v;
                    bi = l;
                }
            }
            out[o * inner + i] = op == SQ_CUDA_RED_SUM ? acc : op == SQ_CUDA_RED_MEAN ? acc / (double)len : best;
            if (am) am[o * inner + i] = bi;
        }
}

static void run_reduce(tc *t, sq_dtype dt, const char *what, const double *x, const void *dx,
                       int64_t outer, int64_t len, int64_t inner, const int64_t xs[3])
{
    sq_ctx *ctx = &t->ctx;
    static const char *names[] = {"sum", "mean", "max"};
    int64_t no = outer * inner;
    double *ref = xmalloc((size_t)no * 8);
    int64_t *am = xmalloc((size_t)no * 8);
    for (int op = 0; op < 3; op++) {
        red_ref((sq_cuda_red)op, x, outer, len, inner, xs, ref, am);
        void *dO = dev_poison(t, dt, no);
        int64_t *dAm = op == SQ_CUDA_RED_MAX ? dev_poison(t, SQ_I64, no) : NULL;
        CALL(t, sq_cuda_reduce_dim(ctx, (sq_cuda_red)op, dt, dO, dAm, dx, outer, len, inner, xs));
        char nm[96];
        snprintf(nm, sizeof nm, "reduce_dim %s %s", names[op], what);
        check(t, nm, dt, ref, dO, no, tol_of(dt));
        if (dAm) {
            snprintf(nm, sizeof nm, "reduce_dim argmax %s", what);
            check_i64(t, nm, am, dAm, no);
        }
        dfree(t, dO);
        dfree(t, dAm);
    }
    free(ref);
    free(am);
}

static void test_reduce(tc *t, sq_dtype dt)
{
    sq_ctx *ctx = &t->ctx;
    /* contiguous 3x5x7 over each dim */
    double *x = rndn(t, 105);
    round_dt(dt, x, 105);
    void *dx = dev_from(t, dt, x, 105);
    int64_t sh[3] = {3, 5, 7};
    for (int d = 0; d < 3; d++) {
        int64_t outer = 1, inner = 1;
        for (int i = 0; i < d; i++) outer *= sh[i];
        for (int i = d + 1; i < 3; i++) inner *= sh[i];
        int64_t xs[3] = {sh[d] * inner, inner, 1};
        char what[32];
        snprintf(what, sizeof what, "3x5x7 dim %d", d);
        run_reduce(t, dt, what, x, dx, outer, sh[d], inner, xs);
    }
    dfree(t, dx);
    free(x);
    /* views of a (257, 300) buffer: narrowed rows, and a transpose */
    int64_t bn = 257 * 300;
    double *b = rndn(t, bn);
    round_dt(dt, b, bn);
    b[5 * 300 + 17] = NAN; /* NaN wins the max of its row, as on the CPU */
    b[5 * 300 + 40] = NAN;
    void *db = dev_from(t, dt, b, bn);
    int64_t v1[3] = {300, 1, 1};
    run_reduce(t, dt, "rows of 257x(257 of 300)", b, db, 257, 257, 1, v1);
    int64_t v2[3] = {0, 300, 1};
    run_reduce(t, dt, "dim 0 of 129x257 (ld 300)", b, db, 1, 129, 257, v2);
    int64_t v3[3] = {1, 300, 0};
    run_reduce(t, dt, "transposed view 300x257 rows", b, db, 300, 257, 1, v3);
    dfree(t, db);
    free(b);
    /* long rows */
    int64_t L = 100003;
    double *lr = rndn(t, 3 * L);
    round_dt(dt, lr, 3 * L);
    void *dl = dev_from(t, dt, lr, 3 * L);
    int64_t v4[3] = {L, 1, 1};
    run_reduce(t, dt, "3 rows of 100003", lr, dl, 3, L, 1, v4);
    dfree(t, dl);
    free(lr);

    /* all elements */
    int64_t sizes[3] = {1, 1000, 1000003};
    for (int s = 0; s < 3; s++) {
        int64_t n = sizes[s];
        double *a = rndn(t, n);
        for (int64_t i = 0; i < n; i++) a[i] += 0.5; /* keeps the sum away from 0 */
        round_dt(dt, a, n);
        if (n > 10) a[n / 3] = 50.0; /* a clear maximum far from the ends */
        void *da = dev_from(t, dt, a, n);
        int64_t one[3] = {0, 1, 0};
        for (int op = 0; op < 3; op++) {
            double ref;
            int64_t am;
            red_ref((sq_cuda_red)op, a, 1, n, 1, one, &ref, &am);
            void *dO = dev_poison(t, dt, 1);
            int64_t *dAm = dev_poison(t, SQ_I64, 1);
            int64_t ws0 = ctx->mem.cur[SQ_CUDA][SQ_MEM_WORKSPACE];
            CALL(t, sq_cuda_reduce_all(ctx, (sq_cuda_red)op, dt, dO, op == 2 ? dAm : NULL, da, n));
            char nm[64];
            snprintf(nm, sizeof nm, "reduce_all %s n=%lld", op == 0 ? "sum" : op == 1 ? "mean" : "max", (long long)n);
            check(t, nm, dt, &ref, dO, 1, dt == SQ_F32 ? 1e-5 : 1e-11);
            if (op == 2) check_i64(t, "reduce_all argmax", &am, dAm, 1);
            if (ctx->mem.cur[SQ_CUDA][SQ_MEM_WORKSPACE] != ws0)
                report(t, 0, "reduce_all leaves workspace charged");
            dfree(t, dO);
            dfree(t, dAm);
        }
        dfree(t, da);
        free(a);
    }

    /* backward */
    int64_t outer = 3, len = 5, inner = 7, no = 21, n = 105;
    double *g = rndn(t, no), *xx = rndn(t, n);
    round_dt(dt, g, no);
    round_dt(dt, xx, n);
    int64_t am[21], xs[3] = {35, 7, 1};
    double mx[21];
    red_ref(SQ_CUDA_RED_MAX, xx, outer, len, inner, xs, mx, am);
    void *dg = dev_from(t, dt, g, no);
    int64_t *dam = dev_i64(t, am, no);
    for (int op = 0; op < 3; op++) {
        double ref[105];
        for (int64_t o = 0; o < outer; o++)
            for (int64_t l = 0; l < len; l++)
                for (int64_t i = 0; i < inner; i++) {
                    double gv = g[o * inner + i];
                    ref[(o * len + l) * inner + i] = op == 0 ? gv : op == 1 ? gv / (double)len
                                                                : (am[o * inner + i] == l ? gv : 0);
                }
        void *dO = dev_poison(t, dt, n);
        CALL(t, sq_cuda_reduce_dim_bwd(ctx, (sq_cuda_red)op, dt, dO, dg, dam, outer, len, inner));
        check(t, op == 0 ? "reduce_dim_bwd sum 3x5x7" : op == 1 ? "reduce_dim_bwd mean 3x5x7" : "reduce_dim_bwd max 3x5x7",
              dt, ref, dO, n, tol_of(dt));
        dfree(t, dO);
    }
    dfree(t, dg);
    dfree(t, dam);
    free(g);
    free(xx);
}

/* ---- softmax, cross-entropy --------------------------------------------------------------------------- */

static void softmax_case(tc *t, sq_dtype dt, int lg, int64_t rows, int64_t len, int causal)
{
    sq_ctx *ctx = &t->ctx;
    int64_t n = rows * len;
    double *x = rndn(t, n), *g = rndn(t, n), *y = xmalloc((size_t)n * 8), *dx = xmalloc((size_t)n * 8);
    for (int64_t i = 0; i < n; i++) x[i] *= 3;
    round_dt(dt, x, n);
    round_dt(dt, g, n);
    for (int64_t r = 0; r < rows; r++) {
        const double *xr = x + r * len;
        int64_t valid = causal ? r % len + 1 : len;
        double m = -INFINITY, s = 0;
        for (int64_t j = 0; j < valid; j++) m = fmax(m, xr[j]);
        for (int64_t j = 0; j < valid; j++) s += exp(xr[j] - m);
        double acc = 0;
        for (int64_t j = 0; j < len; j++) {
            double p = j < valid ? exp(xr[j] - m) / s : 0;
            y[r * len + j] = lg ? (j < valid ? xr[j] - m - log(s) : -INFINITY) : p;
            if (j < valid) acc += lg ? g[r * len + j] : g[r * len + j] * p;
        }
        for (int64_t j = 0; j < len; j++) {
            double p = j < valid ? exp(xr[j] - m) / s : 0;
            dx[r * len + j] = j >= valid ? 0 : lg ? g[r * len + j] - p * acc : p * (g[r * len + j] - acc);
        }
    }
    void *dX = dev_from(t, dt, x, n), *dG = dev_from(t, dt, g, n), *dY = dev_poison(t, dt, n), *dDX = dev_poison(t, dt, n);
    char nm[96];
    CALL(t, sq_cuda_softmax(ctx, dt, lg, dY, dX, rows, len, causal));
    snprintf(nm, sizeof nm, "%s %lldx%lld%s", lg ? "log_softmax" : "softmax", (long long)rows, (long long)len,
             causal ? " causal" : "");
    check(t, nm, dt, y, dY, n, tol_of(dt));
    /* backward from the GPU's own output, as the engine will save it */
    CALL(t, sq_cuda_softmax_bwd(ctx, dt, lg, dDX, dG, dY, rows, len, causal));
    snprintf(nm, sizeof nm, "%s_bwd %lldx%lld%s", lg ? "log_softmax" : "softmax", (long long)rows,
             (long long)len, causal ? " causal" : "");
    check(t, nm, dt, dx, dDX, n, dt == SQ_F32 ? 2e-5 : 1e-12);
    dfree(t, dX), dfree(t, dG), dfree(t, dY), dfree(t, dDX);
    free(x), free(g), free(y), free(dx);
}

static void test_softmax(tc *t, sq_dtype dt)
{
    for (int lg = 0; lg < 2; lg++) {
        softmax_case(t, dt, lg, 7, 1031, 0);
        softmax_case(t, dt, lg, 2, 4099, 0);
        softmax_case(t, dt, lg, 3 * 17, 17, 1);
        softmax_case(t, dt, lg, 2 * 300, 300, 1);
        softmax_case(t, dt, lg, 5, 1, 0);
    }
}

static void test_cross_entropy(tc *t, sq_dtype dt)
{
    sq_ctx *ctx = &t->ctx;
    const int64_t N = 37, C = 1001;
    double *x = rndn(t, N * C), *p = xmalloc((size_t)(N * C) * 8), *dl = xmalloc((size_t)(N * C) * 8);
    for (int64_t i = 0; i < N * C; i++) x[i] *= 2;
    round_dt(dt, x, N * C);
    int64_t tg[37];
    double loss = 0, dloss = 0.7;
    for (int64_t r = 0; r < N; r++) {
        tg[r] = (int64_t)sq_rng_below(&t->rng, (uint64_t)C);
        double m = -INFINITY, s = 0;
        for (int64_t j = 0; j < C; j++) m = fmax(m, x[r * C + j]);
        for (int64_t j = 0; j < C; j++) s += exp(x[r * C + j] - m);
        double lse = m + log(s);
        loss += lse - x[r * C + tg[r]];
        for (int64_t j = 0; j < C; j++) {
            p[r * C + j] = exp(x[r * C + j] - lse);
            dl[r * C + j] = dloss * (p[r * C + j] - (j == tg[r])) / (double)N;
        }
    }
    loss /= (double)N;
    void *dX = dev_from(t, dt, x, N * C), *dP = dev_poison(t, dt, N * C), *dL = dev_poison(t, dt, 1);
    int64_t *dT = dev_i64(t, tg, N);
    void *dDl = dev_from(t, dt, &dloss, 1), *dG = dev_poison(t, dt, N * C);
    CALL(t, sq_cuda_cross_entropy(ctx, dt, dL, dP, dX, dT, N, C));
    check(t, "cross_entropy loss 37x1001", dt, &loss, dL, 1, tol_of(dt));
    check(t, "cross_entropy probs 37x1001", dt, p, dP, N * C, tol_of(dt));
    CALL(t, sq_cuda_cross_entropy_bwd(ctx, dt, dG, dDl, dP, dT, N, C));
    check(t, "cross_entropy_bwd 37x1001", dt, dl, dG, N * C, tol_of(dt));
    /* an out-of-range target: NaN loss, and the next sync names it */
    int64_t badt = C + 4;
    CALL(t, sq_cuda_copy_h2d(ctx, dT + 3, &badt, 8));
    CALL(t, sq_cuda_cross_entropy(ctx, dt, dL, NULL, dX, dT, N, C));
    sq_status st = sq_cuda_sync(ctx);
    report(t, st == SQ_ERR_ARG && strstr(ctx->err, "cross_entropy") && strstr(ctx->err, "1005"),
           "cross_entropy bad target -> %s: %s", sq_status_name(st), ctx->err);
    report(t, sq_cuda_sync(ctx) == SQ_OK, "the error is reported once, then cleared");
    dfree(t, dX), dfree(t, dP), dfree(t, dL), dfree(t, dT), dfree(t, dDl), dfree(t, dG);
    free(x), free(p), free(dl);
}

/* ---- layer norm, affine --------------------------------------------------------------------------------- */

static void test_layer_norm(tc *t, sq_dtype dt)
{
    sq_ctx *ctx = &t->ctx;
    const int64_t R = 33, D = 1027;
    const double eps = 1e-5;
    int64_t n = R * D;
    for (int affine = 0; affine < 2; affine++) {
        double *x = rndn(t, n), *w = rnd(t, D, 0.5, 1.5), *b = rndn(t, D), *g = rndn(t, n);
        for (int64_t i = 0; i < n; i++) x[i] = 2 * x[i] + 1;
        round_dt(dt, x, n), round_dt(dt, w, D), round_dt(dt, b, D), round_dt(dt, g, n);
        double *y = xmalloc((size_t)n * 8), *h = xmalloc((size_t)n * 8), rs[33], *dx = xmalloc((size_t)n * 8);
        double *dw = xmalloc((size_t)D * 8), *dbb = xmalloc((size_t)D * 8);
        for (int64_t j = 0; j < D; j++) dw[j] = dbb[j] = 0;
        for (int64_t r = 0; r < R; r++) {
            double m = 0, v = 0;
            for (int64_t j = 0; j < D; j++) m += x[r * D + j];
            m /= (double)D;
            for (int64_t j = 0; j < D; j++) v += (x[r * D + j] - m) * (x[r * D + j] - m);
            v /= (double)D;
            rs[r] = 1 / sqrt(v + eps);
            double m1 = 0, m2 = 0;
            for (int64_t j = 0; j < D; j++) {
                int64_t i = r * D + j;
                h[i] = (x[i] - m) * rs[r];
                y[i] = affine ? h[i] * w[j] + b[j] : h[i];
                double gg = g[i] * (affine ? w[j] : 1);
                m1 += gg;
                m2 += gg * h[i];
                dw[j] += g[i] * h[i];
                dbb[j] += g[i];
            }
            m1 /= (double)D;
            m2 /= (double)D;
            for (int64_t j = 0; j < D; j++) {
                int64_t i = r * D + j;
                dx[i] = rs[r] * (g[i] * (affine ? w[j] : 1) - m1 - h[i] * m2);
            }
        }
        void *dX = dev_from(t, dt, x, n), *dW = dev_from(t, dt, w, D), *dB = dev_from(t, dt, b, D);
        void *dG = dev_from(t, dt, g, n), *dY = dev_poison(t, dt, n), *dH = dev_poison(t, dt, n);
        void *dR = dev_poison(t, dt, R), *dDX = dev_poison(t, dt, n), *dDW = dev_poison(t, dt, D), *dDB = dev_poison(t, dt, D);
        CALL(t, sq_cuda_layer_norm(ctx, dt, dY, dH, dR, dX, affine ? dW : NULL, affine ? dB : NULL, R, D, eps));
        check(t, affine ? "layer_norm 33x1027 w,b" : "layer_norm 33x1027 no affine", dt, y, dY, n, tol_of(dt));
        check(t, "layer_norm xhat", dt, h, dH, n, tol_of(dt));
        check(t, "layer_norm rstd", dt, rs, dR, R, tol_of(dt));
        CALL(t, sq_cuda_layer_norm_bwd(ctx, dt, dDX, affine ? dDW : NULL, affine ? dDB : NULL, dG, dH, dR,
                                       affine ? dW : NULL, R, D));
        check(t, affine ? "layer_norm_bwd dx w,b" : "layer_norm_bwd dx no affine", dt, dx, dDX, n,
              dt == SQ_F32 ? 2e-5 : 1e-11);
        if (affine) {
            check(t, "layer_norm_bwd dw", dt, dw, dDW, D, tol_of(dt));
            check(t, "layer_norm_bwd db", dt, dbb, dDB, D, tol_of(dt));
        }
        dfree(t, dX), dfree(t, dW), dfree(t, dB), dfree(t, dG), dfree(t, dY), dfree(t, dH), dfree(t, dR);
        dfree(t, dDX), dfree(t, dDW), dfree(t, dDB);
        free(x), free(w), free(b), free(g), free(y), free(h), free(dx), free(dw), free(dbb);
    }
}

static void test_affine(tc *t, sq_dtype dt)
{
    sq_ctx *ctx = &t->ctx;
    const int64_t R = 129, D = 257;
    int64_t n = R * D;
    double *x = rndn(t, n), *a = rndn(t, D), *b = rndn(t, D), *g = rndn(t, n);
    round_dt(dt, x, n), round_dt(dt, a, D), round_dt(dt, b, D), round_dt(dt, g, n);
    double *y = xmalloc((size_t)n * 8), *dx = xmalloc((size_t)n * 8), da[257] = {0}, db[257] = {0};
    for (int64_t i = 0; i < n; i++) {
        int64_t j = i % D;
        y[i] = x[i] * a[j] + b[j];
        dx[i] = g[i] * a[j];
        da[j] += g[i] * x[i];
        db[j] += g[i];
    }
    void *dX = dev_from(t, dt, x, n), *dA = dev_from(t, dt, a, D), *dB = dev_from(t, dt, b, D), *dG = dev_from(t, dt, g, n);
    void *dY = dev_poison(t, dt, n), *dDX = dev_poison(t, dt, n), *dDA = dev_poison(t, dt, D), *dDB = dev_poison(t, dt, D);
    CALL(t, sq_cuda_affine(ctx, dt, dY, dX, dA, dB, R, D));
    check(t, "affine 129x257", dt, y, dY, n, tol_of(dt));
    CALL(t, sq_cuda_affine_bwd(ctx, dt, dDX, dDA, dDB, dG, dX, dA, R, D));
    check(t, "affine_bwd dx", dt, dx, dDX, n, tol_of(dt));
    check(t, "affine_bwd dalpha", dt, da, dDA, D, tol_of(dt));
    check(t, "affine_bwd dbeta", dt, db, dDB, D, tol_of(dt));
    dfree(t, dX), dfree(t, dA), dfree(t, dB), dfree(t, dG), dfree(t, dY), dfree(t, dDX), dfree(t, dDA), dfree(t, dDB);
    free(x), free(a), free(b), free(g), free(y), free(dx);
}

/* ---- embedding, dropout ------------------------------------------------------------------------------------ */

static void test_embedding(tc *t, sq_dtype dt)
{
    sq_ctx *ctx = &t->ctx;
    const int64_t V = 101, D = 33, n = 257;
    double *w = rndn(t, V * D), *g = rndn(t, n * D), *y = xmalloc((size_t)(n * D) * 8), *dw = xmalloc((size_t)(V * D) * 8);
    round_dt(dt, w, V * D), round_dt(dt, g, n * D);
    int64_t idx[257];
    for (int64_t i = 0; i < V * D; i++) dw[i] = 0;
    for (int64_t i = 0; i < n; i++) {
        idx[i] = (int64_t)sq_rng_below(&t->rng, 40); /* many repeats: the atomics matter */
        for (int64_t d = 0; d < D; d++) {
            y[i * D + d] = w[idx[i] * D + d];
            dw[idx[i] * D + d] += g[i * D + d];
        }
    }
    void *dW = dev_from(t, dt, w, V * D), *dG = dev_from(t, dt, g, n * D), *dY = dev_poison(t, dt, n * D);
    void *dDW = dev_poison(t, dt, V * D);
    int64_t *dI = dev_i64(t, idx, n);
    CALL(t, sq_cuda_embedding(ctx, dt, dY, dI, dW, n, V, D));
    check(t, "embedding 257 of 101x33", dt, y, dY, n * D, 0);
    CALL(t, sq_cuda_fill(ctx, dt, dDW, V * D, 0));
    CALL(t, sq_cuda_embedding_bwd(ctx, dt, dDW, dG, dI, n, V, D));
    check(t, "embedding_bwd (atomicAdd)", dt, dw, dDW, V * D, tol_of(dt));
    /* a bad index: NaN rows, nothing out of bounds, reported at the next sync */
    int64_t bad = 500;
    CALL(t, sq_cuda_copy_h2d(ctx, dI + 7, &bad, 8));
    CALL(t, sq_cuda_embedding(ctx, dt, dY, dI, dW, n, V, D));
    sq_status st = sq_cuda_sync(ctx);
    report(t, st == SQ_ERR_ARG && strstr(ctx->err, "embedding") && strstr(ctx->err, "500"),
           "embedding bad index -> %s: %s", sq_status_name(st), ctx->err);
    dfree(t, dW), dfree(t, dG), dfree(t, dY), dfree(t, dDW), dfree(t, dI);
    free(w), free(g), free(y), free(dw);
}

/* Philox4x32-10, written independently of the kernel's copy */
static void philox_ref(const uint32_t ci[4], const uint32_t ki[2], uint32_t o[4])
{
    uint32_t c0 = ci[0], c1 = ci[1], c2 = ci[2], c3 = ci[3], k0 = ki[0], k1 = ki[1];
    for (int r = 0; r < 10; r++) {
        uint64_t p0 = (uint64_t)0xD2511F53u * c0, p1 = (uint64_t)0xCD9E8D57u * c2;
        uint32_t n0 = (uint32_t)(p1 >> 32) ^ c1 ^ k0, n1 = (uint32_t)p1;
        uint32_t n2 = (uint32_t)(p0 >> 32) ^ c3 ^ k1, n3 = (uint32_t)p0;
        c0 = n0, c1 = n1, c2 = n2, c3 = n3;
        k0 += 0x9E3779B9u;
        k1 += 0xBB67AE85u;
    }
    o[0] = c0, o[1] = c1, o[2] = c2, o[3] = c3;
}

static void dropout_mask_ref(uint64_t seed, uint64_t off, int64_t n, double p, uint8_t *m)
{
    uint32_t key[2] = {(uint32_t)seed, (uint32_t)(seed >> 32)};
    uint32_t thr = p >= 1 ? 0 : (uint32_t)floor(p * 4294967296.0);
    for (int64_t q = 0; q * 4 < n; q++) {
        uint32_t ctr[4] = {(uint32_t)q, (uint32_t)((uint64_t)q >> 32), (uint32_t)off, (uint32_t)(off >> 32)}, r[4];
        philox_ref(ctr, key, r);
        for (int l = 0; l < 4 && q * 4 + l < n; l++) m[q * 4 + l] = p < 1 && r[l] >= thr;
    }
}

static void test_dropout(tc *t, sq_dtype dt)
{
    sq_ctx *ctx = &t->ctx;
    /* known-answer vectors of Random123 for the reference generator */
    uint32_t o[4], c0[4] = {0, 0, 0, 0}, k0[2] = {0, 0};
    uint32_t c1[4] = {0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u}, k1[2] = {0xa4093822u, 0x299f31d0u};
    philox_ref(c0, k0, o);
    int kat = o[0] == 0x6627e8d5u && o[1] == 0xe169c58du && o[2] == 0xbc57ac4cu && o[3] == 0x9b00dbd8u;
    philox_ref(c1, k1, o);
    kat = kat && o[0] == 0xd16cfe09u && o[1] == 0x94fdccebu && o[2] == 0x5001e420u && o[3] == 0x24126ea1u;
    report(t, kat, "philox4x32-10 reference matches the Random123 known answers");

    const int64_t n = 10007;
    const double p = 0.3;
    double *x = rndn(t, n), *g = rndn(t, n), *y = xmalloc((size_t)n * 8), *dx = xmalloc((size_t)n * 8);
    round_dt(dt, x, n), round_dt(dt, g, n);
    uint8_t *mref = xmalloc((size_t)n), *mgot = xmalloc((size_t)n), *mgot2 = xmalloc((size_t)n);
    sq_cuda_rng_seed(ctx, 1234567);
    uint64_t seed, off;
    sq_cuda_rng_state(ctx, &seed, &off);
    dropout_mask_ref(seed, off, n, p, mref);
    double scale = 1.0 / (1.0 - p);
    if (dt == SQ_F32) scale = (double)(float)scale;
    int64_t kept = 0;
    for (int64_t i = 0; i < n; i++) {
        y[i] = mref[i] ? x[i] * scale : 0;
        dx[i] = mref[i] ? g[i] * scale : 0;
        kept += mref[i];
    }
    void *dX = dev_from(t, dt, x, n), *dG = dev_from(t, dt, g, n), *dY = dev_poison(t, dt, n), *dDX = dev_poison(t, dt, n);
    uint8_t *dM = dalloc(t, (size_t)n);
    CALL(t, sq_cuda_dropout(ctx, dt, dY, dM, dX, n, p));
    CALL(t, sq_cuda_copy_d2h(ctx, mgot, dM, (size_t)n));
    report(t, memcmp(mgot, mref, (size_t)n) == 0, "dropout mask = CPU Philox reference, bit for bit (kept %.4f, p %.1f)",
           (double)kept / (double)n, p);
    report(t, fabs((double)kept / (double)n - (1 - p)) < 0.02, "dropout keeps about 1-p");
    check(t, "dropout y", dt, y, dY, n, tol_of(dt));
    CALL(t, sq_cuda_dropout_bwd(ctx, dt, dDX, dG, dM, n, p));
    check(t, "dropout_bwd", dt, dx, dDX, n, tol_of(dt));
    /* the next call draws a different mask; reseeding replays the first */
    CALL(t, sq_cuda_dropout(ctx, dt, dY, dM, dX, n, p));
    CALL(t, sq_cuda_copy_d2h(ctx, mgot2, dM, (size_t)n));
    report(t, memcmp(mgot2, mref, (size_t)n) != 0, "the next dropout call draws a new mask");
    sq_cuda_rng_seed(ctx, 1234567);
    CALL(t, sq_cuda_dropout(ctx, dt, dY, dM, dX, n, p));
    CALL(t, sq_cuda_copy_d2h(ctx, mgot2, dM, (size_t)n));
    report(t, memcmp(mgot2, mref, (size_t)n) == 0, "same seed, same mask");
    /* p = 0 keeps everything, p = 1 drops everything */
    CALL(t, sq_cuda_dropout(ctx, dt, dY, dM, dX, n, 0.0));
    check(t, "dropout p=0 is the identity", dt, x, dY, n, 0);
    for (int64_t i = 0; i < n; i++) y[i] = 0;
    CALL(t, sq_cuda_dropout(ctx, dt, dY, dM, dX, n, 1.0));
    check(t, "dropout p=1 gives zeros", dt, y, dY, n, 0);
    dfree(t, dX), dfree(t, dG), dfree(t, dY), dfree(t, dDX), dfree(t, dM);
    free(x), free(g), free(y), free(dx), free(mref), free(mgot), free(mgot2);
}

/* ---- conv helpers, pooling ------------------------------------------------------------------------------------ */

static void test_im2col(tc *t, sq_dtype dt)
{
    sq_ctx *ctx = &t->ctx;
    const int64_t N = 2, C = 3, H = 11, W = 13;
    const int k = 3, s = 2, pd = 1;
    const int64_t Ho = (H + 2 * pd - k) / s + 1, Wo = (W + 2 * pd - k) / s + 1;
    int64_t nx = N * C * H * W, nc = N * C * k * k * Ho * Wo, per_c = C * k * k * Ho * Wo, per_x = C * H * W;
    double *x = rndn(t, nx), *cols = rndn(t, nc), *d0 = rndn(t, nx);
    round_dt(dt, x, nx), round_dt(dt, cols, nc), round_dt(dt, d0, nx);
    /* the engine's CPU kernels are the reference, one image at a time */
    size_t es = sq_dtype_size(dt);
    void *hx = xmalloc((size_t)nx * es), *hc = xmalloc((size_t)nc * es), *hd = xmalloc((size_t)nx * es);
    for (int64_t i = 0; i < nx; i++) {
        if (dt == SQ_F32) ((float *)hx)[i] = (float)x[i], ((float *)hd)[i] = (float)d0[i];
        else ((double *)hx)[i] = x[i], ((double *)hd)[i] = d0[i];
    }
    for (int64_t i = 0; i < nc; i++) {
        if (dt == SQ_F32) ((float *)hc)[i] = (float)cols[i];
        else ((double *)hc)[i] = cols[i];
    }
    void *rc = xmalloc((size_t)nc * es);
    for (int64_t b = 0; b < N; b++) {
        sq_cpu_im2col(dt, (char *)rc + (size_t)(b * per_c) * es, (char *)hx + (size_t)(b * per_x) * es, C, H, W, k, k, s, pd, Ho, Wo);
        sq_cpu_col2im(dt, (char *)hd + (size_t)(b * per_x) * es, (char *)hc + (size_t)(b * per_c) * es, C, H, W, k, k, s, pd, Ho, Wo);
    }
    double *ref_c = xmalloc((size_t)nc * 8), *ref_d = xmalloc((size_t)nx * 8);
    for (int64_t i = 0; i < nc; i++) ref_c[i] = dt == SQ_F32 ? ((float *)rc)[i] : ((double *)rc)[i];
    for (int64_t i = 0; i < nx; i++) ref_d[i] = dt == SQ_F32 ? ((float *)hd)[i] : ((double *)hd)[i];
    void *dX = dev_from(t, dt, x, nx), *dC = dev_poison(t, dt, nc), *dCols = dev_from(t, dt, cols, nc), *dD = dev_from(t, dt, d0, nx);
    CALL(t, sq_cuda_im2col(ctx, dt, dC, dX, N, C, H, W, k, k, s, pd, Ho, Wo));
    check(t, "im2col 2x3x11x13 k3 s2 p1 vs sq_cpu", dt, ref_c, dC, nc, 0);
    CALL(t, sq_cuda_col2im(ctx, dt, dD, dCols, N, C, H, W, k, k, s, pd, Ho, Wo));
    check(t, "col2im (accumulating) vs sq_cpu", dt, ref_d, dD, nx, tol_of(dt));
    dfree(t, dX), dfree(t, dC), dfree(t, dCols), dfree(t, dD);
    free(x), free(cols), free(d0), free(hx), free(hc), free(hd), free(rc), free(ref_c), free(ref_d);
}

static void pool_case(tc *t, sq_dtype dt, int k, int s, int pd)
{
    sq_ctx *ctx = &t->ctx;
    const int64_t N = 2, C = 3, H = 11, W = 13;
    const int64_t Ho = (H + 2 * pd - k) / s + 1, Wo = (W + 2 * pd - k) / s + 1;
    int64_t nx = N * C * H * W, ny = N * C * Ho * Wo;
    double *x = rndn(t, nx), *g = rndn(t, ny);
    round_dt(dt, x, nx), round_dt(dt, g, ny);
    double *ymax = xmalloc((size_t)ny * 8), *yavg = xmalloc((size_t)ny * 8);
    double *dmax = xmalloc((size_t)nx * 8), *davg = xmalloc((size_t)nx * 8);
    int64_t *am = xmalloc((size_t)ny * 8);
    for (int64_t i = 0; i < nx; i++) dmax[i] = davg[i] = 0;
    for (int64_t p = 0; p < N * C; p++)
        for (int64_t oy = 0; oy < Ho; oy++)
            for (int64_t ox = 0; ox < Wo; ox++) {
                int64_t o = (p * Ho + oy) * Wo + ox, bi = -1;
                double best = -INFINITY, acc = 0;
                for (int i = 0; i < k; i++)
                    for (int j = 0; j < k; j++) {
                        int64_t yy = oy * s - pd + i, xx = ox * s - pd + j;
                        if (yy < 0 || yy >= H || xx < 0 || xx >= W) continue;
                        double v = x[(p * H + yy) * W + xx];
                        acc += v;
                        if (bi < 0 || v > best) best = v, bi = yy * W + xx;
                    }
                ymax[o] = best;
                am[o] = bi;
                yavg[o] = acc / (double)(k * k);
                if (bi >= 0) dmax[p * H * W + bi] += g[o];
                for (int i = 0; i < k; i++)
                    for (int j = 0; j < k; j++) {
                        int64_t yy = oy * s - pd + i, xx = ox * s - pd + j;
                        if (yy >= 0 && yy < H && xx >= 0 && xx < W) davg[(p * H + yy) * W + xx] += g[o] / (double)(k * k);
                    }
            }
    void *dX = dev_from(t, dt, x, nx), *dG = dev_from(t, dt, g, ny), *dY = dev_poison(t, dt, ny), *dDX = dev_poison(t, dt, nx);
    int64_t *dAm = dev_poison(t, SQ_I64, ny);
    char nm[80];
    CALL(t, sq_cuda_max_pool2d(ctx, dt, dY, dAm, dX, N, C, H, W, k, s, pd, Ho, Wo));
    snprintf(nm, sizeof nm, "max_pool2d 2x3x11x13 k%d s%d p%d", k, s, pd);
    check(t, nm, dt, ymax, dY, ny, 0);
    check_i64(t, "max_pool2d argmax", am, dAm, ny);
    CALL(t, sq_cuda_max_pool2d_bwd(ctx, dt, dDX, dG, dAm, N, C, H, W, k, s, pd, Ho, Wo));
    snprintf(nm, sizeof nm, "max_pool2d_bwd k%d s%d p%d", k, s, pd);
    check(t, nm, dt, dmax, dDX, nx, tol_of(dt));
    CALL(t, sq_cuda_fill(ctx, dt, dY, ny, NAN));
    CALL(t, sq_cuda_fill(ctx, dt, dDX, nx, NAN));
    CALL(t, sq_cuda_avg_pool2d(ctx, dt, dY, dX, N, C, H, W, k, s, pd, Ho, Wo));
    snprintf(nm, sizeof nm, "avg_pool2d k%d s%d p%d", k, s, pd);
    check(t, nm, dt, yavg, dY, ny, tol_of(dt));
    CALL(t, sq_cuda_avg_pool2d_bwd(ctx, dt, dDX, dG, N, C, H, W, k, s, pd, Ho, Wo));
    snprintf(nm, sizeof nm, "avg_pool2d_bwd k%d s%d p%d", k, s, pd);
    check(t, nm, dt, davg, dDX, nx, tol_of(dt));
    dfree(t, dX), dfree(t, dG), dfree(t, dY), dfree(t, dDX), dfree(t, dAm);
    free(x), free(g), free(ymax), free(yavg), free(dmax), free(davg), free(am);
}

static void test_pool(tc *t, sq_dtype dt)
{
    pool_case(t, dt, 3, 2, 1);
    pool_case(t, dt, 2, 2, 0);
    pool_case(t, dt, 3, 1, 1);
}

/* ---- joining and indexing -------------------------------------------------------------------------------------- */

static void test_concat(tc *t, sq_dtype dt)
{
    sq_ctx *ctx = &t->ctx;
    const int64_t outer = 3, inner = 7, lens[3] = {2, 5, 3}, L = 10;
    double *src[3], *ref = xmalloc((size_t)(outer * L * inner) * 8);
    void *dsrc[3], *dgrad[3];
    int64_t off = 0;
    for (int i = 0; i < 3; i++) {
        src[i] = rndn(t, outer * lens[i] * inner);
        round_dt(dt, src[i], outer * lens[i] * inner);
        dsrc[i] = dev_from(t, dt, src[i], outer * lens[i] * inner);
        dgrad[i] = dev_poison(t, dt, outer * lens[i] * inner);
        for (int64_t o = 0; o < outer; o++)
            for (int64_t l = 0; l < lens[i]; l++)
                for (int64_t j = 0; j < inner; j++)
                    ref[(o * L + off + l) * inner + j] = src[i][(o * lens[i] + l) * inner + j];
        off += lens[i];
    }
    void *dO = dev_poison(t, dt, outer * L * inner);
    CALL(t, sq_cuda_concat(ctx, dt, dO, 3, (const void *const *)dsrc, lens, outer, inner));
    check(t, "concat 3 x (3,{2,5,3},7) dim 1", dt, ref, dO, outer * L * inner, 0);
    CALL(t, sq_cuda_concat_bwd(ctx, dt, dgrad, dO, 3, lens, outer, inner));
    for (int i = 0; i < 3; i++) check(t, "concat_bwd slice", dt, src[i], dgrad[i], outer * lens[i] * inner, 0);
    for (int i = 0; i < 3; i++) dfree(t, dsrc[i]), dfree(t, dgrad[i]), free(src[i]);
    dfree(t, dO);
    free(ref);
}

static void test_index_select(tc *t, sq_dtype dt)
{
    sq_ctx *ctx = &t->ctx;
    const int64_t outer = 3, len = 11, inner = 7, m = 13;
    int64_t nx = outer * len * inner, no = outer * m * inner, idx[13];
    double *x = rndn(t, nx), *g = rndn(t, no), *y = xmalloc((size_t)no * 8), *dx = xmalloc((size_t)nx * 8);
    round_dt(dt, x, nx), round_dt(dt, g, no);
    for (int64_t j = 0; j < m; j++) idx[j] = (int64_t)sq_rng_below(&t->rng, (uint64_t)len);
    idx[4] = idx[9]; /* a repeat */
    for (int64_t i = 0; i < nx; i++) dx[i] = 0;
    for (int64_t o = 0; o < outer; o++)
        for (int64_t j = 0; j < m; j++)
            for (int64_t i = 0; i < inner; i++) {
                y[(o * m + j) * inner + i] = x[(o * len + idx[j]) * inner + i];
                dx[(o * len + idx[j]) * inner + i] += g[(o * m + j) * inner + i];
            }
    void *dX = dev_from(t, dt, x, nx), *dG = dev_from(t, dt, g, no), *dY = dev_poison(t, dt, no), *dDX = dev_poison(t, dt, nx);
    int64_t *dI = dev_i64(t, idx, m);
    CALL(t, sq_cuda_index_select(ctx, dt, dY, dX, dI, outer, len, inner, m));
    check(t, "index_select (3,11,7) dim 1, 13 idx", dt, y, dY, no, 0);
    CALL(t, sq_cuda_fill(ctx, dt, dDX, nx, 0));
    CALL(t, sq_cuda_index_select_bwd(ctx, dt, dDX, dG, dI, outer, len, inner, m));
    check(t, "index_select_bwd", dt, dx, dDX, nx, tol_of(dt));
    dfree(t, dX), dfree(t, dG), dfree(t, dY), dfree(t, dDX), dfree(t, dI);
    free(x), free(g), free(y), free(dx);
}

static void test_gather(tc *t, sq_dtype dt)
{
    sq_ctx *ctx = &t->ctx;
    /* x (5,7,3) stored transposed: a (3,7,5) buffer, strides (1,5,35) */
    const int64_t X0 = 5, X1 = 7, X2 = 3, nx = 105;
    int64_t xs[3] = {1, 5, 35}, shape[3] = {5, 4, 3}, no = 60, dxs[3] = {21, 3, 1};
    double *x = rndn(t, nx), *g = rndn(t, no), *y = xmalloc((size_t)no * 8), *dx = xmalloc((size_t)nx * 8);
    round_dt(dt, x, nx), round_dt(dt, g, no);
    int64_t idx[60];
    for (int64_t i = 0; i < nx; i++) dx[i] = 0;
    for (int64_t a = 0; a < 5; a++)
        for (int64_t b = 0; b < 4; b++)
            for (int64_t c = 0; c < 3; c++) {
                int64_t p = (a * 4 + b) * 3 + c, v = (int64_t)sq_rng_below(&t->rng, (uint64_t)X1);
                idx[p] = v;
                y[p] = x[a * xs[0] + v * xs[1] + c * xs[2]];
                dx[a * dxs[0] + v * dxs[1] + c * dxs[2]] += g[p];
            }
    (void)X0, (void)X2;
    void *dX = dev_from(t, dt, x, nx), *dG = dev_from(t, dt, g, no), *dY = dev_poison(t, dt, no), *dDX = dev_poison(t, dt, nx);
    int64_t *dI = dev_i64(t, idx, no);
    CALL(t, sq_cuda_gather(ctx, dt, dY, dX, xs, X1, dI, 3, shape, 1));
    check(t, "gather dim 1 of a transposed 5x7x3", dt, y, dY, no, 0);
    CALL(t, sq_cuda_fill(ctx, dt, dDX, nx, 0));
    CALL(t, sq_cuda_gather_bwd(ctx, dt, dDX, dxs, X1, dG, dI, 3, shape, 1));
    check(t, "gather_bwd", dt, dx, dDX, nx, tol_of(dt));
    dfree(t, dX), dfree(t, dG), dfree(t, dY), dfree(t, dDX), dfree(t, dI);
    free(x), free(g), free(y), free(dx);
}

/* ---- optimizers ------------------------------------------------------------------------------------------------- */

static void test_optim(tc *t, sq_dtype dt)
{
    sq_ctx *ctx = &t->ctx;
    const int64_t n = 1031;
    /* SGD: plain, momentum with dampening, Nesterov; two steps each */
    struct { double mu, damp, wd; int nest; const char *name; } cfg[3] = {
        {0, 0, 0.01, 0, "sgd plain wd"}, {0.9, 0.1, 0.01, 0, "sgd momentum damp"}, {0.9, 0, 0.001, 1, "sgd nesterov"}};
    for (int c = 0; c < 3; c++) {
        double *p = rndn(t, n), *buf = xmalloc((size_t)n * 8);
        round_dt(dt, p, n);
        for (int64_t i = 0; i < n; i++) buf[i] = 0;
        void *dP = dev_from(t, dt, p, n), *dB = cfg[c].mu != 0 ? dev_from(t, dt, buf, n) : NULL;
        for (int step = 0; step < 2; step++) {
            double *g = rndn(t, n);
            round_dt(dt, g, n);
            void *dG = dev_from(t, dt, g, n);
            int first = step == 0;
            double lr = 0.05, bm = first ? 0 : cfg[c].mu, bk = first ? 1 : 1 - cfg[c].damp;
            for (int64_t i = 0; i < n; i++) {
                double d = g[i] + cfg[c].wd * p[i];
                if (cfg[c].mu == 0) {
                    p[i] -= lr * d;
                    continue;
                }
                double b = bm * buf[i] + bk * d;
                buf[i] = b;
                p[i] -= lr * (cfg[c].nest ? d + cfg[c].mu * b : b);
            }
            CALL(t, sq_cuda_sgd_step(ctx, dt, dP, dB, dG, n, lr, cfg[c].mu, cfg[c].damp, cfg[c].wd, cfg[c].nest, first));
            dfree(t, dG);
            free(g);
        }
        check(t, cfg[c].name, dt, p, dP, n, tol_of(dt));
        if (dB) check(t, "sgd momentum buffer", dt, buf, dB, n, tol_of(dt));
        dfree(t, dP), dfree(t, dB);
        free(p), free(buf);
    }
    /* AdamW, three steps */
    double lr = 1e-2, b1 = 0.9, b2 = 0.999, eps = 1e-8, wd = 0.01;
    double *p = rndn(t, n), *m = xmalloc((size_t)n * 8), *v = xmalloc((size_t)n * 8);
    round_dt(dt, p, n);
    for (int64_t i = 0; i < n; i++) m[i] = v[i] = 0;
    void *dP = dev_from(t, dt, p, n), *dM = dev_from(t, dt, m, n), *dV = dev_from(t, dt, v, n);
    for (int64_t step = 1; step <= 3; step++) {
        double *g = rndn(t, n);
        round_dt(dt, g, n);
        void *dG = dev_from(t, dt, g, n);
        double dec = 1 - lr * wd, st = lr / (1 - pow(b1, (double)step)), r2 = 1 / sqrt(1 - pow(b2, (double)step));
        for (int64_t i = 0; i < n; i++) {
            m[i] = m[i] + (1 - b1) * (g[i] - m[i]);
            v[i] = b2 * v[i] + (1 - b2) * g[i] * g[i];
            p[i] = p[i] * dec - st * m[i] / (sqrt(v[i]) * r2 + eps);
        }
        CALL(t, sq_cuda_adamw_step(ctx, dt, dP, dM, dV, dG, n, lr, b1, b2, eps, wd, step));
        dfree(t, dG);
        free(g);
    }
    check(t, "adamw 3 steps p", dt, p, dP, n, tol_of(dt));
    check(t, "adamw m", dt, m, dM, n, tol_of(dt));
    check(t, "adamw v", dt, v, dV, n, tol_of(dt));
    dfree(t, dP), dfree(t, dM), dfree(t, dV);
    free(p), free(m), free(v);
}

/* ---- argument errors ------------------------------------------------------------------------------------------------ */

static void test_errors(tc *t)
{
    sq_ctx *ctx = &t->ctx;
    sq_status st = sq_cuda_unary(ctx, SQ_UN_EXP, SQ_I32, NULL, NULL, 5);
    report(t, st == SQ_ERR_DTYPE && strstr(ctx->err, "unary"), "int32 unary -> %s: %s", sq_status_name(st), ctx->err);
    st = sq_cuda_gemm(ctx, SQ_F32, 0, 0, 4, 4, 4, 1, NULL, 2, NULL, 4, 0, NULL, 4);
    report(t, st == SQ_ERR_ARG && strstr(ctx->err, "lda"), "gemm with lda < K -> %s: %s", sq_status_name(st), ctx->err);
    st = sq_cuda_reduce_all(ctx, SQ_CUDA_RED_MAX, SQ_F32, NULL, NULL, NULL, 0);
    report(t, st == SQ_ERR_ARG, "max of nothing -> %s: %s", sq_status_name(st), ctx->err);
    st = sq_cuda_dropout(ctx, SQ_F32, NULL, NULL, NULL, 4, 1.5);
    report(t, st == SQ_ERR_ARG, "dropout p=1.5 -> %s: %s", sq_status_name(st), ctx->err);
    report(t, sq_cuda_sync(ctx) == SQ_OK, "no launch happened for rejected arguments");
}

/* ---- main ---------------------------------------------------------------------------------------------------------------- */

int main(void)
{
    tc T;
    memset(&T, 0, sizeof T);
    tc *t = &T;
    sq_ctx_init(&t->ctx, 20261122);
    sq_rng_seed(&t->rng, 42);

    /* the first CUDA allocation creates the backend (lazily, on ctx.cuda_device);
     * without a GPU it is refused with a message, never a crash */
    void *p = NULL;
    sq_status st = sq_device_alloc(&t->ctx, SQ_CUDA, 64, &p);
    if (st == SQ_ERR_DEVICE && !t->ctx.cuda && !p) {
        printf("SKIP: no CUDA device (%s)\n", t->ctx.err);
        return 77;
    }
    if (st != SQ_OK || !t->ctx.cuda || !p) {
        printf("FAIL lazy CUDA init through sq_device_alloc: %s: %s\n", sq_status_name(st), t->ctx.err);
        return 1;
    }
    sq_device_free(&t->ctx, SQ_CUDA, p);
    st = sq_cuda_init(&t->ctx, 0);
    if (st != SQ_ERR_STATE) {
        printf("FAIL sq_cuda_init on an initialised context returned %s\n", sq_status_name(st));
        return 1;
    }
    char dev[256];
    printf("device: %s\n", sq_cuda_device_str(&t->ctx, dev, sizeof dev));
    /* every launch waits, so an execution error is blamed on its own kernel */
    sq_cuda_set_sync_launches(&t->ctx, 1);

    test_memory(t);
    test_copy_int(t);
    test_errors(t);
    for (int d = 0; d < 2; d++) {
        sq_dtype dt = d == 0 ? SQ_F32 : SQ_F64;
        test_gemm(t, dt, 0);
        if (dt == SQ_F32) test_gemm(t, dt, 1);
        test_copy(t, dt);
        test_binary(t, dt);
        test_scalar_maps(t, dt);
        test_unary(t, dt);
        test_reduce(t, dt);
        test_softmax(t, dt);
        test_cross_entropy(t, dt);
        test_layer_norm(t, dt);
        test_affine(t, dt);
        test_embedding(t, dt);
        test_dropout(t, dt);
        test_im2col(t, dt);
        test_pool(t, dt);
        test_concat(t, dt);
        test_index_select(t, dt);
        test_gather(t, dt);
        test_optim(t, dt);
    }

    /* everything the test allocated is back: nothing live, nothing charged */
    sq_cuda_mem_stats ms;
    sq_cuda_mem_get(&t->ctx, &ms);
    report(t, t->live == 0 && ms.live_blocks == 0 && ms.in_use == 0 && ms.requested == 0 &&
                  t->ctx.mem.total_cur[SQ_CUDA] == 0,
           "allocator accounting back to 0 (reserved %.1f MiB in cache, %lld mallocs, %lld hits)",
           (double)ms.reserved / 1048576.0, (long long)ms.cuda_mallocs, (long long)ms.cache_hits);
    sq_cuda_free(&t->ctx);
    report(t, t->ctx.cuda == NULL, "sq_cuda_free clears ctx->cuda");
    printf("%d passed, %d failed\n", t->passed, t->failed);
    return t->failed ? 1 : 0;
}
