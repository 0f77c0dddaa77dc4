/* sq_ops_internal.h — precondition checks and helpers shared by the op files.
 * Not part of the public API. */
#ifndef SQ_OPS_INTERNAL_H
#define SQ_OPS_INTERNAL_H

#include "sq_ops.h"
#include "sq_cpu.h"
#include "cuda/sq_cuda_kernels.h"

#include <stdio.h>

/* Ops run where their inputs live: each op checks that its tensors share a
 * device, creates its outputs there (sq_new_on / sq_zeros_on) and runs its
 * CPU loop or the CUDA kernel layer (kernels/cuda/sq_cuda_kernels.h). */
static inline int sq_on_cuda(const sq_tensor *t) { return t->storage->device == SQ_CUDA; }

static inline sq_status sq_need_tensor(sq_ctx *ctx, const char *op, const char *what,
                                       const sq_tensor *t)
{
    if (!t) return sq_fail(ctx, SQ_ERR_ARG, "%s: %s is missing", op, what);
    return SQ_OK;
}

static inline sq_status sq_need_float(sq_ctx *ctx, const char *op, const char *what,
                                      const sq_tensor *t)
{
    SQ_TRY(sq_need_tensor(ctx, op, what, t));
    if (!sq_is_float(t->dtype))
        return sq_fail(ctx, SQ_ERR_DTYPE, "%s: %s must be float32 or float64, got %s", op, what,
                       sq_dtype_name(t->dtype));
    if (t->storage->device != SQ_CPU && t->storage->device != SQ_CUDA)
        return sq_fail(ctx, SQ_ERR_DEVICE, "%s: %s is on an unknown device", op, what);
    return SQ_OK;
}

/* For code that only runs on the CPU (LAPACK, BSR packing, low-rank
 * factors): float, and in host memory. */
static inline sq_status sq_need_float_cpu(sq_ctx *ctx, const char *op, const char *what,
                                          const sq_tensor *t)
{
    SQ_TRY(sq_need_float(ctx, op, what, t));
    if (t->storage->device != SQ_CPU)
        return sq_fail(ctx, SQ_ERR_DEVICE, "%s: %s is on %s; this runs on the cpu (move it with :cpu())",
                       op, what, sq_device_name(t->storage->device));
    return SQ_OK;
}

/* "matmul: argument #1 is on cuda, argument #2 on cpu (move one with :cuda() or :cpu())" */
static inline sq_status sq_need_same_device(sq_ctx *ctx, const char *op, const char *wa,
                                            const sq_tensor *a, const char *wb, const sq_tensor *b)
{
    if (a->storage->device != b->storage->device)
        return sq_fail(ctx, SQ_ERR_DEVICE, "%s: %s is on %s, %s on %s (move one with :cuda() or :cpu())",
                       op, wa, sq_device_name(a->storage->device), wb,
                       sq_device_name(b->storage->device));
    return SQ_OK;
}

/* A new contiguous tensor (category OTHER) on the device of `like`. */
static inline sq_status sq_new_on(sq_ctx *ctx, const sq_tensor *like, sq_dtype dt, int ndim,
                                  const int64_t *shape, sq_tensor **out)
{
    return sq_tensor_empty_dev(ctx, like->storage->device, dt, ndim, shape, SQ_MEM_OTHER, out);
}

static inline sq_status sq_zeros_on(sq_ctx *ctx, const sq_tensor *like, sq_dtype dt, int ndim,
                                    const int64_t *shape, sq_tensor **out)
{
    return sq_tensor_zeros_dev(ctx, like->storage->device, dt, ndim, shape, out);
}

/* Row-major GEMM (sq_cpu_gemm's meaning and argument order) on a device. */
static inline sq_status sq_gemm_on(sq_ctx *ctx, sq_device dev, sq_dtype dt, int ta, int tb,
                                   int64_t M, int64_t N, int64_t K, double alpha, const void *A,
                                   int64_t lda, const void *B, int64_t ldb, double beta, void *C,
                                   int64_t ldc)
{
    if (dev == SQ_CUDA)
        return sq_cuda_gemm(ctx, dt, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    sq_cpu_gemm(&ctx->stats, dt, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    return SQ_OK;
}

/* Index tensor as contiguous int64 on its device (int32 converted): what
 * the GPU kernels read.  Returns idx itself (retained) when it already is. */
static inline sq_status sq_index_i64(sq_ctx *ctx, sq_tensor *idx, sq_tensor **out)
{
    if (idx->dtype == SQ_I64) return sq_tensor_contiguous_raw(ctx, idx, out);
    return sq_tensor_to_dtype(ctx, idx, SQ_I64, out);
}

static inline sq_status sq_need_same_dtype(sq_ctx *ctx, const char *op, const sq_tensor *a,
                                           const sq_tensor *b)
{
    if (a->dtype != b->dtype)
        return sq_fail(ctx, SQ_ERR_DTYPE, "%s: dtypes %s and %s differ", op, sq_dtype_name(a->dtype),
                       sq_dtype_name(b->dtype));
    return SQ_OK;
}

static inline sq_status sq_need_index(sq_ctx *ctx, const char *op, const char *what,
                                      const sq_tensor *t)
{
    SQ_TRY(sq_need_tensor(ctx, op, what, t));
    if (t->dtype != SQ_I64 && t->dtype != SQ_I32)
        return sq_fail(ctx, SQ_ERR_DTYPE, "%s: %s must be int64 or int32, got %s", op, what,
                       sq_dtype_name(t->dtype));
    return SQ_OK;
}

/* Normalises dim in [-ndim, ndim) to [0, ndim). */
static inline sq_status sq_norm_dim(sq_ctx *ctx, const char *op, int ndim, int *dim)
{
    int d = *dim < 0 ? *dim + ndim : *dim;
    if (d < 0 || d >= ndim)
        return sq_fail(ctx, SQ_ERR_ARG, "%s: dim %d out of range for a %d-d tensor", op, *dim, ndim);
    *dim = d;
    return SQ_OK;
}

static inline int64_t sq_index_at(const sq_tensor *idx, int64_t i)
{
    /* idx is contiguous and on the CPU */
    return idx->dtype == SQ_I64 ? ((const int64_t *)sq_tensor_data(idx))[i]
                                : ((const int32_t *)sq_tensor_data(idx))[i];
}

/* ---- linear, shared with the layers that compress its saved input -------- */
/* (ops_linalg.c)  The forward of sq_linear under another op name and backward
 * function: same checks, same GEMM, same node layout (saved[0] = x as (R,K),
 * saved[1] = W, iarg = R, K, M), so a compressed variant's output is
 * bit-identical to sq_linear's.  Messages are prefixed with `name`. */
sq_status sq_linear_record(sq_ctx *ctx, const char *name, sq_backward_fn bw, sq_tensor *x,
                           sq_tensor *w, sq_tensor *b, sq_tensor **out);
/* Computes dW (M,K) into *dw (a new reference) from g = dy (R,M), contiguous. */
typedef sq_status (*sq_linear_dw_fn)(sq_ctx *ctx, sq_node *node, sq_tensor *g, sq_tensor **dw);
/* sq_linear's backward with the weight-gradient step supplied: dx = dy·W and
 * db = Σ dy exactly as sq_linear computes them (same GEMM, same loop). */
sq_status sq_linear_backward_with(sq_ctx *ctx, sq_node *node, sq_tensor *gout, sq_tensor **gin,
                                  sq_linear_dw_fn dw);

#define SQ_SHAPE(t, buf) sq_shape_str((t), (buf), sizeof(buf))

#endif
