/* sq_cuda.cu — the CUDA context: init/free, caching allocator, copies,
 * synchronisation and error reporting. */
#include "sq_cuda_internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- size classes -------------------------------------------------------------- */

/* Multiples of 512 up to 8 KiB (classes 0..15), then 8 per power of two. */
static int size_class(size_t n, size_t *cls_bytes)
{
    if (n <= 512) n = 512;
    if (n <= 8192) {
        size_t c = (n + 511) / 512;
        *cls_bytes = c * 512;
        return (int)c - 1;
    }
    int k = 63 - __builtin_clzll((unsigned long long)(n - 1)); /* 2^k < n <= 2^(k+1) */
    size_t step = (size_t)1 << (k - 3);
    size_t sub = (n - ((size_t)1 << k) + step - 1) / step; /* 1..8 */
    *cls_bytes = ((size_t)1 << k) + sub * step;
    return 16 + (k - 13) * 8 + (int)(sub - 1);
}

/* ---- live-block table ------------------------------------------------------------- */

static size_t ptr_hash(const void *p, size_t cap)
{
    uint64_t x = (uint64_t)(uintptr_t)p;
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    return (size_t)x & (cap - 1);
}

static int live_grow(sq_cuda_cache *c)
{
    size_t ncap = c->live_cap ? c->live_cap * 2 : 1024;
    sq_cuda_live *nl = (sq_cuda_live *)calloc(ncap, sizeof *nl);
    if (!nl) return 0;
    for (size_t i = 0; i < c->live_cap; i++) {
        if (!c->live[i].ptr) continue;
        size_t h = ptr_hash(c->live[i].ptr, ncap);
        while (nl[h].ptr) h = (h + 1) & (ncap - 1);
        nl[h] = c->live[i];
    }
    free(c->live);
    c->live = nl;
    c->live_cap = ncap;
    return 1;
}

static int live_insert(sq_cuda_cache *c, void *p, size_t cls, size_t req)
{
    if ((size_t)(c->st.live_blocks + 1) * 2 > c->live_cap && !live_grow(c)) return 0;
    size_t h = ptr_hash(p, c->live_cap);
    while (c->live[h].ptr) h = (h + 1) & (c->live_cap - 1);
    c->live[h].ptr = p;
    c->live[h].cls_bytes = cls;
    c->live[h].req_bytes = req;
    return 1;
}

/* Removes p (backward-shift deletion keeps probe chains intact). */
static int live_remove(sq_cuda_cache *c, void *p, sq_cuda_live *out)
{
    if (!c->live_cap) return 0;
    size_t m = c->live_cap - 1, h = ptr_hash(p, c->live_cap);
    while (c->live[h].ptr != p) {
        if (!c->live[h].ptr) return 0;
        h = (h + 1) & m;
    }
    *out = c->live[h];
    size_t i = h, j = h;
    for (;;) {
        j = (j + 1) & m;
        if (!c->live[j].ptr) break;
        size_t home = ptr_hash(c->live[j].ptr, c->live_cap);
        /* move j into the hole at i unless its home lies cyclically in (i, j] */
        int keep = (i <= j) ? (i < home && home <= j) : (i < home || home <= j);
        if (keep) continue;
        c->live[i] = c->live[j];
        i = j;
    }
    c->live[i].ptr = NULL;
    return 1;
}

/* ---- cache ---------------------------------------------------------------------- */

static void cache_release_free(sq_cuda_ctx *cu)
{
    sq_cuda_cache *c = &cu->cache;
    for (int k = 0; k < SQ_CUDA_NCLASS; k++) {
        sq_cuda_freelist *f = &c->free[k];
        for (int i = 0; i < f->n; i++) cudaFree(f->p[i]);
        f->n = 0;
    }
    c->st.reserved -= c->st.cached;
    c->st.cached = 0;
}

