/* sq_cuda_svd.cu — the SVD on the GPU through cuSOLVER (gesvd with a gesvdj
 * fallback; see sq_cuda_linalg.h).  The one place the backend talks to
 * cuSOLVER.
 *
 * Layouts.  cuSOLVER is column-major and its gesvd needs rows >= columns.
 * Row-major W (M,K) read column-major is Wᵀ (K x M).  We factor a
 * column-major A (m x n, m >= n, k = n) with A = L diag(S) Rᵀ:
 *   wide, K >= M:  A = Wᵀ (m = K, n = M; a plain copy of W's buffer), so
 *                  W = R S Lᵀ: U = R, Vt = Lᵀ;
 *   tall, K <  M:  A = W  (m = M, n = K; W transposed into the workspace),
 *                  so U = L, Vt = Rᵀ.
 * gesvdj returns R as V (n x k, ld n), gesvd as VT (k x n, ld k).  Each
 * factor is then one strided copy into the row-major output (strides in
 * out_factor(); half of them are plain copies).  The factors go through
 * workspace rather than straight into U and Vt so that one code path
 * serves both shapes and both drivers; the copies cost milliseconds next to
 * an SVD's seconds.
 *
 * The cuSOLVER handle is made per call: an SVD runs once per layer at
 * decomposition time, and the handle's creation (milliseconds) is small
 * next to the factorization; it is bound to the context's stream, so the
 * workspace from the context's cache is stream-ordered like every other
 * user's. */
#include "sq_cuda_internal.h"
#include "sq_cuda_linalg.h"

#include <cusolverDn.h>
#include <limits.h>
#include <math.h>
#include <string.h>

#define THREADS 256

const char *sq_cuda_svd_driver_name(sq_cuda_svd_driver d)
{
    switch (d) {
    case SQ_CUDA_SVD_AUTO: return "auto";
    case SQ_CUDA_SVD_GESVDJ: return "gesvdj";
    case SQ_CUDA_SVD_GESVD: return "gesvd";
    }
    return "?";
}

static const char *cus_name(cusolverStatus_t s)
{
    switch (s) {
    case CUSOLVER_STATUS_SUCCESS: return "CUSOLVER_STATUS_SUCCESS";
    case CUSOLVER_STATUS_NOT_INITIALIZED: return "CUSOLVER_STATUS_NOT_INITIALIZED";
    case CUSOLVER_STATUS_ALLOC_FAILED: return "CUSOLVER_STATUS_ALLOC_FAILED";
    case CUSOLVER_STATUS_INVALID_VALUE: return "CUSOLVER_STATUS_INVALID_VALUE";
    case CUSOLVER_STATUS_ARCH_MISMATCH: return "CUSOLVER_STATUS_ARCH_MISMATCH";
    case CUSOLVER_STATUS_EXECUTION_FAILED: return "CUSOLVER_STATUS_EXECUTION_FAILED";
    case CUSOLVER_STATUS_INTERNAL_ERROR: return "CUSOLVER_STATUS_INTERNAL_ERROR";
    case CUSOLVER_STATUS_NOT_SUPPORTED: return "CUSOLVER_STATUS_NOT_SUPPORTED";
    default: return "cuSOLVER error";
    }
}

#define CUS(call, what)                                                                      \
    do {                                                                                     \
        cusolverStatus_t s_ = (call);                                                        \
        if (s_ != CUSOLVER_STATUS_SUCCESS) {                                                 \
            (void)cudaGetLastError();                                                        \
            st = sq_fail(ctx, SQ_ERR_DEVICE, "svd: cuSOLVER %s on %lldx%lld %s failed: %s (%d)", \
                         what, (long long)M, (long long)K, sq_dtype_name(dt), cus_name(s_),  \
                         (int)s_);                                                           \
            goto done;                                                                       \
        }                                                                                    \
    } while (0)

#define CHECK(expr)                                                                          \
    do {                                                                                     \
        st = (expr);                                                                         \
        if (st != SQ_OK) goto done;                                                          \
    } while (0)

/* *first = min(*first, index of every non-finite p[i]); *first starts at ~0. */
template <typename T>
__global__ void k_first_nonfinite(const T *p, int64_t n, unsigned long long *first)
{
    SQ_GRID_LOOP(i, n) {
        if (!isfinite(p[i])) atomicMin(first, (unsigned long long)i);
    }
}

