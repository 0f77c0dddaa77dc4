/* sq_tensor.h — refcounted storage and strided N-d tensor views.
 *
 * A storage is a flat buffer charged to one memory category of one device.
 * A tensor is a view (offset, shape, strides in elements) on a storage plus
 * its autograd fields.  Both are refcounted: sq_tensor_retain/release.
 * Every function that returns a tensor through an `out` pointer hands the
 * caller one reference (the caller releases it). */
#ifndef SQ_TENSOR_H
#define SQ_TENSOR_H

#include "sq_base.h"

#define SQ_MAX_DIMS 8

typedef struct sq_storage {
    int refcount;
    int saved_refs;      /* >0 while autograd nodes hold it: counted as SAVED */
    int64_t version;     /* bumped by every in-place write (fill_, copy_, set_flat):
                            backward refuses a saved tensor written since it was saved */
    sq_ctx *ctx;
    sq_device device;
    sq_mem_cat cat;      /* category charged while saved_refs == 0 */
    size_t nbytes;
    void *data;
} sq_storage;

struct sq_node;

typedef struct sq_tensor {
    int refcount;
    sq_storage *storage;
    int64_t offset;                 /* elements */
    int ndim;
    int64_t shape[SQ_MAX_DIMS];
    int64_t stride[SQ_MAX_DIMS];    /* elements */
    sq_dtype dtype;
    int requires_grad;              /* leaf: set by user; result: any input needs grad */
    struct sq_tensor *grad;         /* leaves only; owned (category GRAD) */
    struct sq_node *grad_fn;        /* results only; owned reference */
} sq_tensor;

/* Storage */
sq_status sq_storage_new(sq_ctx *ctx, sq_device dev, sq_mem_cat cat, size_t nbytes,
                         sq_storage **out);
void sq_storage_retain(sq_storage *s);
void sq_storage_release(sq_storage *s);
/* Moves the storage's bytes to another category (e.g. OTHER -> PARAM). */
void sq_storage_set_category(sq_storage *s, sq_mem_cat cat);
/* Autograd holds / lets go of a storage for backward (SAVED accounting). */
void sq_storage_hold_saved(sq_storage *s);
void sq_storage_drop_saved(sq_storage *s);

/* Creation: new contiguous tensors (uninitialised / zero / filled).  The
 * functions without a device argument create on the CPU; the _like ones
 * create on the device of their model tensor. */
sq_status sq_tensor_empty(sq_ctx *ctx, sq_dtype dt, int ndim, const int64_t *shape,
                          sq_tensor **out);
sq_status sq_tensor_empty_cat(sq_ctx *ctx, sq_dtype dt, int ndim, const int64_t *shape,
                              sq_mem_cat cat, sq_tensor **out);
sq_status sq_tensor_zeros(sq_ctx *ctx, sq_dtype dt, int ndim, const int64_t *shape,
                          sq_tensor **out);
sq_status sq_tensor_full(sq_ctx *ctx, sq_dtype dt, int ndim, const int64_t *shape, double v,
                         sq_tensor **out);
/* On a device (SQ_CPU or SQ_CUDA; the CUDA backend is created on first use). */
sq_status sq_tensor_empty_dev(sq_ctx *ctx, sq_device dev, sq_dtype dt, int ndim,
                              const int64_t *shape, sq_mem_cat cat, sq_tensor **out);
sq_status sq_tensor_zeros_dev(sq_ctx *ctx, sq_device dev, sq_dtype dt, int ndim,
                              const int64_t *shape, sq_tensor **out);
sq_status sq_tensor_full_dev(sq_ctx *ctx, sq_device dev, sq_dtype dt, int ndim,
                             const int64_t *shape, double v, sq_tensor **out);
sq_status sq_tensor_empty_like(sq_ctx *ctx, const sq_tensor *t, sq_tensor **out);
sq_status sq_tensor_zeros_like(sq_ctx *ctx, const sq_tensor *t, sq_tensor **out);
sq_status sq_tensor_randn(sq_ctx *ctx, sq_dtype dt, int ndim, const int64_t *shape,
                          double mean, double std, sq_tensor **out);
sq_status sq_tensor_rand(sq_ctx *ctx, sq_dtype dt, int ndim, const int64_t *shape,
                         double lo, double hi, sq_tensor **out);
sq_status sq_tensor_arange(sq_ctx *ctx, sq_dtype dt, double start, double stop, double step,
                           sq_tensor **out);

void sq_tensor_retain(sq_tensor *t);
void sq_tensor_release(sq_tensor *t);   /* NULL-safe */

/* Queries */
static inline sq_device sq_tensor_device(const sq_tensor *t) { return t->storage->device; }
int64_t sq_tensor_numel(const sq_tensor *t);
int sq_tensor_is_contiguous(const sq_tensor *t);
int sq_shape_equal(const sq_tensor *a, const sq_tensor *b);
/* "3x4x5" into buf; returns buf. */
const char *sq_shape_str(const sq_tensor *t, char *buf, size_t n);
static inline int sq_is_float(sq_dtype dt) { return dt == SQ_F32 || dt == SQ_F64; }
/* Pointer to element 0 of the view. */
static inline void *sq_tensor_data(const sq_tensor *t)
{
    return (char *)t->storage->data + t->offset * (int64_t)sq_dtype_size(t->dtype);
}
/* Element access by flat row-major index over the view (slow; tests, small
 * loops).  CPU tensors only: copy a device tensor to the CPU first. */
double sq_tensor_get_flat(const sq_tensor *t, int64_t i);
void sq_tensor_set_flat(sq_tensor *t, int64_t i, double v);

/* Copies and conversions (no autograd; see sq_ops.h for differentiable ones).
 * copy_ takes any two devices and dtypes (same numel, row-major order of
 * each view); a copy to the CPU waits for the device, the others are
 * asynchronous on the device stream.  The rest keep t's device. */
sq_status sq_tensor_copy_(sq_ctx *ctx, sq_tensor *dst, const sq_tensor *src); /* same numel */
sq_status sq_tensor_clone(sq_ctx *ctx, const sq_tensor *t, sq_tensor **out);  /* contiguous */
/* Returns t itself (retained) when already contiguous, else a contiguous copy. */
sq_status sq_tensor_contiguous_raw(sq_ctx *ctx, sq_tensor *t, sq_tensor **out);
sq_status sq_tensor_to_dtype(sq_ctx *ctx, const sq_tensor *t, sq_dtype dt, sq_tensor **out);
sq_status sq_tensor_fill_(sq_ctx *ctx, sq_tensor *t, double v);
/* A contiguous copy of t on dev (t itself, retained, when already there).
 * Not recorded by autograd: the copy is a new leaf, charged to t's memory
 * category, requiring a gradient when t is a leaf that does (so moved
 * parameters stay parameters; see model:cuda()). */
sq_status sq_tensor_to_device(sq_ctx *ctx, sq_tensor *t, sq_device dev, sq_tensor **out);

/* Views without autograd (the differentiable wrappers live in sq_ops.h). */
sq_status sq_view_raw(sq_ctx *ctx, sq_tensor *t, int ndim, const int64_t *shape,
                      const int64_t *stride, int64_t offset, sq_tensor **out);
/* Broadcast shape of a and b into out_shape; returns SQ_ERR_SHAPE with a message. */
sq_status sq_broadcast_shape(sq_ctx *ctx, const char *op, const sq_tensor *a, const sq_tensor *b,
                             int *ndim, int64_t *shape);

#endif