static sq_status nomem(sq_ctx *ctx, size_t req, size_t cls, cudaError_t e)
{
    size_t fr = 0, tot = 0;
    cudaMemGetInfo(&fr, &tot);
    (void)cudaGetLastError();
    return sq_fail(ctx, SQ_ERR_NOMEM,
                   "cuda: out of device memory allocating %zu bytes (%.1f MiB, size class %zu) on "
                   "device %d: %.1f MiB free of %.1f MiB total, %.1f MiB held by this context (%s)",
                   req, (double)req / 1048576.0, cls, ctx->cuda->device, (double)fr / 1048576.0,
                   (double)tot / 1048576.0, (double)ctx->cuda->cache.st.reserved / 1048576.0,
                   cudaGetErrorString(e));
}

sq_status sq_cuda_alloc(sq_ctx *ctx, size_t nbytes, void **out)
{
    *out = NULL;
    SQ_CUDA_ENTER(ctx, "cuda alloc");
    sq_cuda_ctx *cu = ctx->cuda;
    sq_cuda_cache *c = &cu->cache;
    if (nbytes > ((size_t)1 << 62))
        return sq_fail(ctx, SQ_ERR_NOMEM, "cuda: cannot allocate %zu bytes (beyond any device)", nbytes);
    size_t cls = 0;
    int k = size_class(nbytes, &cls);
    if (k >= SQ_CUDA_NCLASS)
        return sq_fail(ctx, SQ_ERR_NOMEM, "cuda: cannot allocate %zu bytes (beyond any device)", nbytes);
    void *p = NULL;
    sq_cuda_freelist *f = &c->free[k];
    if (f->n > 0) {
        p = f->p[--f->n];
        c->st.cached -= (int64_t)cls;
        c->st.cache_hits++;
    } else {
        cudaError_t e = cudaMalloc(&p, cls);
        if (e == cudaErrorMemoryAllocation) {
            (void)cudaGetLastError(); /* not sticky: clear it so later launch checks stay clean */
            c->st.cache_flushes++;
            cache_release_free(cu);
            e = cudaMalloc(&p, cls);
        }
        if (e != cudaSuccess) {
            (void)cudaGetLastError();
            if (e == cudaErrorMemoryAllocation) return nomem(ctx, nbytes, cls, e);
            return sq_fail(ctx, SQ_ERR_DEVICE, "cuda: cudaMalloc(%zu) failed: %s", cls,
                           cudaGetErrorString(e));
        }
        c->st.cuda_mallocs++;
        c->st.reserved += (int64_t)cls;
        if (c->st.reserved > c->st.peak_reserved) c->st.peak_reserved = c->st.reserved;
    }
    if (!live_insert(c, p, cls, nbytes)) {
        cudaFree(p);
        c->st.reserved -= (int64_t)cls;
        return sq_fail(ctx, SQ_ERR_NOMEM, "cuda: out of host memory for the allocator's table");
    }
    c->st.live_blocks++;
    c->st.in_use += (int64_t)cls;
    c->st.requested += (int64_t)nbytes;
    *out = p;
    return SQ_OK;
}

void sq_cuda_free_block(sq_ctx *ctx, void *p)
{
    if (!p || !ctx || !ctx->cuda) return;
    sq_cuda_ctx *cu = ctx->cuda;
    sq_cuda_cache *c = &cu->cache;
    sq_cuda_live b;
    if (!live_remove(c, p, &b)) return; /* not ours: ignore rather than corrupt the cache */
    c->st.live_blocks--;
    c->st.in_use -= (int64_t)b.cls_bytes;
    c->st.requested -= (int64_t)b.req_bytes;
    size_t cls = 0;
    int k = size_class(b.req_bytes, &cls);
    sq_cuda_freelist *f = &c->free[k];
    if (f->n == f->cap) {
        int ncap = f->cap ? f->cap * 2 : 8;
        void **np = (void **)realloc(f->p, (size_t)ncap * sizeof *np);
        if (!np) { /* cannot cache it: give it back */
            cudaFree(p);
            c->st.reserved -= (int64_t)b.cls_bytes;
            return;
        }
        f->p = np;
        f->cap = ncap;
    }
    f->p[f->n++] = p;
    c->st.cached += (int64_t)b.cls_bytes;
}