/* Queues the scan of p (n elements) into the flag word. */
static sq_status scan_nonfinite(sq_ctx *ctx, sq_dtype dt, const void *p, int64_t n,
                                unsigned long long *flag)
{
    if (n == 0) return SQ_OK;
    cudaStream_t s = ctx->cuda->stream;
    unsigned gr = sq_cuda_grid(n, THREADS);
    if (dt == SQ_F32) k_first_nonfinite<float><<<gr, THREADS, 0, s>>>((const float *)p, n, flag);
    else k_first_nonfinite<double><<<gr, THREADS, 0, s>>>((const double *)p, n, flag);
    return sq_cuda_launched(ctx, "svd_nonfinite", "n %lld, %s", (long long)n, sq_dtype_name(dt));
}

static sq_status flag_reset(sq_ctx *ctx, unsigned long long *flag)
{
    cudaError_t e = cudaMemsetAsync(flag, 0xff, sizeof *flag, ctx->cuda->stream);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        return sq_fail(ctx, SQ_ERR_DEVICE, "svd: cuda memset failed: %s", cudaGetErrorString(e));
    }
    return SQ_OK;
}

/* Row-major (rows, cols) output from a column-major factor: the source
 * strides of out(a, b). */
static void col_major_src(int transposed, int64_t ld, int64_t st[2])
{
    /* not transposed: out(a,b) = F(a,b) at a + b*ld; transposed: out(a,b) = F(b,a) at b + a*ld */
    st[0] = transposed ? ld : 1;
    st[1] = transposed ? 1 : ld;
}

/* One driver on A (copied afresh from W: both drivers destroy it).  Writes
 * S, L (m x k, ld m) and R (gesvdj: V, n x k, ld n; gesvd: VT, k x n, ld k);
 * *dev_info gets cuSOLVER's info (read back by the caller). */
typedef struct {
    sq_dtype dt;
    int m, n, k;
    int tall;                /* K < M: A is W transposed */
    int64_t M, K;
    const void *W;
    void *A, *S, *L, *R, *rwork;
    int *dev_info;
} svd_job;

static sq_status load_a(sq_ctx *ctx, const svd_job *j)
{
    size_t es = sq_dtype_size(j->dt);
    if (!j->tall) return sq_cuda_copy_d2d(ctx, j->A, j->W, (size_t)j->M * (size_t)j->K * es);
    /* A (K x M row-major) = column-major W (M x K): out(c, r) = W[r][c] */
    int64_t shape[2] = {j->K, j->M}, src_stride[2] = {1, j->K};
    return sq_cuda_copy_strided(ctx, j->dt, j->A, NULL, j->W, src_stride, 2, shape);
}

