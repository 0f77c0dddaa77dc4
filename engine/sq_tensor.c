/* sq_tensor.c — storage allocation with exact accounting; strided views. */
#include "sq_tensor.h"
#include "sq_device.h"
#include "sq_autograd.h"
#include "cuda/sq_cuda_kernels.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- storage ----------------------------------------------------------- */

static sq_mem_cat charged_cat(const sq_storage *s)
{
    return s->saved_refs > 0 ? SQ_MEM_SAVED : s->cat;
}

sq_status sq_storage_new(sq_ctx *ctx, sq_device dev, sq_mem_cat cat, size_t nbytes,
                         sq_storage **out)
{
    *out = NULL;
    sq_storage *s = calloc(1, sizeof *s);
    if (!s) return sq_fail(ctx, SQ_ERR_NOMEM, "out of host memory allocating a storage header");
    void *data = NULL;
    if (nbytes > 0) {
        sq_status st = sq_device_alloc(ctx, dev, nbytes, &data);
        if (st != SQ_OK) {
            free(s);
            return st;
        }
    }
    s->refcount = 1;
    s->ctx = ctx;
    s->device = dev;
    s->cat = cat;
    s->nbytes = nbytes;
    s->data = data;
    sq_mem_add(ctx, dev, cat, (int64_t)nbytes);
    ctx->mem.allocated[dev] += (int64_t)nbytes;
    *out = s;
    return SQ_OK;
}

void sq_storage_retain(sq_storage *s) { s->refcount++; }

void sq_storage_release(sq_storage *s)
{
    if (!s || --s->refcount > 0) return;
    sq_mem_sub(s->ctx, s->device, charged_cat(s), (int64_t)s->nbytes);
    sq_device_free(s->ctx, s->device, s->data);
    free(s);
}

void sq_storage_set_category(sq_storage *s, sq_mem_cat cat)
{
    if (s->saved_refs == 0) {
        sq_mem_sub(s->ctx, s->device, s->cat, (int64_t)s->nbytes);
        sq_mem_add(s->ctx, s->device, cat, (int64_t)s->nbytes);
    }
    s->cat = cat;
}

/* Only activations/temporaries become SAVED: a saved parameter costs nothing extra. */
void sq_storage_hold_saved(sq_storage *s)
{
    if (s->cat != SQ_MEM_OTHER) return;
    if (s->saved_refs++ == 0) {
        sq_mem_sub(s->ctx, s->device, SQ_MEM_OTHER, (int64_t)s->nbytes);
        sq_mem_add(s->ctx, s->device, SQ_MEM_SAVED, (int64_t)s->nbytes);
    }
}

void sq_storage_drop_saved(sq_storage *s)
{
    if (s->cat != SQ_MEM_OTHER || s->saved_refs == 0) return;
    if (--s->saved_refs == 0) {
        sq_mem_sub(s->ctx, s->device, SQ_MEM_SAVED, (int64_t)s->nbytes);
        sq_mem_add(s->ctx, s->device, SQ_MEM_OTHER, (int64_t)s->nbytes);
    }
}

/* ---- tensors ------------------------------------------------------------ */

static sq_status check_shape(sq_ctx *ctx, int ndim, const int64_t *shape, int64_t *numel)
{
    if (ndim < 0 || ndim > SQ_MAX_DIMS)
        return sq_fail(ctx, SQ_ERR_ARG, "tensor rank %d outside 0..%d", ndim, SQ_MAX_DIMS);
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0)
            return sq_fail(ctx, SQ_ERR_ARG, "negative size %lld in dim %d", (long long)shape[i], i);
        if (shape[i] > 0 && n > INT64_MAX / 16 / shape[i])
            return sq_fail(ctx, SQ_ERR_ARG, "tensor too large");
        n *= shape[i];
    }
    *numel = n;
    return SQ_OK;
}