void sq_cuda_empty_cache(sq_ctx *ctx)
{
    if (ctx && ctx->cuda) cache_release_free(ctx->cuda);
}

void sq_cuda_mem_reset_peak(sq_ctx *ctx)
{
    if (ctx && ctx->cuda) ctx->cuda->cache.st.peak_reserved = ctx->cuda->cache.st.reserved;
}

void sq_cuda_mem_get(const sq_ctx *ctx, sq_cuda_mem_stats *out)
{
    memset(out, 0, sizeof *out);
    if (ctx && ctx->cuda) *out = ctx->cuda->cache.st;
}

sq_status sq_cuda_ws_alloc(sq_ctx *ctx, size_t nbytes, void **out)
{
    SQ_TRY(sq_cuda_alloc(ctx, nbytes, out));
    sq_mem_add(ctx, SQ_CUDA, SQ_MEM_WORKSPACE, (int64_t)nbytes);
    return SQ_OK;
}

void sq_cuda_ws_free(sq_ctx *ctx, void *p, size_t nbytes)
{
    if (!p) return;
    sq_mem_sub(ctx, SQ_CUDA, SQ_MEM_WORKSPACE, (int64_t)nbytes);
    sq_cuda_free_block(ctx, p);
}

/* ---- context ---------------------------------------------------------------------- */

int sq_cuda_available(void)
{
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    (void)cudaGetLastError();
    return e == cudaSuccess && n > 0;
}

static void ctx_destroy(sq_cuda_ctx *cu)
{
    if (cu->stream) cudaStreamSynchronize(cu->stream);
    cache_release_free(cu);
    for (size_t i = 0; i < cu->cache.live_cap; i++)
        if (cu->cache.live[i].ptr) cudaFree(cu->cache.live[i].ptr);
    free(cu->cache.live);
    for (int k = 0; k < SQ_CUDA_NCLASS; k++) free(cu->cache.free[k].p);
    for (int i = 0; i < SQ_CUDA_LTPLANS; i++) {
        sq_cuda_ltplan *pl = &cu->lt_plans[i];
        if (!pl->used) continue;
        if (pl->op) cublasLtMatmulDescDestroy(pl->op);
        if (pl->a) cublasLtMatrixLayoutDestroy(pl->a);
        if (pl->b) cublasLtMatrixLayoutDestroy(pl->b);
        if (pl->c) cublasLtMatrixLayoutDestroy(pl->c);
    }
    if (cu->lt) cublasLtDestroy(cu->lt);
    if (cu->cublas) cublasDestroy(cu->cublas);
    if (cu->cublas_ws) cudaFree(cu->cublas_ws);
    if (cu->flag) cudaFree(cu->flag);
    for (int i = 0; i < 2; i++) {
        if (cu->stage[i]) cudaFreeHost(cu->stage[i]);
        if (cu->stage_ev[i]) cudaEventDestroy(cu->stage_ev[i]);
    }
    for (int i = 0; i < cu->prof_cap; i++) cudaEventDestroy(cu->prof_ev[i]);
    free(cu->prof_ev);
    free(cu->prof_name);
    if (cu->stream) cudaStreamDestroy(cu->stream);
    (void)cudaGetLastError();
    free(cu);
}

