/* sq_cuda_linalg.h — dense factorizations on the GPU through cuSOLVER: the
 * SVD that low-rank decomposition needs (methods.md §2 step 6), the GPU
 * counterpart of sq_svd's LAPACK path (engine/sq_linalg.h), which calls it
 * when the matrix is on the GPU.  tests/cuda/test_cuda_svd.c compares the
 * two.
 *
 * Raw device buffers, like sq_cuda_kernels.h: no tensors, outputs written
 * into caller-owned buffers.  Unlike the kernels, an SVD waits for the
 * device before it returns: cuSOLVER reports convergence in a device word,
 * and a non-converged or non-finite result must become an error, never a
 * factor passed on.
 *
 * Drivers (cuSOLVER has no divide-and-conquer gesdd):
 *   GESVD   QR iteration on the bidiagonal form (cusolverDn<t>gesvd, jobu =
 *           jobvt = 'S'), LAPACK's algorithm; info > 0: that many
 *           superdiagonals did not converge;
 *   GESVDJ  one-sided Jacobi (cusolverDn<t>gesvdj, economy size; tolerance
 *           the machine epsilon of dt, at most 100 sweeps, info = k+1: not
 *           converged).  Faster, but in float32 its error grows about as
 *           n*eps: measured on the H100 (results/reports/lrd_gpu.md), S of a
 *           200x200 matrix 2e-5 from LAPACK's (gesvd: 8e-7), and sigma_1 of a
 *           4096x4096 one 2.4e-4 off (gesvd: 3e-6), for 1.09 s against 1.43 s;
 *   AUTO    GESVD, then GESVDJ when gesvd did not converge: accuracy first,
 *           the time is spent once per layer (the CPU path's gesdd -> gesvd
 *           order does not carry over: here the accurate driver is the QR one).
 * cuSOLVER's gesvd needs rows >= columns in its column-major view: the
 * matrix is handed over as Wᵀ (K x M column-major, i.e. W's own buffer) when
 * K >= M, and as W (transposed into a workspace) otherwise; the factors are
 * copied back into row-major U and Vt, so both shapes give the same result. */
#ifndef SQ_CUDA_LINALG_H
#define SQ_CUDA_LINALG_H

#include "sq_cuda.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    SQ_CUDA_SVD_AUTO = 0, /* gesvd; gesvdj when gesvd does not converge */
    SQ_CUDA_SVD_GESVDJ,   /* gesvdj only: its failure is the error */
    SQ_CUDA_SVD_GESVD     /* gesvd only */
} sq_cuda_svd_driver;

/* Test hooks: pretend a driver did not converge (same bits as sq_svd's
 * SQ_SVD_FAKE_GESDD_FAIL / SQ_SVD_FAKE_GESVD_FAIL, gesvdj in gesdd's place). */
#define SQ_CUDA_SVD_FAKE_GESVDJ_FAIL 1
#define SQ_CUDA_SVD_FAKE_GESVD_FAIL 2

/* What ran (for the run record). */
typedef struct {
    sq_cuda_svd_driver used; /* SQ_CUDA_SVD_GESVD or SQ_CUDA_SVD_GESVDJ */
    int fell_back;           /* 1: gesvd did not converge and gesvdj produced the result */
    int gesvdj_info;         /* cuSOLVER info of gesvdj (0 when not run or fine) */
    int gesvd_info;          /* cuSOLVER info of gesvd (0 when not run or fine) */
    int gesvdj_sweeps;       /* Jacobi sweeps executed (0 when not run) */
    double gesvdj_residual;  /* ||W - U S Vt||_F as gesvdj measures it (0 when not run) */
} sq_cuda_svd_info;

const char *sq_cuda_svd_driver_name(sq_cuda_svd_driver d);

/* W (M,K) row-major, contiguous, float32 or float64, on the device ->
 *   U (M,k), S (k) descending and >= 0, Vt (k,K), k = min(M,K), row-major,
 * in caller-owned device buffers of W's dtype (none may alias W), with
 * W = U diag(S) Vt.  W is not modified.  info may be NULL; fake_fail is a
 * mask of SQ_CUDA_SVD_FAKE_* bits (0 in real use).  Workspace (a copy of W,
 * both factors' cuSOLVER layouts and cuSOLVER's buffer, about 3 matrices of
 * W's size) comes from the context's cache and is charged to WORKSPACE
 * while held.  Waits for the device.
 * Errors: SQ_ERR_NUMERIC when W has a NaN/Inf (naming the first, 0-based
 * [row,col]), when the driver(s) did not converge, or when the factors are
 * not finite (naming the sizes and the driver); SQ_ERR_ARG / SQ_ERR_DTYPE
 * for bad sizes (M, K >= 1, M*K < 2^31: cuSOLVER's 32-bit indices) or
 * dtypes; SQ_ERR_DEVICE when cuSOLVER or CUDA fail.  On any error the
 * contents of U, S and Vt are unspecified. */
sq_status sq_cuda_svd(sq_ctx *ctx, sq_dtype dt, int64_t M, int64_t K, const void *W, void *U,
                      void *S, void *Vt, sq_cuda_svd_driver driver, int fake_fail,
                      sq_cuda_svd_info *info);

#ifdef __cplusplus
}
#endif

#endif