static void set_contiguous_strides(sq_tensor *t)
{
    int64_t s = 1;
    for (int i = t->ndim - 1; i >= 0; i--) {
        t->stride[i] = s;
        s *= t->shape[i];
    }
}

sq_status sq_tensor_empty_dev(sq_ctx *ctx, sq_device dev, sq_dtype dt, int ndim,
                              const int64_t *shape, sq_mem_cat cat, sq_tensor **out)
{
    *out = NULL;
    int64_t n = 0;
    sq_status st = check_shape(ctx, ndim, shape, &n);
    if (st != SQ_OK) return st;
    if ((unsigned)dt >= SQ_NDTYPE) return sq_fail(ctx, SQ_ERR_ARG, "unknown dtype %d", (int)dt);
    if ((unsigned)dev >= SQ_NDEVICE) return sq_fail(ctx, SQ_ERR_ARG, "unknown device %d", (int)dev);
    /* even an empty GPU tensor needs the backend its ops will call */
    if (dev != SQ_CPU) SQ_TRY(sq_device_ensure(ctx, dev));
    sq_tensor *t = calloc(1, sizeof *t);
    if (!t) return sq_fail(ctx, SQ_ERR_NOMEM, "out of host memory allocating a tensor header");
    st = sq_storage_new(ctx, dev, cat, (size_t)n * sq_dtype_size(dt), &t->storage);
    if (st != SQ_OK) {
        free(t);
        return st;
    }
    t->refcount = 1;
    t->ndim = ndim;
    t->dtype = dt;
    if (ndim > 0) memcpy(t->shape, shape, (size_t)ndim * sizeof *shape);
    set_contiguous_strides(t);
    *out = t;
    return SQ_OK;
}

sq_status sq_tensor_empty_cat(sq_ctx *ctx, sq_dtype dt, int ndim, const int64_t *shape,
                              sq_mem_cat cat, sq_tensor **out)
{
    return sq_tensor_empty_dev(ctx, SQ_CPU, dt, ndim, shape, cat, out);
}

sq_status sq_tensor_empty(sq_ctx *ctx, sq_dtype dt, int ndim, const int64_t *shape,
                          sq_tensor **out)
{
    return sq_tensor_empty_dev(ctx, SQ_CPU, dt, ndim, shape, SQ_MEM_OTHER, out);
}

sq_status sq_tensor_zeros_dev(sq_ctx *ctx, sq_device dev, sq_dtype dt, int ndim,
                              const int64_t *shape, sq_tensor **out)
{
    SQ_TRY(sq_tensor_empty_dev(ctx, dev, dt, ndim, shape, SQ_MEM_OTHER, out));
    sq_storage *s = (*out)->storage;
    if (dev == SQ_CPU) {
        if (s->nbytes) memset(s->data, 0, s->nbytes); /* data is NULL when empty */
        return SQ_OK;
    }
    sq_status st = sq_tensor_fill_(ctx, *out, 0.0);
    if (st != SQ_OK) {
        sq_tensor_release(*out);
        *out = NULL;
    }
    return st;
}

sq_status sq_tensor_full_dev(sq_ctx *ctx, sq_device dev, sq_dtype dt, int ndim,
                             const int64_t *shape, double v, sq_tensor **out)
{
    SQ_TRY(sq_tensor_empty_dev(ctx, dev, dt, ndim, shape, SQ_MEM_OTHER, out));
    sq_status st = sq_tensor_fill_(ctx, *out, v);
    if (st != SQ_OK) {
        sq_tensor_release(*out);
        *out = NULL;
    }
    return st;
}

sq_status sq_tensor_zeros(sq_ctx *ctx, sq_dtype dt, int ndim, const int64_t *shape,
                          sq_tensor **out)
{
    return sq_tensor_zeros_dev(ctx, SQ_CPU, dt, ndim, shape, out);
}

