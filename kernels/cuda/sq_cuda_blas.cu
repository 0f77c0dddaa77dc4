/* sq_cuda_blas.cu — the one place the CUDA backend talks to cuBLAS.
 *
 * cuBLAS is column-major.  A row-major (M,N) matrix with leading dimension
 * ld is the column-major (N,M) matrix with the same ld, so the row-major
 * product C = op(A) op(B) is computed as the column-major C^T = op(B)^T op(A)^T:
 * swap the operands and M with N, keep the transposes. */
#include "sq_cuda_internal.h"

#include <limits.h>
#include <string.h>

static sq_status check_gemm(sq_ctx *ctx, const char *k, sq_dtype dt, int transA, int transB,
                            int64_t batch, int64_t M, int64_t N, int64_t K, const void *A,
                            int64_t lda, const void *B, int64_t ldb, const void *C, int64_t ldc)
{
    SQ_CUDA_ENTER(ctx, k);
    SQ_TRY(sq_cuda_need_float(ctx, k, dt));
    if (batch < 0 || M < 0 || N < 0 || K < 0)
        return sq_fail(ctx, SQ_ERR_ARG, "%s: negative size (batch %lld, M %lld, N %lld, K %lld)", k,
                       (long long)batch, (long long)M, (long long)N, (long long)K);
    if (M > INT_MAX || N > INT_MAX || K > INT_MAX || lda > INT_MAX || ldb > INT_MAX ||
        ldc > INT_MAX || batch > INT_MAX)
        return sq_fail(ctx, SQ_ERR_ARG, "%s: sizes beyond 32-bit cuBLAS (M %lld, N %lld, K %lld)", k,
                       (long long)M, (long long)N, (long long)K);
    int64_t acols = transA ? M : K, bcols = transB ? K : N;
    if (lda < (acols > 1 ? acols : 1) || ldb < (bcols > 1 ? bcols : 1) || ldc < (N > 1 ? N : 1))
        return sq_fail(ctx, SQ_ERR_ARG,
                       "%s: leading dimensions too small (lda %lld for %lld cols, ldb %lld for %lld "
                       "cols, ldc %lld for %lld cols)",
                       k, (long long)lda, (long long)acols, (long long)ldb, (long long)bcols,
                       (long long)ldc, (long long)N);
    if (M > 0 && N > 0 && (!C || (K > 0 && (!A || !B))))
        return sq_fail(ctx, SQ_ERR_ARG, "%s: missing matrix pointer", k);
    return SQ_OK;
}

static void count(sq_ctx *ctx, int64_t batch, int64_t M, int64_t N, int64_t K)
{
    ctx->stats.gemm_calls += batch;
    ctx->stats.gemm_flops += 2.0 * (double)batch * (double)M * (double)N * (double)K;
}

static sq_status blas_fail(sq_ctx *ctx, const char *k, cublasStatus_t s, int64_t batch, int64_t M,
                           int64_t N, int64_t K)
{
    (void)cudaGetLastError();
    return sq_fail(ctx, SQ_ERR_DEVICE, "cuda %s (batch %lld, M %lld, N %lld, K %lld) failed: %s", k,
                   (long long)batch, (long long)M, (long long)N, (long long)K,
                   cublasGetStatusString(s));
}

sq_status sq_cuda_gemm(sq_ctx *ctx, sq_dtype dt, int transA, int transB, int64_t M, int64_t N,
                       int64_t K, double alpha, const void *A, int64_t lda, const void *B,
                       int64_t ldb, double beta, void *C, int64_t ldc)
{
    return sq_cuda_gemm_batched(ctx, dt, transA, transB, 1, M, N, K, alpha, A, lda, 0, B, ldb, 0,
                                beta, C, ldc, 0);
}