#define INIT_CUDA(call)                                                                      \
    do {                                                                                     \
        cudaError_t e_ = (call);                                                             \
        if (e_ != cudaSuccess) {                                                             \
            (void)cudaGetLastError();                                                        \
            ctx_destroy(cu);                                                                 \
            return sq_fail(ctx, SQ_ERR_DEVICE, "cuda init (device %d): %s failed: %s", device, \
                           #call, cudaGetErrorString(e_));                                   \
        }                                                                                    \
    } while (0)

sq_status sq_cuda_init(sq_ctx *ctx, int device)
{
    if (ctx->cuda) return sq_fail(ctx, SQ_ERR_STATE, "cuda init: this context already has a CUDA backend");
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        return sq_fail(ctx, SQ_ERR_DEVICE, "cuda init: no usable CUDA device (%s: %s)",
                       cudaGetErrorName(e), cudaGetErrorString(e));
    }
    if (n == 0) return sq_fail(ctx, SQ_ERR_DEVICE, "cuda init: no CUDA device found");
    if (device < 0 || device >= n)
        return sq_fail(ctx, SQ_ERR_ARG, "cuda init: device %d out of range (%d device%s)", device, n,
                       n == 1 ? "" : "s");
    sq_cuda_ctx *cu = (sq_cuda_ctx *)calloc(1, sizeof *cu);
    if (!cu) return sq_fail(ctx, SQ_ERR_NOMEM, "cuda init: out of host memory");
    cu->device = device;
    INIT_CUDA(cudaSetDevice(device));
    cudaDeviceProp prop;
    INIT_CUDA(cudaGetDeviceProperties(&prop, device));
    snprintf(cu->name, sizeof cu->name, "%s", prop.name);
    cu->cc_major = prop.major;
    cu->cc_minor = prop.minor;
    cu->sm_count = prop.multiProcessorCount;
    cu->total_mem = prop.totalGlobalMem;
    INIT_CUDA(cudaStreamCreateWithFlags(&cu->stream, cudaStreamNonBlocking));
    cublasStatus_t bs = cublasCreate(&cu->cublas);
    if (bs != CUBLAS_STATUS_SUCCESS) {
        cu->cublas = NULL;
        ctx_destroy(cu);
        return sq_fail(ctx, SQ_ERR_DEVICE, "cuda init: cublasCreate failed: %s", cublasGetStatusString(bs));
    }
    if (cublasLtCreate(&cu->lt) != CUBLAS_STATUS_SUCCESS) {
        cu->lt = NULL;
        ctx_destroy(cu);
        return sq_fail(ctx, SQ_ERR_DEVICE, "cuda init: cublasLtCreate failed");
    }
    /* The math mode stays default: each GEMM names its compute type (fp32 or
     * TF32, from ctx->cuda_tf32).  A workspace we own keeps cuBLAS from allocating
     * behind the accounting's back. */
    cu->cublas_ws_bytes = (size_t)32 << 20;
    INIT_CUDA(cudaMalloc(&cu->cublas_ws, cu->cublas_ws_bytes));
    if (cublasSetStream(cu->cublas, cu->stream) != CUBLAS_STATUS_SUCCESS ||
        cublasSetWorkspace(cu->cublas, cu->cublas_ws, cu->cublas_ws_bytes) != CUBLAS_STATUS_SUCCESS ||
        cublasSetMathMode(cu->cublas, CUBLAS_DEFAULT_MATH) != CUBLAS_STATUS_SUCCESS) {
        ctx_destroy(cu);
        return sq_fail(ctx, SQ_ERR_DEVICE, "cuda init: configuring the cuBLAS handle failed");
    }
    INIT_CUDA(cudaMalloc((void **)&cu->flag, sizeof(sq_cuda_devflag)));
    INIT_CUDA(cudaMemsetAsync(cu->flag, 0, sizeof(sq_cuda_devflag), cu->stream));
    for (int i = 0; i < 2; i++) {
        INIT_CUDA(cudaMallocHost(&cu->stage[i], SQ_CUDA_STAGE_BYTES));
        INIT_CUDA(cudaEventCreateWithFlags(&cu->stage_ev[i], cudaEventDisableTiming));
    }
    INIT_CUDA(cudaStreamSynchronize(cu->stream));
    cu->cache.st.backend_device = (int64_t)(cu->cublas_ws_bytes + sizeof(sq_cuda_devflag));
    cu->cache.st.backend_pinned = (int64_t)(2 * SQ_CUDA_STAGE_BYTES);
    cu->rng_seed = ctx->rng.seed;
    cu->rng_offset = 0;
    ctx->cuda = cu;
    return SQ_OK;
}