sq_status sq_tensor_full(sq_ctx *ctx, sq_dtype dt, int ndim, const int64_t *shape, double v,
                         sq_tensor **out)
{
    return sq_tensor_full_dev(ctx, SQ_CPU, dt, ndim, shape, v, out);
}

sq_status sq_tensor_empty_like(sq_ctx *ctx, const sq_tensor *t, sq_tensor **out)
{
    return sq_tensor_empty_dev(ctx, sq_tensor_device(t), t->dtype, t->ndim, t->shape, SQ_MEM_OTHER, out);
}

sq_status sq_tensor_zeros_like(sq_ctx *ctx, const sq_tensor *t, sq_tensor **out)
{
    return sq_tensor_zeros_dev(ctx, sq_tensor_device(t), t->dtype, t->ndim, t->shape, out);
}

sq_status sq_tensor_randn(sq_ctx *ctx, sq_dtype dt, int ndim, const int64_t *shape,
                          double mean, double std, sq_tensor **out)
{
    if (!sq_is_float(dt)) return sq_fail(ctx, SQ_ERR_DTYPE, "randn needs a float dtype, got %s", sq_dtype_name(dt));
    sq_status st = sq_tensor_empty(ctx, dt, ndim, shape, out);
    if (st != SQ_OK) return st;
    int64_t n = sq_tensor_numel(*out);
    if (dt == SQ_F32) {
        float *p = (*out)->storage->data;
        for (int64_t i = 0; i < n; i++) p[i] = (float)(mean + std * sq_rng_normal(&ctx->rng));
    } else {
        double *p = (*out)->storage->data;
        for (int64_t i = 0; i < n; i++) p[i] = mean + std * sq_rng_normal(&ctx->rng);
    }
    return SQ_OK;
}

sq_status sq_tensor_rand(sq_ctx *ctx, sq_dtype dt, int ndim, const int64_t *shape,
                         double lo, double hi, sq_tensor **out)
{
    if (!sq_is_float(dt)) return sq_fail(ctx, SQ_ERR_DTYPE, "rand needs a float dtype, got %s", sq_dtype_name(dt));
    sq_status st = sq_tensor_empty(ctx, dt, ndim, shape, out);
    if (st != SQ_OK) return st;
    int64_t n = sq_tensor_numel(*out);
    for (int64_t i = 0; i < n; i++)
        sq_tensor_set_flat(*out, i, lo + (hi - lo) * sq_rng_uniform(&ctx->rng));
    return SQ_OK;
}

sq_status sq_tensor_arange(sq_ctx *ctx, sq_dtype dt, double start, double stop, double step,
                           sq_tensor **out)
{
    *out = NULL;
    if (step == 0 || !isfinite(start) || !isfinite(stop) || !isfinite(step))
        return sq_fail(ctx, SQ_ERR_ARG, "arange: step must be finite and non-zero");
    double cnt = ceil((stop - start) / step);
    int64_t n = cnt > 0 ? (int64_t)cnt : 0;
    sq_status st = sq_tensor_empty(ctx, dt, 1, &n, out);
    if (st != SQ_OK) return st;
    for (int64_t i = 0; i < n; i++) sq_tensor_set_flat(*out, i, start + (double)i * step);
    return SQ_OK;
}

void sq_tensor_retain(sq_tensor *t) { t->refcount++; }

void sq_tensor_release(sq_tensor *t)
{
    if (!t || --t->refcount > 0) return;
    sq_ctx *ctx = t->storage ? t->storage->ctx : NULL;
    if (t->grad_fn) sq_node_release(ctx, t->grad_fn);
    sq_tensor_release(t->grad);
    sq_storage_release(t->storage);
    free(t);
}

int64_t sq_tensor_numel(const sq_tensor *t)
{
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= t->shape[i];
    return n;
}

int sq_tensor_is_contiguous(const sq_tensor *t)
{
    int64_t s = 1;
    for (int i = t->ndim - 1; i >= 0; i--) {
        if (t->shape[i] != 1 && t->stride[i] != s) return 0;
        s *= t->shape[i];
    }
    return 1;
}

