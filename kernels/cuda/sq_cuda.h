/* sq_cuda.h — the CUDA device layer: one GPU context per engine context.
 *
 * sq_cuda_init attaches a struct sq_cuda_ctx to an sq_ctx (ctx->cuda).  It
 * owns everything the GPU needs that would otherwise be a global: the
 * stream every launch and copy goes to, the cuBLAS handle and its
 * workspace, the Philox RNG state used by dropout, the caching allocator,
 * the pinned staging buffers for host<->device copies, and a small device
 * word where index kernels report out-of-range indices.
 *
 * Memory: sq_cuda_alloc/sq_cuda_free_block are the allocator behind
 * sq_device_alloc(ctx, SQ_CUDA, ...).  They do not touch ctx->mem: the
 * storage layer charges the bytes a tensor asked for (sq_mem_add on
 * SQ_CUDA), exactly as on the CPU.  What the cache rounds up and keeps
 * for reuse is reported separately by sq_cuda_mem_get.
 *
 * Ordering: all work is asynchronous on the context stream.  A device
 * buffer freed to the cache may be handed out again at once, which is safe
 * because every user of the context runs on that same stream.
 * sq_cuda_copy_d2h and sq_cuda_sync wait for the stream and then report any
 * error recorded by a kernel since the last check (e.g. an embedding index
 * out of range), as a status with a message.
 *
 * Every call returns a status and leaves a message in ctx->err on failure;
 * none aborts, and all of them are safe on a machine without a GPU (they
 * fail with SQ_ERR_DEVICE). */
#ifndef SQ_CUDA_H
#define SQ_CUDA_H