sq_status sq_cuda_gemm_batched(sq_ctx *ctx, sq_dtype dt, int transA, int transB, int64_t batch,
                               int64_t M, int64_t N, int64_t K, double alpha, const void *A,
                               int64_t lda, int64_t strideA, const void *B, int64_t ldb,
                               int64_t strideB, double beta, void *C, int64_t ldc,
                               int64_t strideC)
{
    const char *k = batch == 1 ? "gemm" : "gemm_batched";
    SQ_TRY(check_gemm(ctx, k, dt, transA, transB, batch, M, N, K, A, lda, B, ldb, C, ldc));
    count(ctx, batch, M, N, K);
    if (M == 0 || N == 0 || batch == 0) return SQ_OK;
    sq_cuda_ctx *cu = ctx->cuda;
    cublasOperation_t ta = transA ? CUBLAS_OP_T : CUBLAS_OP_N;
    cublasOperation_t tb = transB ? CUBLAS_OP_T : CUBLAS_OP_N;
    float af = (float)alpha, bf = (float)beta;
    const void *pa = dt == SQ_F32 ? (const void *)&af : (const void *)&alpha;
    const void *pb = dt == SQ_F32 ? (const void *)&bf : (const void *)&beta;
    cudaDataType_t ty = dt == SQ_F32 ? CUDA_R_32F : CUDA_R_64F;
    cublasComputeType_t ct = dt == SQ_F64   ? CUBLAS_COMPUTE_64F
                             : ctx->cuda_tf32 ? CUBLAS_COMPUTE_32F_FAST_TF32
                                            : CUBLAS_COMPUTE_32F;
    /* K == 0: cuBLAS still scales C by beta; give it valid pointers */
    const void *Ad = A ? A : C, *Bd = B ? B : C;
    cublasStatus_t s;
    if (batch == 1)
        s = cublasGemmEx(cu->cublas, tb, ta, (int)N, (int)M, (int)K, pa, Bd, ty, (int)ldb, Ad, ty,
                         (int)lda, pb, C, ty, (int)ldc, ct, CUBLAS_GEMM_DEFAULT);
    else
        s = cublasGemmStridedBatchedEx(cu->cublas, tb, ta, (int)N, (int)M, (int)K, pa, Bd, ty,
                                       (int)ldb, (long long)strideB, Ad, ty, (int)lda,
                                       (long long)strideA, pb, C, ty, (int)ldc, (long long)strideC,
                                       (int)batch, ct, CUBLAS_GEMM_DEFAULT);
    if (s != CUBLAS_STATUS_SUCCESS) return blas_fail(ctx, k, s, batch, M, N, K);
    return sq_cuda_launched(ctx, k, "batch %lld, M %lld, N %lld, K %lld, %s%s", (long long)batch,
                            (long long)M, (long long)N, (long long)K, sq_dtype_name(dt),
                            ct == CUBLAS_COMPUTE_32F_FAST_TF32 ? ", tf32" : "");
}

/* ---- linear with the bias in the epilogue (cuBLASLt) --------------------------------
 * Row-major y (R,M) = x (R,K) W^T + b is the column-major D (M,R) = op(A) B
 * with A = W as stored, column-major (K,M), transposed; B = x as stored,
 * column-major (K,R); the bias is a vector over D's M rows. */

static void plan_drop(sq_cuda_ltplan *pl)
{
    if (pl->op) cublasLtMatmulDescDestroy(pl->op);
    if (pl->a) cublasLtMatrixLayoutDestroy(pl->a);
    if (pl->b) cublasLtMatrixLayoutDestroy(pl->b);
    if (pl->c) cublasLtMatrixLayoutDestroy(pl->c);
    memset(pl, 0, sizeof *pl);
}