int sq_shape_equal(const sq_tensor *a, const sq_tensor *b)
{
    if (a->ndim != b->ndim) return 0;
    for (int i = 0; i < a->ndim; i++)
        if (a->shape[i] != b->shape[i]) return 0;
    return 1;
}

const char *sq_shape_str(const sq_tensor *t, char *buf, size_t n)
{
    size_t used = 0;
    buf[0] = 0;
    if (t->ndim == 0) {
        snprintf(buf, n, "scalar");
        return buf;
    }
    for (int i = 0; i < t->ndim && used < n; i++)
        used += (size_t)snprintf(buf + used, n - used, i ? "x%lld" : "%lld", (long long)t->shape[i]);
    return buf;
}

static int64_t flat_to_offset(const sq_tensor *t, int64_t i)
{
    int64_t off = t->offset;
    for (int d = t->ndim - 1; d >= 0; d--) {
        int64_t idx = i % t->shape[d];
        i /= t->shape[d];
        off += idx * t->stride[d];
    }
    return off;
}

static double load_at(const void *base, sq_dtype dt, int64_t off)
{
    switch (dt) {
    case SQ_F32: return ((const float *)base)[off];
    case SQ_F64: return ((const double *)base)[off];
    case SQ_I32: return ((const int32_t *)base)[off];
    case SQ_I64: return (double)((const int64_t *)base)[off];
    default: return 0;
    }
}

static void store_at(void *base, sq_dtype dt, int64_t off, double v)
{
    switch (dt) {
    case SQ_F32: ((float *)base)[off] = (float)v; break;
    case SQ_F64: ((double *)base)[off] = v; break;
    case SQ_I32: ((int32_t *)base)[off] = (int32_t)v; break;
    case SQ_I64: ((int64_t *)base)[off] = (int64_t)v; break;
    default: break;
    }
}

double sq_tensor_get_flat(const sq_tensor *t, int64_t i)
{
    return load_at(t->storage->data, t->dtype, flat_to_offset(t, i));
}

void sq_tensor_set_flat(sq_tensor *t, int64_t i, double v)
{
    t->storage->version++;
    store_at(t->storage->data, t->dtype, flat_to_offset(t, i), v);
}

/* Both on the GPU: one strided copy when dtypes and shapes agree; else src
 * is made contiguous, converted, and scattered into dst's layout. */
static sq_status copy_cuda(sq_ctx *ctx, sq_tensor *dst, const sq_tensor *src, int64_t n)
{
    size_t es = sq_dtype_size(src->dtype);
    if (n == 0) return SQ_OK;
    int dc = sq_tensor_is_contiguous(dst);
    if (dst->dtype == src->dtype) {
        if (dc && sq_tensor_is_contiguous(src))
            return sq_cuda_copy_d2d(ctx, sq_tensor_data(dst), sq_tensor_data(src), (size_t)n * es);
        if (sq_shape_equal(dst, src))
            return sq_cuda_copy_strided(ctx, dst->dtype, sq_tensor_data(dst), dst->stride,
                                        sq_tensor_data(src), src->stride, dst->ndim, dst->shape);
    }
    sq_tensor *c = NULL, *cv = NULL;
    sq_status st;
    SQ_CHECK(sq_tensor_contiguous_raw(ctx, (sq_tensor *)src, &c));
    if (dst->dtype != src->dtype) {
        SQ_CHECK(sq_tensor_empty_dev(ctx, SQ_CUDA, dst->dtype, c->ndim, c->shape, SQ_MEM_OTHER, &cv));
        SQ_CHECK(sq_cuda_convert(ctx, dst->dtype, sq_tensor_data(cv), c->dtype, sq_tensor_data(c), n));
        sq_tensor_release(c);
        c = cv;
        cv = NULL;
    }
    if (dc) SQ_CHECK(sq_cuda_copy_d2d(ctx, sq_tensor_data(dst), sq_tensor_data(c),
                                      (size_t)n * sq_dtype_size(dst->dtype)));
    else SQ_CHECK(sq_cuda_copy_strided(ctx, dst->dtype, sq_tensor_data(dst), dst->stride,
                                       sq_tensor_data(c), NULL, dst->ndim, dst->shape));
done:
    sq_tensor_release(c);
    sq_tensor_release(cv);
    return st;
}