#ifdef __cplusplus
extern "C" { /* the engine is C: its declarations keep C linkage in .cu files */
#endif

#include "sq_base.h"

struct sq_cuda_ctx; /* opaque; defined in sq_cuda_internal.h */

/* 1 when a CUDA device and a working driver are present.  Never fails. */
int sq_cuda_available(void);

/* Creates ctx->cuda on GPU `device` (0-based).  The RNG is seeded from
 * ctx->rng.seed.  Fails with SQ_ERR_DEVICE (message names the CUDA error)
 * when there is no GPU or driver, SQ_ERR_ARG for a bad device number,
 * SQ_ERR_STATE when ctx->cuda is already set.  On failure ctx->cuda stays
 * NULL and nothing is leaked. */
sq_status sq_cuda_init(sq_ctx *ctx, int device);
/* Waits for the stream, frees every device block (cached and live), the
 * handles and the staging buffers; sets ctx->cuda = NULL.  NULL-safe.
 * Release every CUDA tensor of ctx first: blocks still live are freed too. */
void sq_cuda_free(sq_ctx *ctx);

/* "NVIDIA H100 80GB HBM3 (device 0, sm_90, 132 SMs, 79.1 GiB)" into buf. */
const char *sq_cuda_device_str(const sq_ctx *ctx, char *buf, size_t n);

/* ---- options carried in the context ----------------------------------- */
/* float32 GEMMs use TF32 tensor cores when on (default off: exact fp32).
 * Kept in ctx->cuda_tf32, so it may be set before the backend exists. */
void sq_cuda_set_tf32(sq_ctx *ctx, int on);
int sq_cuda_get_tf32(const sq_ctx *ctx);
/* When on, every launch is followed by a stream synchronize so that an
 * execution error is reported by the call that caused it (tests, debugging). */
void sq_cuda_set_sync_launches(sq_ctx *ctx, int on);
/* Philox state for dropout: (seed, offset); each dropout call uses one
 * offset and advances it.  Reseeding sets offset 0. */
void sq_cuda_rng_seed(sq_ctx *ctx, uint64_t seed);
void sq_cuda_rng_state(const sq_ctx *ctx, uint64_t *seed, uint64_t *offset);

/* ---- memory -------------------------------------------------------------- */
/* Device memory for nbytes (256-byte aligned; 0 bytes gives the smallest
 * block).  Served from the cache's size class or by cudaMalloc; on
 * cudaErrorMemoryAllocation the cache is released and cudaMalloc retried
 * once, then SQ_ERR_NOMEM with a message naming the bytes requested and the
 * device's free/total memory.  *out: caller owns, free with sq_cuda_free_block. */
sq_status sq_cuda_alloc(sq_ctx *ctx, size_t nbytes, void **out);
/* Returns a block to the cache (NULL-safe; never calls cudaFree). */
void sq_cuda_free_block(sq_ctx *ctx, void *p);
/* Gives every cached (free) block back to the driver. */
void sq_cuda_empty_cache(sq_ctx *ctx);
/* peak_reserved restarts from the current reservation. */
void sq_cuda_mem_reset_peak(sq_ctx *ctx);

typedef struct {
    int64_t requested;      /* bytes asked for by live blocks */
    int64_t in_use;         /* bytes of live blocks after size-class rounding */
    int64_t cached;         /* bytes of free blocks kept for reuse */
    int64_t reserved;       /* in_use + cached: what cudaMalloc holds for the cache */
    int64_t peak_reserved;
    int64_t live_blocks;
    int64_t cuda_mallocs;   /* cudaMalloc calls made by the cache */
    int64_t cache_hits;     /* allocations served from a free list */
    int64_t cache_flushes;  /* times the cache was released to retry an allocation */
    int64_t backend_device; /* device bytes outside the cache (cuBLAS workspace, error word) */
    int64_t backend_pinned; /* pinned host bytes (copy staging) */
} sq_cuda_mem_stats;
void sq_cuda_mem_get(const sq_ctx *ctx, sq_cuda_mem_stats *out);

/* ---- copies and synchronisation -------------------------------------------- */
/* host -> device through pinned staging, asynchronous on the stream: the
 * host buffer may be reused as soon as this returns. */
sq_status sq_cuda_copy_h2d(sq_ctx *ctx, void *dst_dev, const void *src_host, size_t nbytes);
/* device -> host; returns once the bytes are in dst_host (waits for the
 * stream) and reports pending kernel errors. */
sq_status sq_cuda_copy_d2h(sq_ctx *ctx, void *dst_host, const void *src_dev, size_t nbytes);
/* device -> device, asynchronous on the stream. */
sq_status sq_cuda_copy_d2d(sq_ctx *ctx, void *dst_dev, const void *src_dev, size_t nbytes);
/* Waits for all work on the stream; reports execution errors and
 * out-of-range indices recorded by kernels since the last check. */
sq_status sq_cuda_sync(sq_ctx *ctx);

/* ---- timing ------------------------------------------------------------------ */
typedef struct sq_cuda_event sq_cuda_event; /* opaque: a CUDA event with timing */
/* *out: caller owns, free with sq_cuda_event_free (NULL-safe). */
sq_status sq_cuda_event_new(sq_ctx *ctx, sq_cuda_event **out);
/* Records the event on the context stream (after the work queued so far). */
sq_status sq_cuda_event_record(sq_ctx *ctx, sq_cuda_event *ev);
/* Milliseconds between two recorded events; waits for `stop`. */
sq_status sq_cuda_event_elapsed(sq_ctx *ctx, sq_cuda_event *start, sq_cuda_event *stop, double *ms);
void sq_cuda_event_free(sq_cuda_event *ev);

/* Where GPU time goes, without a profiler: between begin and end an event
 * is recorded after every kernel launch and device copy; end waits for the
 * GPU and writes a table into buf (kernel, launches, total ms, share),
 * largest first.  Each launch is charged the time since the previous
 * event, so the figures are kernel durations when the GPU is kept busy
 * (the host runs ahead) and include idle gaps otherwise.  At most `cap`
 * launches are recorded (the rest are counted as dropped). */
sq_status sq_cuda_profile_begin(sq_ctx *ctx, int cap);
sq_status sq_cuda_profile_end(sq_ctx *ctx, char *buf, size_t n);

#ifdef __cplusplus
}
#endif

#endif