static sq_status run_gesvdj(sq_ctx *ctx, cusolverDnHandle_t h, const svd_job *j, int *sweeps,
                            double *residual)
{
    sq_status st = SQ_OK;
    sq_dtype dt = j->dt;
    int64_t M = j->M, K = j->K;
    gesvdjInfo_t params = NULL;
    void *work = NULL;
    size_t work_bytes = 0;
    int lwork = 0;
    CHECK(load_a(ctx, j));
    CUS(cusolverDnCreateGesvdjInfo(&params), "gesvdj params");
    /* tolerance: machine epsilon of dt (cuSOLVER's default); 100 sweeps */
    CUS(cusolverDnXgesvdjSetMaxSweeps(params, 100), "gesvdj params");
    CUS(cusolverDnXgesvdjSetSortEig(params, 1), "gesvdj params");
    if (dt == SQ_F32)
        CUS(cusolverDnSgesvdj_bufferSize(h, CUSOLVER_EIG_MODE_VECTOR, 1, j->m, j->n, (const float *)j->A,
                                         j->m, (const float *)j->S, (const float *)j->L, j->m,
                                         (const float *)j->R, j->n, &lwork, params),
            "gesvdj_bufferSize");
    else
        CUS(cusolverDnDgesvdj_bufferSize(h, CUSOLVER_EIG_MODE_VECTOR, 1, j->m, j->n, (const double *)j->A,
                                         j->m, (const double *)j->S, (const double *)j->L, j->m,
                                         (const double *)j->R, j->n, &lwork, params),
            "gesvdj_bufferSize");
    work_bytes = (size_t)(lwork > 0 ? lwork : 1) * sq_dtype_size(dt);
    CHECK(sq_cuda_ws_alloc(ctx, work_bytes, &work));
    if (dt == SQ_F32)
        CUS(cusolverDnSgesvdj(h, CUSOLVER_EIG_MODE_VECTOR, 1, j->m, j->n, (float *)j->A, j->m,
                              (float *)j->S, (float *)j->L, j->m, (float *)j->R, j->n,
                              (float *)work, lwork, j->dev_info, params),
            "gesvdj");
    else
        CUS(cusolverDnDgesvdj(h, CUSOLVER_EIG_MODE_VECTOR, 1, j->m, j->n, (double *)j->A, j->m,
                              (double *)j->S, (double *)j->L, j->m, (double *)j->R, j->n,
                              (double *)work, lwork, j->dev_info, params),
            "gesvdj");
    /* the getters read what the finished run left in params */
    CHECK(sq_cuda_sync(ctx));
    CUS(cusolverDnXgesvdjGetSweeps(h, params, sweeps), "gesvdj sweeps");
    CUS(cusolverDnXgesvdjGetResidual(h, params, residual), "gesvdj residual");
done:
    sq_cuda_ws_free(ctx, work, work_bytes);
    if (params) cusolverDnDestroyGesvdjInfo(params);
    return st;
}

static sq_status run_gesvd(sq_ctx *ctx, cusolverDnHandle_t h, const svd_job *j)
{
    sq_status st = SQ_OK;
    sq_dtype dt = j->dt;
    int64_t M = j->M, K = j->K;
    void *work = NULL;
    size_t work_bytes = 0;
    int lwork = 0;
    CHECK(load_a(ctx, j));
    if (dt == SQ_F32) CUS(cusolverDnSgesvd_bufferSize(h, j->m, j->n, &lwork), "gesvd_bufferSize");
    else CUS(cusolverDnDgesvd_bufferSize(h, j->m, j->n, &lwork), "gesvd_bufferSize");
    work_bytes = (size_t)(lwork > 0 ? lwork : 1) * sq_dtype_size(dt);
    CHECK(sq_cuda_ws_alloc(ctx, work_bytes, &work));
    if (dt == SQ_F32)
        CUS(cusolverDnSgesvd(h, 'S', 'S', j->m, j->n, (float *)j->A, j->m, (float *)j->S,
                             (float *)j->L, j->m, (float *)j->R, j->k, (float *)work, lwork,
                             (float *)j->rwork, j->dev_info),
            "gesvd");
    else
        CUS(cusolverDnDgesvd(h, 'S', 'S', j->m, j->n, (double *)j->A, j->m, (double *)j->S,
                             (double *)j->L, j->m, (double *)j->R, j->k, (double *)work, lwork,
                             (double *)j->rwork, j->dev_info),
            "gesvd");
done:
    sq_cuda_ws_free(ctx, work, work_bytes);
    return st;
}

