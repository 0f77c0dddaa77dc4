/* sq_cuda_internal.h — what the CUDA source files share and nobody else sees:
 * the context struct, the caching allocator's state, launch checking,
 * workspace helpers, the index-error word and the Philox generator. */
#ifndef SQ_CUDA_INTERNAL_H
#define SQ_CUDA_INTERNAL_H

#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "sq_cuda.h"
#include "sq_cuda_kernels.h"

/* ---- caching allocator ------------------------------------------------------
 * Sizes are rounded to a class: multiples of 512 B up to 8 KiB, then 8
 * classes per power of two (at most 12.5% waste).  Each class keeps a free
 * list; a live-block table (open addressing on the pointer) remembers each
 * block's class and requested size for free and for the statistics. */
#define SQ_CUDA_NCLASS 512

typedef struct {
    void **p;
    int n, cap;
} sq_cuda_freelist;

typedef struct {
    void *ptr;        /* NULL = empty slot */
    size_t cls_bytes; /* rounded size actually allocated */
    size_t req_bytes; /* what the caller asked for */
} sq_cuda_live;

typedef struct {
    sq_cuda_freelist free[SQ_CUDA_NCLASS];
    sq_cuda_live *live;
    size_t live_cap; /* power of two */
    sq_cuda_mem_stats st;
} sq_cuda_cache;

/* First out-of-range index seen by a kernel since the last check. */
typedef struct {
    unsigned int code;   /* 0 = none */
    int kernel;          /* sq_cuda_kid */
    long long index;
    long long bound;
} sq_cuda_devflag;

typedef enum {
    SQ_CK_NONE = 0, SQ_CK_EMBEDDING, SQ_CK_EMBEDDING_BWD, SQ_CK_CROSS_ENTROPY,
    SQ_CK_CROSS_ENTROPY_BWD, SQ_CK_INDEX_SELECT, SQ_CK_INDEX_SELECT_BWD, SQ_CK_GATHER,
    SQ_CK_GATHER_BWD, SQ_CK_MAX_POOL_BWD, SQ_CK_REDUCE_BWD, SQ_CK_COUNT
} sq_cuda_kid;

#define SQ_CUDA_STAGE_BYTES ((size_t)4 << 20)

/* A cuBLASLt plan for one linear shape (sq_cuda_linear): descriptors and the
 * heuristic's algorithm, made once per (dtype, TF32, bias, R, K, M). */
typedef struct {
    int used, ok; /* ok 0: Lt found no algorithm; the shape takes the fallback */
    int dt, tf32, bias;
    int64_t R, K, M;
    cublasLtMatmulDesc_t op;
    cublasLtMatrixLayout_t a, b, c;
    cublasLtMatmulAlgo_t algo;
} sq_cuda_ltplan;
#define SQ_CUDA_LTPLANS 64

struct sq_cuda_ctx {
    int device;
    char name[256];
    int cc_major, cc_minor, sm_count;
    size_t total_mem;
    cudaStream_t stream;
    cublasHandle_t cublas;
    cublasLtHandle_t lt;                    /* shares cublas_ws (same stream) */
    sq_cuda_ltplan lt_plans[SQ_CUDA_LTPLANS];
    int lt_next;                            /* round-robin slot to replace */
    void *cublas_ws;
    size_t cublas_ws_bytes;
    int sync_launches;
    uint64_t rng_seed, rng_offset;
    void *stage[2];          /* pinned host staging for copies */
    cudaEvent_t stage_ev[2]; /* last copy that used each staging buffer */
    sq_cuda_devflag *flag;   /* device word for index errors */
    sq_cuda_cache cache;
    /* launch profiling (sq_cuda_profile_begin/end): an event after every
     * launch or device copy, with the name of what was launched */
    int prof_on, prof_n, prof_cap;
    cudaEvent_t *prof_ev;
    const char **prof_name;
};

/* ---- host helpers (sq_cuda.cu) ------------------------------------------------ */
/* SQ_ERR_STATE unless ctx->cuda is set. */
sq_status sq_cuda_need(sq_ctx *ctx, const char *what);
/* After a launch: checks the launch (and, with sync_launches, its
 * execution); on failure formats "cuda kernel NAME (sizes) failed: ...". */
