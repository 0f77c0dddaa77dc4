/* sq_linalg.h — dense factorizations the compression methods share:
 * a robust SVD (LAPACK gesdd, falling back to gesvd) with truncated factors,
 * and the Gram matrix XᵀX (low-rank decomposition and OSSCAR both need
 * these; they live here once).
 *
 * Not differentiable: these run on weights and calibration data, outside
 * any autograd graph.  Inputs may be non-contiguous views; outputs are new
 * contiguous tensors owned by the caller.  LAPACK workspace is allocated as
 * tensors in the WORKSPACE memory category, so accounting stays exact. */
#ifndef SQ_LINALG_H
#define SQ_LINALG_H

#include "sq_tensor.h"

typedef enum {
    SQ_SVD_AUTO = 0,  /* gesdd; gesvd when gesdd does not converge (default) */
    SQ_SVD_GESDD,     /* gesdd only: its failure is the error */
    SQ_SVD_GESVD      /* gesvd only */
} sq_svd_driver;

/* Test hooks: pretend a driver reported non-convergence (info > 0). */
#define SQ_SVD_FAKE_GESDD_FAIL 1
#define SQ_SVD_FAKE_GESVD_FAIL 2

typedef struct {
    sq_svd_driver driver;
    int fake_fail;        /* SQ_SVD_FAKE_* bits; 0 in real use */
} sq_svd_opts;

/* What actually ran (for the run record). */
typedef struct {
    sq_svd_driver used;   /* SQ_SVD_GESDD or SQ_SVD_GESVD */
    int fell_back;        /* 1 when gesdd failed and gesvd produced the result */
    int gesdd_info;       /* LAPACK info of gesdd (0 when not run or fine) */
} sq_svd_info;

const char *sq_svd_driver_name(sq_svd_driver d);

/* W (M,K) float32/float64 on the cpu -> W ≈ U diag(S) Vt with
 *   U (M,r), S (r) descending and >= 0, Vt (r,K), same dtype as W,
 * r = rank, or k = min(M,K) when rank == 0 (1 <= rank <= k otherwise).
 * opts and info may be NULL (defaults: SQ_SVD_AUTO).  U, S, Vt: new
 * references the caller releases; NULL on failure.
 * Fails with SQ_ERR_NUMERIC (and a message) on NaN/Inf in W, on
 * non-convergence, on a LAPACK argument error, or on non-finite output;
 * never returns partial factors. */
sq_status sq_svd(sq_ctx *ctx, sq_tensor *W, int64_t rank, const sq_svd_opts *opts, sq_tensor **U,
                 sq_tensor **S, sq_tensor **Vt, sq_svd_info *info);

/* H (p,p) += Xᵀ X for X (n,p), accumulating in H's dtype (float32 or
 * float64; X may be either).  Same dtypes: one GEMM.  X float32 into an H of
 * float64 (or the reverse): X is converted to H's dtype in row blocks of a
 * bounded workspace, one GEMM per block.  H is made exactly symmetric on
 * return (a blocked GEMM need not produce bitwise-equal (i,j) and (j,i)).
 * H must be contiguous; the caller owns it and zeroes it before the first
 * call.  Counted in ctx->stats like every engine GEMM. */
sq_status sq_gram(sq_ctx *ctx, sq_tensor *X, sq_tensor *H);

#endif