/* Across devices: src contiguous on its device, its bytes moved, then an
 * ordinary same-device copy into dst's dtype and layout. */
static sq_status copy_across(sq_ctx *ctx, sq_tensor *dst, const sq_tensor *src, int64_t n)
{
    sq_device dd = sq_tensor_device(dst), sd = sq_tensor_device(src);
    size_t bytes = (size_t)n * sq_dtype_size(src->dtype);
    sq_tensor *c = NULL, *m = NULL;
    sq_status st;
    SQ_CHECK(sq_tensor_contiguous_raw(ctx, (sq_tensor *)src, &c));
    if (dst->dtype == src->dtype && sq_tensor_is_contiguous(dst)) {
        SQ_CHECK(sq_device_copy(ctx, dd, sq_tensor_data(dst), sd, sq_tensor_data(c), bytes));
    } else {
        SQ_CHECK(sq_tensor_empty_dev(ctx, dd, src->dtype, c->ndim, c->shape, SQ_MEM_OTHER, &m));
        SQ_CHECK(sq_device_copy(ctx, dd, sq_tensor_data(m), sd, sq_tensor_data(c), bytes));
        SQ_CHECK(sq_tensor_copy_(ctx, dst, m));
    }
done:
    sq_tensor_release(c);
    sq_tensor_release(m);
    return st;
}

/* Walks every element of two same-numel views in row-major order of each. */
sq_status sq_tensor_copy_(sq_ctx *ctx, sq_tensor *dst, const sq_tensor *src)
{
    dst->storage->version++;
    int64_t n = sq_tensor_numel(dst);
    if (n != sq_tensor_numel(src)) {
        char a[64], b[64];
        return sq_fail(ctx, SQ_ERR_SHAPE, "copy: %s and %s have different element counts",
                       sq_shape_str(dst, a, sizeof a), sq_shape_str(src, b, sizeof b));
    }
    if (sq_tensor_device(dst) != sq_tensor_device(src)) return copy_across(ctx, dst, src, n);
    if (sq_tensor_device(dst) == SQ_CUDA) return copy_cuda(ctx, dst, src, n);
    if (dst->dtype == src->dtype && sq_tensor_is_contiguous(dst) && sq_tensor_is_contiguous(src)) {
        if (n) memcpy(sq_tensor_data(dst), sq_tensor_data(src), (size_t)n * sq_dtype_size(dst->dtype));
        return SQ_OK;
    }
    if (dst->dtype == src->dtype && sq_shape_equal(dst, src) && dst->ndim > 0) {
        /* strided copy with an odometer over all but the last dim */
        int nd = dst->ndim;
        int64_t idx[SQ_MAX_DIMS] = {0};
        size_t es = sq_dtype_size(dst->dtype);
        int64_t inner = dst->shape[nd - 1], ds = dst->stride[nd - 1], ss = src->stride[nd - 1];
        int64_t outer = n / (inner ? inner : 1);
        char *db = dst->storage->data, *sb = src->storage->data;
        for (int64_t o = 0; o < outer && inner; o++) {
            int64_t doff = dst->offset, soff = src->offset;
            for (int d = 0; d < nd - 1; d++) {
                doff += idx[d] * dst->stride[d];
                soff += idx[d] * src->stride[d];
            }
            if (es == 4) {
                uint32_t *dp = (uint32_t *)db + doff;
                const uint32_t *sp = (const uint32_t *)sb + soff;
                for (int64_t j = 0; j < inner; j++) dp[j * ds] = sp[j * ss];
            } else {
                uint64_t *dp = (uint64_t *)db + doff;
                const uint64_t *sp = (const uint64_t *)sb + soff;
                for (int64_t j = 0; j < inner; j++) dp[j * ds] = sp[j * ss];
            }
            for (int d = nd - 2; d >= 0; d--) {
                if (++idx[d] < dst->shape[d]) break;
                idx[d] = 0;
            }
        }
        return SQ_OK;
    }
    for (int64_t i = 0; i < n; i++) sq_tensor_set_flat(dst, i, sq_tensor_get_flat(src, i));
    return SQ_OK;
}