void sq_cuda_free(sq_ctx *ctx)
{
    if (!ctx || !ctx->cuda) return;
    ctx_destroy(ctx->cuda);
    ctx->cuda = NULL;
}

const char *sq_cuda_device_str(const sq_ctx *ctx, char *buf, size_t n)
{
    if (!ctx || !ctx->cuda) snprintf(buf, n, "no CUDA context");
    else {
        const sq_cuda_ctx *cu = ctx->cuda;
        snprintf(buf, n, "%s (device %d, sm_%d%d, %d SMs, %.1f GiB)", cu->name, cu->device,
                 cu->cc_major, cu->cc_minor, cu->sm_count, (double)cu->total_mem / 1073741824.0);
    }
    return buf;
}

void sq_cuda_set_tf32(sq_ctx *ctx, int on)
{
    if (ctx) ctx->cuda_tf32 = on != 0;
}
int sq_cuda_get_tf32(const sq_ctx *ctx) { return ctx ? ctx->cuda_tf32 : 0; }
void sq_cuda_set_sync_launches(sq_ctx *ctx, int on)
{
    if (ctx && ctx->cuda) ctx->cuda->sync_launches = on != 0;
}
void sq_cuda_rng_seed(sq_ctx *ctx, uint64_t seed)
{
    if (!ctx || !ctx->cuda) return;
    ctx->cuda->rng_seed = seed;
    ctx->cuda->rng_offset = 0;
}
void sq_cuda_rng_state(const sq_ctx *ctx, uint64_t *seed, uint64_t *offset)
{
    *seed = ctx && ctx->cuda ? ctx->cuda->rng_seed : 0;
    *offset = ctx && ctx->cuda ? ctx->cuda->rng_offset : 0;
}

/* ---- errors ------------------------------------------------------------------------- */

sq_status sq_cuda_need(sq_ctx *ctx, const char *what)
{
    if (!ctx->cuda)
        return sq_fail(ctx, SQ_ERR_STATE, "%s: the CUDA backend is not initialised (call sq_cuda_init)", what);
    return SQ_OK;
}

const char *sq_cuda_kernel_name(int kid)
{
    static const char *const names[SQ_CK_COUNT] = {
        "?", "embedding", "embedding_bwd", "cross_entropy", "cross_entropy_bwd", "index_select",
        "index_select_bwd", "gather", "gather_bwd", "max_pool2d_bwd", "reduce_dim_bwd"};
    return kid > 0 && kid < SQ_CK_COUNT ? names[kid] : "?";
}

sq_status sq_cuda_launched(sq_ctx *ctx, const char *kernel, const char *fmt, ...)
{
    if (ctx->cuda->prof_on) sq_cuda_prof_mark(ctx, kernel);
    cudaError_t e = cudaGetLastError();
    if (e == cudaSuccess && ctx->cuda->sync_launches) e = cudaStreamSynchronize(ctx->cuda->stream);
    if (e == cudaSuccess) return SQ_OK;
    (void)cudaGetLastError();
    char sizes[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(sizes, sizeof sizes, fmt, ap);
    va_end(ap);
    return sq_fail(ctx, SQ_ERR_DEVICE, "cuda kernel %s (%s) failed: %s: %s", kernel, sizes,
                   cudaGetErrorName(e), cudaGetErrorString(e));
}

/* Called with the stream idle: reads and clears the index-error word. */
static sq_status check_flag(sq_ctx *ctx)
{
    sq_cuda_ctx *cu = ctx->cuda;
    sq_cuda_devflag f;
    cudaError_t e = cudaMemcpyAsync(&f, cu->flag, sizeof f, cudaMemcpyDeviceToHost, cu->stream);
    if (e == cudaSuccess) e = cudaStreamSynchronize(cu->stream);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        return sq_fail(ctx, SQ_ERR_DEVICE, "cuda: reading the kernel error word failed: %s",
                       cudaGetErrorString(e));
    }
    if (!f.code) return SQ_OK;
    cudaMemsetAsync(cu->flag, 0, sizeof f, cu->stream);
    return sq_fail(ctx, SQ_ERR_ARG, "%s: index %lld out of range [0, %lld) (found on the GPU)",
                   sq_cuda_kernel_name(f.kernel), f.index, f.bound);
}