sq_status sq_cuda_launched(sq_ctx *ctx, const char *kernel, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* With profiling on, records an event named `what` after the work queued so far. */
void sq_cuda_prof_mark(sq_ctx *ctx, const char *what);
/* Workspace from the cache, charged to SQ_MEM_WORKSPACE while held. */
sq_status sq_cuda_ws_alloc(sq_ctx *ctx, size_t nbytes, void **out);
void sq_cuda_ws_free(sq_ctx *ctx, void *p, size_t nbytes);
const char *sq_cuda_kernel_name(int kid);
/* Column sums of contiguous a (outer, rows, D) [times b, same layout]:
 * sum_a[o,d] = scale * sum_r a[o,r,d], sum_ab[o,d] = scale * sum_r a*b.
 * Either output may be NULL (b is only read for sum_ab).  Rows are split
 * over blocks and the partial sums added in a fixed order, so the result
 * is deterministic (sq_cuda_reduce.cu).  Not launch-checked: the caller's
 * sq_cuda_launched covers it. */
sq_status sq_cuda_colsum(sq_ctx *ctx, sq_dtype dt, void *sum_a, void *sum_ab, const void *a,
                         const void *b, int64_t outer, int64_t rows, int64_t D, double scale);

/* Grid for n independent items with grid-stride loops. */
static inline unsigned sq_cuda_grid(int64_t n, int threads)
{
    int64_t g = (n + threads - 1) / threads;
    if (g < 1) g = 1;
    if (g > (1 << 20)) g = 1 << 20;
    return (unsigned)g;
}

/* Common argument checks (host). */
static inline sq_status sq_cuda_need_float(sq_ctx *ctx, const char *k, sq_dtype dt)
{
    if (dt != SQ_F32 && dt != SQ_F64)
        return sq_fail(ctx, SQ_ERR_DTYPE, "%s: dtype must be float32 or float64, got %s", k,
                       sq_dtype_name(dt));
    return SQ_OK;
}

#define SQ_CUDA_ENTER(ctx, name)  SQ_TRY(sq_cuda_need((ctx), (name)))
#define SQ_CUDA_NONNEG(ctx, name, v)                                                         \
    do {                                                                                     \
        if ((v) < 0)                                                                         \
            return sq_fail((ctx), SQ_ERR_ARG, "%s: %s = %lld must be >= 0", (name), #v,      \
                           (long long)(v));                                                  \
    } while (0)

/* ---- device helpers ------------------------------------------------------------ */
#ifdef __CUDACC__
#define SQ_GRID_LOOP(i, n)                                                                   \
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n);                \
         i += (int64_t)gridDim.x * blockDim.x)

/* Records the first bad index (later ones are dropped). */
__device__ static inline void sq_cuda_report_index(sq_cuda_devflag *f, int kid, long long index,
                                                   long long bound)
{
    if (atomicCAS(&f->code, 0u, 1u) == 0u) {
        f->kernel = kid;
        f->index = index;
        f->bound = bound;
    }
}

template <typename T> __device__ static inline T sq_nan();
template <> __device__ inline float sq_nan<float>() { return __int_as_float(0x7fc00000); }
template <> __device__ inline double sq_nan<double>() { return __longlong_as_double(0x7ff8000000000000LL); }
template <typename T> __device__ static inline T sq_inf();
template <> __device__ inline float sq_inf<float>() { return __int_as_float(0x7f800000); }
template <> __device__ inline double sq_inf<double>() { return __longlong_as_double(0x7ff0000000000000LL); }

/* Warp and block sums (blockDim.x a multiple of 32, <= 1024). */
template <typename T> __device__ static inline T sq_warp_sum(T v)
{
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
template <typename T> __device__ static inline T sq_warp_max(T v)
{
    for (int o = 16; o > 0; o >>= 1) v = fmax(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}
/* Every thread gets the block's total; sh holds 32 values of T. */
template <typename T> __device__ static inline T sq_block_sum(T v, T *sh)
{
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
    v = sq_warp_sum(v);
    __syncthreads(); /* sh may still be read by a previous call */
    if (lane == 0) sh[w] = v;
    __syncthreads();
    v = lane < nw ? sh[lane] : (T)0;
    return sq_warp_sum(v);
}
template <typename T> __device__ static inline T sq_block_max(T v, T *sh)
{
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
    v = sq_warp_max(v);
    __syncthreads();
    if (lane == 0) sh[w] = v;
    __syncthreads();
    v = lane < nw ? sh[lane] : -sq_inf<T>();
    return sq_warp_max(v);
}

/* Philox4x32-10 (Salmon et al. 2011), the generator cuRAND and PyTorch use;
 * written out so that a CPU reference can reproduce masks bit for bit. */
__host__ __device__ static inline void sq_philox4x32_10(const unsigned ctr_in[4],
                                                        const unsigned key_in[2], unsigned out[4])
{
    unsigned c0 = ctr_in[0], c1 = ctr_in[1], c2 = ctr_in[2], c3 = ctr_in[3];
    unsigned k0 = key_in[0], k1 = key_in[1];
    for (int r = 0; r < 10; r++) {
        unsigned long long p0 = (unsigned long long)0xD2511F53u * c0;
        unsigned long long p1 = (unsigned long long)0xCD9E8D57u * c2;
        unsigned hi0 = (unsigned)(p0 >> 32), lo0 = (unsigned)p0;
        unsigned hi1 = (unsigned)(p1 >> 32), lo1 = (unsigned)p1;
        unsigned n0 = hi1 ^ c1 ^ k0, n1 = lo1, n2 = hi0 ^ c3 ^ k1, n3 = lo0;
        c0 = n0; c1 = n1; c2 = n2; c3 = n3;
        k0 += 0x9E3779B9u;
        k1 += 0xBB67AE85u;
    }
    out[0] = c0; out[1] = c1; out[2] = c2; out[3] = c3;
}
#endif /* __CUDACC__ */

#endif