sq_status sq_tensor_clone(sq_ctx *ctx, const sq_tensor *t, sq_tensor **out)
{
    sq_status st = sq_tensor_empty_like(ctx, t, out);
    if (st != SQ_OK) return st;
    st = sq_tensor_copy_(ctx, *out, t);
    if (st != SQ_OK) {
        sq_tensor_release(*out);
        *out = NULL;
    }
    return st;
}

sq_status sq_tensor_contiguous_raw(sq_ctx *ctx, sq_tensor *t, sq_tensor **out)
{
    if (sq_tensor_is_contiguous(t)) {
        sq_tensor_retain(t);
        *out = t;
        return SQ_OK;
    }
    return sq_tensor_clone(ctx, t, out);
}

sq_status sq_tensor_to_dtype(sq_ctx *ctx, const sq_tensor *t, sq_dtype dt, sq_tensor **out)
{
    SQ_TRY(sq_tensor_empty_dev(ctx, sq_tensor_device(t), dt, t->ndim, t->shape, SQ_MEM_OTHER, out));
    sq_status st = sq_tensor_copy_(ctx, *out, t);
    if (st != SQ_OK) {
        sq_tensor_release(*out);
        *out = NULL;
    }
    return st;
}

sq_status sq_tensor_to_device(sq_ctx *ctx, sq_tensor *t, sq_device dev, sq_tensor **out)
{
    *out = NULL;
    if (sq_tensor_device(t) == dev) {
        sq_tensor_retain(t);
        *out = t;
        return SQ_OK;
    }
    SQ_TRY(sq_tensor_empty_dev(ctx, dev, t->dtype, t->ndim, t->shape, t->storage->cat, out));
    sq_status st = sq_tensor_copy_(ctx, *out, t);
    if (st != SQ_OK) {
        sq_tensor_release(*out);
        *out = NULL;
        return st;
    }
    (*out)->requires_grad = t->requires_grad && !t->grad_fn;
    return SQ_OK;
}

/* A non-contiguous GPU view is filled through a broadcast copy of one value. */
static sq_status fill_cuda(sq_ctx *ctx, sq_tensor *t, double v, int64_t n)
{
    if (n == 0) return SQ_OK;
    if (sq_tensor_is_contiguous(t)) return sq_cuda_fill(ctx, t->dtype, sq_tensor_data(t), n, v);
    sq_tensor *one;
    SQ_TRY(sq_tensor_empty_dev(ctx, SQ_CUDA, t->dtype, 0, NULL, SQ_MEM_WORKSPACE, &one));
    int64_t zero[SQ_MAX_DIMS] = {0};
    sq_status st = sq_cuda_fill(ctx, t->dtype, sq_tensor_data(one), 1, v);
    if (st == SQ_OK)
        st = sq_cuda_copy_strided(ctx, t->dtype, sq_tensor_data(t), t->stride, sq_tensor_data(one),
                                  zero, t->ndim, t->shape);
    sq_tensor_release(one);
    return st;
}