sq_status sq_cuda_sync(sq_ctx *ctx)
{
    SQ_CUDA_ENTER(ctx, "cuda sync");
    cudaError_t e = cudaStreamSynchronize(ctx->cuda->stream);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        return sq_fail(ctx, SQ_ERR_DEVICE, "cuda: stream failed: %s: %s", cudaGetErrorName(e),
                       cudaGetErrorString(e));
    }
    return check_flag(ctx);
}

/* ---- copies ------------------------------------------------------------------------- */

#define COPY_CUDA(call, what)                                                                \
    do {                                                                                     \
        cudaError_t e_ = (call);                                                             \
        if (e_ != cudaSuccess) {                                                             \
            (void)cudaGetLastError();                                                        \
            return sq_fail(ctx, SQ_ERR_DEVICE, "cuda %s of %zu bytes failed: %s", what, nbytes, \
                           cudaGetErrorString(e_));                                          \
        }                                                                                    \
    } while (0)

sq_status sq_cuda_copy_h2d(sq_ctx *ctx, void *dst_dev, const void *src_host, size_t nbytes)
{
    SQ_CUDA_ENTER(ctx, "cuda copy h2d");
    sq_cuda_ctx *cu = ctx->cuda;
    size_t off = 0;
    for (int slot = 0; off < nbytes; slot ^= 1) {
        size_t len = nbytes - off < SQ_CUDA_STAGE_BYTES ? nbytes - off : SQ_CUDA_STAGE_BYTES;
        /* the staging buffer may still feed the previous copy from it */
        COPY_CUDA(cudaEventSynchronize(cu->stage_ev[slot]), "h2d copy");
        memcpy(cu->stage[slot], (const char *)src_host + off, len);
        COPY_CUDA(cudaMemcpyAsync((char *)dst_dev + off, cu->stage[slot], len,
                                  cudaMemcpyHostToDevice, cu->stream), "h2d copy");
        COPY_CUDA(cudaEventRecord(cu->stage_ev[slot], cu->stream), "h2d copy");
        off += len;
    }
    if (cu->prof_on) sq_cuda_prof_mark(ctx, "copy h2d");
    return SQ_OK;
}

sq_status sq_cuda_copy_d2h(sq_ctx *ctx, void *dst_host, const void *src_dev, size_t nbytes)
{
    SQ_CUDA_ENTER(ctx, "cuda copy d2h");
    sq_cuda_ctx *cu = ctx->cuda;
    /* two chunks in flight: copy chunk i+1 to the device side while unpacking chunk i */
    size_t off = 0, pend_off = 0, pend_len = 0;
    int slot = 0, pending = 0;
    while (off < nbytes || pending) {
        if (off < nbytes) {
            size_t len = nbytes - off < SQ_CUDA_STAGE_BYTES ? nbytes - off : SQ_CUDA_STAGE_BYTES;
            COPY_CUDA(cudaMemcpyAsync(cu->stage[slot], (const char *)src_dev + off, len,
                                      cudaMemcpyDeviceToHost, cu->stream), "d2h copy");
            COPY_CUDA(cudaEventRecord(cu->stage_ev[slot], cu->stream), "d2h copy");
            if (pending) {
                COPY_CUDA(cudaEventSynchronize(cu->stage_ev[slot ^ 1]), "d2h copy");
                memcpy((char *)dst_host + pend_off, cu->stage[slot ^ 1], pend_len);
            }
            pend_off = off;
            pend_len = len;
            pending = 1;
            off += len;
            slot ^= 1;
        } else {
            COPY_CUDA(cudaEventSynchronize(cu->stage_ev[slot ^ 1]), "d2h copy");
            memcpy((char *)dst_host + pend_off, cu->stage[slot ^ 1], pend_len);
            pending = 0;
        }
    }
    return sq_cuda_sync(ctx);
}

