/* sq_ops_internal.h — precondition checks and helpers shared by the op files.
 * Not part of the public API. */
#ifndef SQ_OPS_INTERNAL_H
#define SQ_OPS_INTERNAL_H

#include "sq_ops.h"
#include "sq_cpu.h"

#include <stdio.h>

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
    if (t->storage->device != SQ_CPU)
        return sq_fail(ctx, SQ_ERR_DEVICE, "%s: %s is on %s; this op runs on the cpu", op, what,
                       sq_device_name(t->storage->device));
    return SQ_OK;
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
    /* idx is contiguous */
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