/* Finds or makes the plan; NULL only when out of host resources. */
static sq_cuda_ltplan *plan_for(sq_ctx *ctx, int bias, int64_t R, int64_t K, int64_t M)
{
    sq_cuda_ctx *cu = ctx->cuda;
    int tf32 = ctx->cuda_tf32;
    for (int i = 0; i < SQ_CUDA_LTPLANS; i++) {
        sq_cuda_ltplan *pl = &cu->lt_plans[i];
        if (pl->used && pl->tf32 == tf32 && pl->bias == bias && pl->R == R && pl->K == K && pl->M == M)
            return pl;
    }
    sq_cuda_ltplan *pl = &cu->lt_plans[cu->lt_next];
    cu->lt_next = (cu->lt_next + 1) % SQ_CUDA_LTPLANS;
    plan_drop(pl);
    pl->used = 1;
    pl->dt = SQ_F32;
    pl->tf32 = tf32;
    pl->bias = bias;
    pl->R = R;
    pl->K = K;
    pl->M = M;
    cublasComputeType_t ct = tf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
    cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
    cublasLtEpilogue_t ep = bias ? CUBLASLT_EPILOGUE_BIAS : CUBLASLT_EPILOGUE_DEFAULT;
    int ok = cublasLtMatmulDescCreate(&pl->op, ct, CUDA_R_32F) == CUBLAS_STATUS_SUCCESS &&
             cublasLtMatmulDescSetAttribute(pl->op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta) == CUBLAS_STATUS_SUCCESS &&
             cublasLtMatmulDescSetAttribute(pl->op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb) == CUBLAS_STATUS_SUCCESS &&
             cublasLtMatmulDescSetAttribute(pl->op, CUBLASLT_MATMUL_DESC_EPILOGUE, &ep, sizeof ep) == CUBLAS_STATUS_SUCCESS &&
             cublasLtMatrixLayoutCreate(&pl->a, CUDA_R_32F, (uint64_t)K, (uint64_t)M, K) == CUBLAS_STATUS_SUCCESS &&
             cublasLtMatrixLayoutCreate(&pl->b, CUDA_R_32F, (uint64_t)K, (uint64_t)R, K) == CUBLAS_STATUS_SUCCESS &&
             cublasLtMatrixLayoutCreate(&pl->c, CUDA_R_32F, (uint64_t)M, (uint64_t)R, M) == CUBLAS_STATUS_SUCCESS;
    if (ok) {
        cublasLtMatmulPreference_t pref = NULL;
        size_t wsb = cu->cublas_ws_bytes;
        cublasLtMatmulHeuristicResult_t h;
        int n = 0;
        memset(&h, 0, sizeof h);
        if (cublasLtMatmulPreferenceCreate(&pref) == CUBLAS_STATUS_SUCCESS &&
            cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &wsb,
                                                 sizeof wsb) == CUBLAS_STATUS_SUCCESS &&
            cublasLtMatmulAlgoGetHeuristic(cu->lt, pl->op, pl->a, pl->b, pl->c, pl->c, pref, 1, &h, &n) ==
                CUBLAS_STATUS_SUCCESS &&
            n > 0) {
            pl->algo = h.algo;
            pl->ok = 1;
        }
        if (pref) cublasLtMatmulPreferenceDestroy(pref);
    }
    (void)cudaGetLastError();
    return pl;
}

sq_status sq_cuda_linear(sq_ctx *ctx, sq_dtype dt, void *y, const void *x, const void *w,
                         const void *b, int64_t R, int64_t K, int64_t M)
{
    const char *k = "linear";
    SQ_TRY(check_gemm(ctx, k, dt, 0, 1, 1, R, M, K, x, K, w, K, y, M));
    if (R == 0 || M == 0) return SQ_OK;
    sq_cuda_ctx *cu = ctx->cuda;
    /* Lt's heuristic assumes 256-byte aligned matrices (its default); views
     * that start elsewhere take the fallback */
    uintptr_t mis = ((uintptr_t)x | (uintptr_t)w | (uintptr_t)y | (uintptr_t)b) & 255u;
    if (dt == SQ_F32 && K > 0 && !mis) {
        sq_cuda_ltplan *pl = plan_for(ctx, b != NULL, R, K, M);
        if (pl && pl->ok) {
            const void *bp = b;
            float one = 1.0f, zero = 0.0f;
            cublasStatus_t st = CUBLAS_STATUS_SUCCESS;
            if (b) st = cublasLtMatmulDescSetAttribute(pl->op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bp, sizeof bp);
            if (st == CUBLAS_STATUS_SUCCESS)
                st = cublasLtMatmul(cu->lt, pl->op, &one, w, pl->a, x, pl->b, &zero, y, pl->c, y, pl->c,
                                    &pl->algo, cu->cublas_ws, cu->cublas_ws_bytes, cu->stream);
            if (st == CUBLAS_STATUS_SUCCESS) {
                count(ctx, 1, R, M, K);
                return sq_cuda_launched(ctx, "linear (Lt)", "R %lld, K %lld, M %lld%s%s", (long long)R,
                                        (long long)K, (long long)M, b ? ", bias" : "",
                                        ctx->cuda_tf32 ? ", tf32" : "");
            }
            (void)cudaGetLastError();
            pl->ok = 0; /* this shape takes the fallback from now on */
        }
    }
    double beta = 0.0;
    if (b) {
        int64_t bs[2] = {0, 1}, ysh[2] = {R, M};
        SQ_TRY(sq_cuda_copy_strided(ctx, dt, y, NULL, b, bs, 2, ysh));
        beta = 1.0;
    }
    return sq_cuda_gemm(ctx, dt, 0, 1, R, M, K, 1.0, x, K, w, K, beta, y, M);
}