sq_status sq_cuda_copy_d2d(sq_ctx *ctx, void *dst_dev, const void *src_dev, size_t nbytes)
{
    SQ_CUDA_ENTER(ctx, "cuda copy d2d");
    if (nbytes == 0) return SQ_OK;
    COPY_CUDA(cudaMemcpyAsync(dst_dev, src_dev, nbytes, cudaMemcpyDeviceToDevice, ctx->cuda->stream),
              "d2d copy");
    if (ctx->cuda->prof_on) sq_cuda_prof_mark(ctx, "copy d2d");
    return SQ_OK;
}

/* ---- timing ------------------------------------------------------------------------- */

struct sq_cuda_event {
    cudaEvent_t ev;
};

sq_status sq_cuda_event_new(sq_ctx *ctx, sq_cuda_event **out)
{
    *out = NULL;
    SQ_CUDA_ENTER(ctx, "cuda event");
    sq_cuda_event *e = (sq_cuda_event *)calloc(1, sizeof *e);
    if (!e) return sq_fail(ctx, SQ_ERR_NOMEM, "cuda event: out of host memory");
    cudaError_t r = cudaEventCreate(&e->ev);
    if (r != cudaSuccess) {
        (void)cudaGetLastError();
        free(e);
        return sq_fail(ctx, SQ_ERR_DEVICE, "cuda event: cudaEventCreate failed: %s", cudaGetErrorString(r));
    }
    *out = e;
    return SQ_OK;
}

sq_status sq_cuda_event_record(sq_ctx *ctx, sq_cuda_event *ev)
{
    SQ_CUDA_ENTER(ctx, "cuda event record");
    cudaError_t r = cudaEventRecord(ev->ev, ctx->cuda->stream);
    if (r != cudaSuccess) {
        (void)cudaGetLastError();
        return sq_fail(ctx, SQ_ERR_DEVICE, "cuda event record failed: %s", cudaGetErrorString(r));
    }
    return SQ_OK;
}

sq_status sq_cuda_event_elapsed(sq_ctx *ctx, sq_cuda_event *start, sq_cuda_event *stop, double *ms)
{
    *ms = 0;
    SQ_CUDA_ENTER(ctx, "cuda event elapsed");
    float f = 0;
    cudaError_t r = cudaEventSynchronize(stop->ev);
    if (r == cudaSuccess) r = cudaEventElapsedTime(&f, start->ev, stop->ev);
    if (r != cudaSuccess) {
        (void)cudaGetLastError();
        return sq_fail(ctx, SQ_ERR_DEVICE, "cuda event elapsed time failed: %s (were both events recorded?)",
                       cudaGetErrorString(r));
    }
    *ms = f;
    return SQ_OK;
}

void sq_cuda_event_free(sq_cuda_event *ev)
{
    if (!ev) return;
    cudaEventDestroy(ev->ev);
    (void)cudaGetLastError();
    free(ev);
}

/* ---- launch profiling ----------------------------------------------------------------- */

void sq_cuda_prof_mark(sq_ctx *ctx, const char *what)
{
    sq_cuda_ctx *cu = ctx->cuda;
    if (cu->prof_n < cu->prof_cap && cudaEventRecord(cu->prof_ev[cu->prof_n], cu->stream) == cudaSuccess)
        cu->prof_name[cu->prof_n] = what;
    cu->prof_n++;
}

