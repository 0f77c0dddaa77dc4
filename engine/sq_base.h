/* sq_base.h — status codes, dtypes, devices and the engine context.
 *
 * Every engine call takes a context (sq_ctx) and returns an sq_status.
 * On failure the context holds a message naming the problem; only the
 * Lua bindings turn that into an error.  The context owns everything that
 * would otherwise be a global: the RNG, memory accounting, grad mode and
 * work counters.  No mutable globals exist anywhere in the engine. */
#ifndef SQ_BASE_H
#define SQ_BASE_H

#include <stddef.h>
#include <stdint.h>

typedef enum {
    SQ_OK = 0,
    SQ_ERR_ARG,         /* bad argument value */
    SQ_ERR_SHAPE,       /* shapes do not fit */
    SQ_ERR_DTYPE,       /* dtype not supported by this op */
    SQ_ERR_NOMEM,       /* allocation failed (host or device) */
    SQ_ERR_IO,          /* file missing / unreadable / unwritable */
    SQ_ERR_FORMAT,      /* file present but corrupt or mislabelled */
    SQ_ERR_NUMERIC,     /* solver did not converge, NaN where forbidden */
    SQ_ERR_STATE,       /* object used in the wrong state (e.g. graph freed) */
    SQ_ERR_DEVICE,      /* device unavailable or device call failed */
    SQ_ERR_UNSUPPORTED
} sq_status;

typedef enum { SQ_F32 = 0, SQ_F64, SQ_I32, SQ_I64, SQ_NDTYPE } sq_dtype;
typedef enum { SQ_CPU = 0, SQ_CUDA, SQ_NDEVICE } sq_device;

/* Memory categories: every live byte belongs to exactly one. */
typedef enum {
    SQ_MEM_PARAM = 0,   /* model parameters */
    SQ_MEM_GRAD,        /* parameter gradients */
    SQ_MEM_OPTIM,       /* optimizer state */
    SQ_MEM_SAVED,       /* tensors held by autograd nodes for backward */
    SQ_MEM_WORKSPACE,   /* scratch inside an op */
    SQ_MEM_OTHER,       /* activations, inputs, temporaries */
    SQ_MEM_NCAT
} sq_mem_cat;

typedef struct {
    int64_t cur[SQ_NDEVICE][SQ_MEM_NCAT];
    int64_t peak[SQ_NDEVICE][SQ_MEM_NCAT];
    int64_t total_cur[SQ_NDEVICE];
    int64_t total_peak[SQ_NDEVICE];
    /* cumulative bytes of storages created on each device (never decreases;
     * the Lua layer reads it to collect dead tensors under device pressure) */
    int64_t allocated[SQ_NDEVICE];
} sq_mem;

/* Work counters: prove that skipped work was skipped. */
typedef struct {
    int64_t gemm_calls;        /* every GEMM issued by the engine */
    double  gemm_flops;        /* 2*M*N*K summed */
    int64_t weight_grad_gemms; /* GEMMs computing a parameter gradient */
} sq_stats;

/* xoshiro256** state; one generator per context. */
typedef struct { uint64_t s[4]; uint64_t seed; } sq_rng;

typedef struct sq_ctx {
    char err[1024];
    sq_mem mem;
    sq_stats stats;
    sq_rng rng;
    int grad_enabled;      /* 0 inside no_grad */
    int num_threads;       /* BLAS threads requested (0 = library default) */
    /* The CUDA backend's state (stream, cuBLAS handle, RNG, allocator cache;
     * kernels/cuda/sq_cuda.h).  NULL until sq_cuda_init -- which the first
     * CUDA allocation calls (sq_device_alloc), so a CPU-only run never
     * touches the driver; owned by the ctx, released by sq_cuda_free
     * (sq_device_release_all).  Always NULL in CPU-only builds. */
    struct sq_cuda_ctx *cuda;
    /* CUDA options, valid before the backend exists: the GPU the lazy init
     * picks, and whether float32 GEMMs may use TF32 tensor cores (default 0:
     * exact float32; a run that turns it on records it). */
    int cuda_device;
    int cuda_tf32;
} sq_ctx;

/* ctx: caller owns; sq_ctx_init fills a caller-provided struct. */
void sq_ctx_init(sq_ctx *ctx, uint64_t seed);
/* Sets ctx->err from a printf format and returns st (for `return sq_fail(...)`). */
sq_status sq_fail(sq_ctx *ctx, sq_status st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
const char *sq_status_name(sq_status st);
const char *sq_dtype_name(sq_dtype dt);
size_t sq_dtype_size(sq_dtype dt);
const char *sq_device_name(sq_device dev);
const char *sq_mem_cat_name(sq_mem_cat c);

/* Memory accounting (exact: called by every allocation and free). */
void sq_mem_add(sq_ctx *ctx, sq_device dev, sq_mem_cat cat, int64_t bytes);
void sq_mem_sub(sq_ctx *ctx, sq_device dev, sq_mem_cat cat, int64_t bytes);
/* Peaks restart from the current values. */
void sq_mem_reset_peak(sq_ctx *ctx);

/* Status plumbing: return on failure / jump to `done:` with `st` set. */
#define SQ_TRY(expr)                     \
    do {                                 \
        sq_status sq_try_st_ = (expr);   \
        if (sq_try_st_ != SQ_OK) return sq_try_st_; \
    } while (0)

/* Jump to a cleanup label on failure (st must be a local sq_status). */
#define SQ_CHECK(expr)                   \
    do {                                 \
        st = (expr);                     \
        if (st != SQ_OK) goto done;      \
    } while (0)

/* RNG */
void sq_rng_seed(sq_rng *r, uint64_t seed);
uint64_t sq_rng_next(sq_rng *r);
double sq_rng_uniform(sq_rng *r);            /* [0,1) */
double sq_rng_normal(sq_rng *r);             /* N(0,1) */
uint64_t sq_rng_below(sq_rng *r, uint64_t n); /* [0,n) unbiased */

#endif