sq_status sq_cuda_svd(sq_ctx *ctx, sq_dtype dt, int64_t M, int64_t K, const void *W, void *U,
                      void *S, void *Vt, sq_cuda_svd_driver driver, int fake_fail,
                      sq_cuda_svd_info *info)
{
    const char *fn = "svd";
    sq_cuda_svd_info inf;
    memset(&inf, 0, sizeof inf);
    inf.used = SQ_CUDA_SVD_GESVD;
    if (info) *info = inf;
    SQ_CUDA_ENTER(ctx, fn);
    SQ_TRY(sq_cuda_need_float(ctx, fn, dt));
    if (M < 1 || K < 1)
        return sq_fail(ctx, SQ_ERR_ARG, "svd: need a non-empty matrix, got %lldx%lld", (long long)M,
                       (long long)K);
    if (M > INT_MAX || K > INT_MAX || M * K > INT_MAX)
        return sq_fail(ctx, SQ_ERR_ARG, "svd: %lldx%lld is too large for cuSOLVER's 32-bit indices",
                       (long long)M, (long long)K);
    if (driver != SQ_CUDA_SVD_AUTO && driver != SQ_CUDA_SVD_GESVDJ && driver != SQ_CUDA_SVD_GESVD)
        return sq_fail(ctx, SQ_ERR_ARG, "svd: unknown cuda driver %d", (int)driver);
    if (!W || !U || !S || !Vt) return sq_fail(ctx, SQ_ERR_ARG, "svd: missing buffer pointer");

    sq_status st = SQ_OK;
    size_t es = sq_dtype_size(dt);
    int64_t k = M < K ? M : K;
    svd_job j;
    memset(&j, 0, sizeof j);
    j.dt = dt;
    j.M = M;
    j.K = K;
    j.W = W;
    j.S = S;
    j.tall = K < M;
    j.m = (int)(j.tall ? M : K);
    j.n = (int)(j.tall ? K : M);
    j.k = (int)k;
    size_t a_bytes = (size_t)(M * K) * es, l_bytes = (size_t)j.m * (size_t)k * es;
    size_t r_bytes = (size_t)j.n * (size_t)k * es, rw_bytes = (size_t)k * es;
    unsigned long long *flag = NULL, first = 0;
    cusolverDnHandle_t h = NULL;
    int hinfo = 0;
    int use_gesvdj = driver == SQ_CUDA_SVD_GESVDJ;

    /* a NaN or Inf in W: name the first; no driver sees it */
    CHECK(sq_cuda_ws_alloc(ctx, sizeof *flag, (void **)&flag));
    CHECK(flag_reset(ctx, flag));
    CHECK(scan_nonfinite(ctx, dt, W, M * K, flag));
    CHECK(sq_cuda_copy_d2h(ctx, &first, flag, sizeof first));
    if (first != ~0ULL) {
        double v = 0;
        if (dt == SQ_F32) {
            float f = 0;
            CHECK(sq_cuda_copy_d2h(ctx, &f, (const float *)W + first, sizeof f));
            v = f;
        } else {
            CHECK(sq_cuda_copy_d2h(ctx, &v, (const double *)W + first, sizeof v));
        }
        st = sq_fail(ctx, SQ_ERR_NUMERIC, "svd: matrix %lldx%lld has a non-finite entry (%s at [%lld,%lld], 0-based)",
                     (long long)M, (long long)K, isnan(v) ? "NaN" : (v > 0 ? "Inf" : "-Inf"),
                     (long long)(first / (unsigned long long)K), (long long)(first % (unsigned long long)K));
        goto done;
    }

    CHECK(sq_cuda_ws_alloc(ctx, a_bytes, &j.A));
    CHECK(sq_cuda_ws_alloc(ctx, l_bytes, &j.L));
    CHECK(sq_cuda_ws_alloc(ctx, r_bytes, &j.R));
    CHECK(sq_cuda_ws_alloc(ctx, rw_bytes, &j.rwork));
    CHECK(sq_cuda_ws_alloc(ctx, sizeof(int), (void **)&j.dev_info));
    CUS(cusolverDnCreate(&h), "handle creation");
    CUS(cusolverDnSetStream(h, ctx->cuda->stream), "set stream");

    /* AUTO: gesvd first (the accurate one in float32, see sq_cuda_linalg.h), gesvdj
     * when it does not converge */
    if (use_gesvdj == 0) {
        CHECK(run_gesvd(ctx, h, &j));
        CHECK(sq_cuda_copy_d2h(ctx, &hinfo, j.dev_info, sizeof hinfo));
        if (hinfo == 0 && (fake_fail & SQ_CUDA_SVD_FAKE_GESVD_FAIL)) hinfo = 1;
        inf.used = SQ_CUDA_SVD_GESVD;
        inf.gesvd_info = hinfo;
        if (hinfo < 0) {
            st = sq_fail(ctx, SQ_ERR_NUMERIC, "svd: gesvd rejected argument %d on %lldx%lld (cuSOLVER error)",
                         -hinfo, (long long)M, (long long)K);
            goto done;
        }
        if (hinfo > 0 && driver == SQ_CUDA_SVD_GESVD) {
            st = sq_fail(ctx, SQ_ERR_NUMERIC,
                         "svd: gesvd did not converge on %lldx%lld %s (%d superdiagonals left)",
                         (long long)M, (long long)K, sq_dtype_name(dt), hinfo);
            goto done;
        }
        use_gesvdj = hinfo > 0;
    }
    if (use_gesvdj) {
        int qr_failed = driver != SQ_CUDA_SVD_GESVDJ;
        CHECK(run_gesvdj(ctx, h, &j, &inf.gesvdj_sweeps, &inf.gesvdj_residual));
        CHECK(sq_cuda_copy_d2h(ctx, &hinfo, j.dev_info, sizeof hinfo));
        if (hinfo == 0 && (fake_fail & SQ_CUDA_SVD_FAKE_GESVDJ_FAIL)) hinfo = (int)k + 1;
        inf.used = SQ_CUDA_SVD_GESVDJ;
        inf.fell_back = qr_failed;
        inf.gesvdj_info = hinfo;
        if (hinfo < 0) {
            st = sq_fail(ctx, SQ_ERR_NUMERIC, "svd: gesvdj rejected argument %d on %lldx%lld (cuSOLVER error)",
                         -hinfo, (long long)M, (long long)K);
            goto done;
        }
        if (hinfo > 0) {
            st = sq_fail(ctx, SQ_ERR_NUMERIC,
                         "svd: %sgesvdj did not converge on %lldx%lld %s (info %d, %d sweeps, residual %.3g)",
                         qr_failed ? "gesvd and " : "", (long long)M, (long long)K, sq_dtype_name(dt),
                         hinfo, inf.gesvdj_sweeps, inf.gesvdj_residual);
            goto done;
        }
    }

    /* the factors into row-major U (M,k) and Vt (k,K) (see the top of the file) */
    {
        int r_is_v = inf.used == SQ_CUDA_SVD_GESVDJ; /* R = V (n x k, ld n), else VT (k x n, ld k) */
        int64_t sh_u[2] = {M, k}, sh_vt[2] = {k, K}, s_l[2], s_r[2];
        if (!j.tall) {
            /* U = R, Vt = Lᵀ */
            col_major_src(!r_is_v, r_is_v ? j.n : j.k, s_r);
            col_major_src(1, j.m, s_l);
            CHECK(sq_cuda_copy_strided(ctx, dt, U, NULL, j.R, s_r, 2, sh_u));
            CHECK(sq_cuda_copy_strided(ctx, dt, Vt, NULL, j.L, s_l, 2, sh_vt));
        } else {
            /* U = L, Vt = Rᵀ */
            col_major_src(0, j.m, s_l);
            col_major_src(r_is_v, r_is_v ? j.n : j.k, s_r);
            CHECK(sq_cuda_copy_strided(ctx, dt, U, NULL, j.L, s_l, 2, sh_u));
            CHECK(sq_cuda_copy_strided(ctx, dt, Vt, NULL, j.R, s_r, 2, sh_vt));
        }
    }
    /* converged on finite input: a non-finite factor would mean overflow; never pass it on */
    CHECK(flag_reset(ctx, flag));
    CHECK(scan_nonfinite(ctx, dt, S, k, flag));
    CHECK(scan_nonfinite(ctx, dt, U, M * k, flag));
    CHECK(scan_nonfinite(ctx, dt, Vt, k * K, flag));
    CHECK(sq_cuda_copy_d2h(ctx, &first, flag, sizeof first));
    if (first != ~0ULL) {
        st = sq_fail(ctx, SQ_ERR_NUMERIC, "svd: %s produced non-finite factors for %lldx%lld %s",
                     sq_cuda_svd_driver_name(inf.used), (long long)M, (long long)K, sq_dtype_name(dt));
        goto done;
    }
    if (info) *info = inf;
done:
    if (h) cusolverDnDestroy(h);
    sq_cuda_ws_free(ctx, j.dev_info, sizeof(int));
    sq_cuda_ws_free(ctx, j.rwork, rw_bytes);
    sq_cuda_ws_free(ctx, j.R, r_bytes);
    sq_cuda_ws_free(ctx, j.L, l_bytes);
    sq_cuda_ws_free(ctx, j.A, a_bytes);
    sq_cuda_ws_free(ctx, flag, sizeof *flag);
    if (st != SQ_OK && info) *info = inf;
    return st;
}
