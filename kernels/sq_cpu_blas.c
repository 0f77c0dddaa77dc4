/* sq_cpu_blas.c — the one place the engine talks to BLAS. */
#include "sq_cpu.h"

#include <cblas.h>

void sq_cpu_gemm(sq_stats *stats, sq_dtype dt, int transA, int transB, int64_t M, int64_t N,
                 int64_t K, double alpha, const void *A, int64_t lda, const void *B, int64_t ldb,
                 double beta, void *C, int64_t ldc)
{
    if (stats) {
        stats->gemm_calls++;
        stats->gemm_flops += 2.0 * (double)M * (double)N * (double)K;
    }
    if (M == 0 || N == 0) return;
    enum CBLAS_TRANSPOSE ta = transA ? CblasTrans : CblasNoTrans;
    enum CBLAS_TRANSPOSE tb = transB ? CblasTrans : CblasNoTrans;
    if (dt == SQ_F32)
        cblas_sgemm(CblasRowMajor, ta, tb, (int)M, (int)N, (int)K, (float)alpha, A, (int)lda, B,
                    (int)ldb, (float)beta, C, (int)ldc);
    else
        cblas_dgemm(CblasRowMajor, ta, tb, (int)M, (int)N, (int)K, alpha, A, (int)lda, B, (int)ldb,
                    beta, C, (int)ldc);
}

/* OpenBLAS's thread count is process state owned by the library, not by us. */
void sq_cpu_set_threads(int n)
{
    if (n > 0) openblas_set_num_threads(n);
}

int sq_cpu_get_threads(void) { return openblas_get_num_threads(); }
