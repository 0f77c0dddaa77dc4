/* sq_cpu.h — CPU compute kernels on raw, caller-owned buffers.
 *
 * No allocation, no autograd, no tensors: pointers and sizes in, results
 * written into the caller's output buffer (outputs first after the stats).
 * The engine's ops call these; a CUDA backend provides the same set. */
#ifndef SQ_CPU_H
#define SQ_CPU_H

#include "sq_base.h"

/* Row-major C (M,N) = alpha * op(A) op(B) + beta * C through OpenBLAS.
 * op(A) is (M,K): A is (M,K) with lda, or (K,M) when transA.  Counts the call. */
void sq_cpu_gemm(sq_stats *stats, sq_dtype dt, int transA, int transB, int64_t M, int64_t N,
                 int64_t K, double alpha, const void *A, int64_t lda, const void *B, int64_t ldb,
                 double beta, void *C, int64_t ldc);

/* Sets the number of BLAS threads (0 leaves the library default). */
void sq_cpu_set_threads(int n);
int sq_cpu_get_threads(void);

/* im2col for one image: x (C,H,W) -> cols (C*kh*kw, Ho*Wo). */
void sq_cpu_im2col(sq_dtype dt, void *cols, const void *x, int64_t C, int64_t H, int64_t W,
                   int kh, int kw, int stride, int pad, int64_t Ho, int64_t Wo);
/* col2im (accumulates into dx, which the caller zeroes). */
void sq_cpu_col2im(sq_dtype dt, void *dx, const void *cols, int64_t C, int64_t H, int64_t W,
                   int kh, int kw, int stride, int pad, int64_t Ho, int64_t Wo);

#endif