sq_status sq_tensor_fill_(sq_ctx *ctx, sq_tensor *t, double v)
{
    t->storage->version++;
    int64_t n = sq_tensor_numel(t);
    if (sq_tensor_device(t) == SQ_CUDA) return fill_cuda(ctx, t, v, n);
    if (sq_tensor_is_contiguous(t)) {
        void *p = sq_tensor_data(t);
        switch (t->dtype) {
        case SQ_F32: for (int64_t i = 0; i < n; i++) ((float *)p)[i] = (float)v; break;
        case SQ_F64: for (int64_t i = 0; i < n; i++) ((double *)p)[i] = v; break;
        case SQ_I32: for (int64_t i = 0; i < n; i++) ((int32_t *)p)[i] = (int32_t)v; break;
        case SQ_I64: for (int64_t i = 0; i < n; i++) ((int64_t *)p)[i] = (int64_t)v; break;
        default: break;
        }
        return SQ_OK;
    }
    for (int64_t i = 0; i < n; i++) sq_tensor_set_flat(t, i, v);
    return SQ_OK;
}

sq_status sq_view_raw(sq_ctx *ctx, sq_tensor *t, int ndim, const int64_t *shape,
                      const int64_t *stride, int64_t offset, sq_tensor **out)
{
    *out = NULL;
    if (ndim < 0 || ndim > SQ_MAX_DIMS)
        return sq_fail(ctx, SQ_ERR_ARG, "view rank %d outside 0..%d", ndim, SQ_MAX_DIMS);
    /* bounds: the largest reachable element must lie inside the storage */
    int64_t hi = offset, n = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0 || stride[i] < 0)
            return sq_fail(ctx, SQ_ERR_ARG, "view: negative size or stride in dim %d", i);
        int64_t reach;
        if (__builtin_mul_overflow(n, shape[i], &n) ||
            (shape[i] > 0 && (__builtin_mul_overflow(shape[i] - 1, stride[i], &reach) ||
                              __builtin_add_overflow(hi, reach, &hi))))
            return sq_fail(ctx, SQ_ERR_ARG, "view: size or extent overflows in dim %d", i);
    }
    int64_t cap = (int64_t)(t->storage->nbytes / sq_dtype_size(t->dtype));
    if (n > 0 && (offset < 0 || hi >= cap))
        return sq_fail(ctx, SQ_ERR_ARG, "view reaches element %lld of a storage of %lld",
                       (long long)hi, (long long)cap);
    sq_tensor *v = calloc(1, sizeof *v);
    if (!v) return sq_fail(ctx, SQ_ERR_NOMEM, "out of host memory allocating a view");
    v->refcount = 1;
    v->storage = t->storage;
    sq_storage_retain(t->storage);
    v->offset = offset;
    v->ndim = ndim;
    v->dtype = t->dtype;
    for (int i = 0; i < ndim; i++) {
        v->shape[i] = shape[i];
        v->stride[i] = stride[i];
    }
    *out = v;
    return SQ_OK;
}

sq_status sq_broadcast_shape(sq_ctx *ctx, const char *op, const sq_tensor *a, const sq_tensor *b,
                             int *ndim, int64_t *shape)
{
    int nd = a->ndim > b->ndim ? a->ndim : b->ndim;
    for (int i = 0; i < nd; i++) {
        int ia = a->ndim - nd + i, ib = b->ndim - nd + i;
        int64_t sa = ia >= 0 ? a->shape[ia] : 1, sb = ib >= 0 ? b->shape[ib] : 1;
        if (sa != sb && sa != 1 && sb != 1) {
            char x[64], y[64];
            return sq_fail(ctx, SQ_ERR_SHAPE, "%s: shapes %s and %s do not broadcast (dim %d: %lld vs %lld)",
                           op, sq_shape_str(a, x, sizeof x), sq_shape_str(b, y, sizeof y), i,
                           (long long)sa, (long long)sb);
        }
        shape[i] = sa == 1 ? sb : sa;
    }
    *ndim = nd;
    return SQ_OK;
}