sq_status sq_cuda_profile_begin(sq_ctx *ctx, int cap)
{
    SQ_CUDA_ENTER(ctx, "cuda profile");
    sq_cuda_ctx *cu = ctx->cuda;
    if (cap < 2) cap = 2;
    if (cap > cu->prof_cap) {
        cudaEvent_t *ev = (cudaEvent_t *)realloc(cu->prof_ev, (size_t)cap * sizeof *ev);
        if (!ev) return sq_fail(ctx, SQ_ERR_NOMEM, "cuda profile: out of host memory");
        cu->prof_ev = ev;
        const char **nm = (const char **)realloc(cu->prof_name, (size_t)cap * sizeof *nm);
        if (!nm) return sq_fail(ctx, SQ_ERR_NOMEM, "cuda profile: out of host memory");
        cu->prof_name = nm;
        for (int i = cu->prof_cap; i < cap; i++) {
            if (cudaEventCreate(&cu->prof_ev[i]) != cudaSuccess) {
                (void)cudaGetLastError();
                cu->prof_cap = i;
                return sq_fail(ctx, SQ_ERR_DEVICE, "cuda profile: cudaEventCreate failed");
            }
        }
        cu->prof_cap = cap;
    }
    cu->prof_n = 0;
    cu->prof_on = 1;
    sq_cuda_prof_mark(ctx, "(start)"); /* event 0: the time origin */
    return SQ_OK;
}

typedef struct {
    const char *name;
    int count;
    double ms;
} prof_row;

static int prof_cmp(const void *a, const void *b)
{
    double x = ((const prof_row *)a)->ms, y = ((const prof_row *)b)->ms;
    return x < y ? 1 : x > y ? -1 : 0;
}

sq_status sq_cuda_profile_end(sq_ctx *ctx, char *buf, size_t n)
{
    if (n) buf[0] = 0;
    SQ_CUDA_ENTER(ctx, "cuda profile");
    sq_cuda_ctx *cu = ctx->cuda;
    cu->prof_on = 0;
    int rec = cu->prof_n < cu->prof_cap ? cu->prof_n : cu->prof_cap;
    cudaError_t e = rec > 0 ? cudaEventSynchronize(cu->prof_ev[rec - 1]) : cudaSuccess;
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        return sq_fail(ctx, SQ_ERR_DEVICE, "cuda profile: %s", cudaGetErrorString(e));
    }
    prof_row *rows = (prof_row *)calloc((size_t)(rec > 0 ? rec : 1), sizeof *rows);
    if (!rows) return sq_fail(ctx, SQ_ERR_NOMEM, "cuda profile: out of host memory");
    int nr = 0;
    double total = 0;
    for (int i = 1; i < rec; i++) {
        float ms = 0;
        if (cudaEventElapsedTime(&ms, cu->prof_ev[i - 1], cu->prof_ev[i]) != cudaSuccess) {
            (void)cudaGetLastError();
            ms = 0;
        }
        int j = 0;
        while (j < nr && strcmp(rows[j].name, cu->prof_name[i]) != 0) j++;
        if (j == nr) rows[nr++].name = cu->prof_name[i];
        rows[j].count++;
        rows[j].ms += ms;
        total += ms;
    }
    qsort(rows, (size_t)nr, sizeof *rows, prof_cmp);
    size_t used = 0;
    used += (size_t)snprintf(buf + used, n > used ? n - used : 0, "%-22s %8s %10s %7s\n", "kernel", "launches",
                             "ms", "share");
    for (int j = 0; j < nr && used < n; j++)
        used += (size_t)snprintf(buf + used, n - used, "%-22s %8d %10.3f %6.1f%%\n", rows[j].name, rows[j].count,
                                 rows[j].ms, total > 0 ? 100.0 * rows[j].ms / total : 0.0);
    if (used < n)
        used += (size_t)snprintf(buf + used, n - used, "%-22s %8d %10.3f%s\n", "total", rec - 1, total,
                                 cu->prof_n > cu->prof_cap ? " (some launches not recorded)" : "");
    free(rows);
    return SQ_OK;
}
