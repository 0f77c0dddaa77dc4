/* sq_device.c — raw memory of each device: the CPU heap, and the CUDA
 * backend's caching allocator (kernels/cuda/sq_cuda.h; in CPU-only builds
 * its stand-in answers every call with "no CUDA backend in this build"). */
#include "sq_device.h"

#include <stdlib.h>
#include <string.h>

#include "cuda/sq_cuda.h"

sq_status sq_device_ensure(sq_ctx *ctx, sq_device dev)
{
    if (dev == SQ_CPU) return SQ_OK;
    if (dev != SQ_CUDA) return sq_fail(ctx, SQ_ERR_DEVICE, "unknown device %d", (int)dev);
    if (ctx->cuda) return SQ_OK;
    return sq_cuda_init(ctx, ctx->cuda_device);
}

void sq_device_release_all(sq_ctx *ctx)
{
    if (ctx && ctx->cuda) sq_cuda_free(ctx);
}

sq_status sq_device_alloc(sq_ctx *ctx, sq_device dev, size_t nbytes, void **out)
{
    *out = NULL;
    if (dev == SQ_CUDA) {
        SQ_TRY(sq_device_ensure(ctx, dev));
        return sq_cuda_alloc(ctx, nbytes, out);
    }
    if (dev != SQ_CPU)
        return sq_fail(ctx, SQ_ERR_DEVICE, "device %s is not available in this build", sq_device_name(dev));
    size_t rounded = (nbytes + 63) & ~(size_t)63;
    void *p = aligned_alloc(64, rounded ? rounded : 64);
    if (!p)
        return sq_fail(ctx, SQ_ERR_NOMEM, "out of host memory allocating %zu bytes", nbytes);
    *out = p;
    return SQ_OK;
}

void sq_device_free(sq_ctx *ctx, sq_device dev, void *p)
{
    if (dev == SQ_CUDA) {
        sq_cuda_free_block(ctx, p);
        return;
    }
    free(p);
}

int sq_device_available(sq_device dev)
{
    if (dev == SQ_CUDA) return sq_cuda_available();
    return dev == SQ_CPU;
}

sq_status sq_device_copy(sq_ctx *ctx, sq_device dst_dev, void *dst, sq_device src_dev,
                         const void *src, size_t nbytes)
{
    if (nbytes == 0) return SQ_OK;
    if (dst_dev == SQ_CPU && src_dev == SQ_CPU) {
        memcpy(dst, src, nbytes);
        return SQ_OK;
    }
    SQ_TRY(sq_device_ensure(ctx, SQ_CUDA));
    if (dst_dev == SQ_CUDA && src_dev == SQ_CPU) return sq_cuda_copy_h2d(ctx, dst, src, nbytes);
    if (dst_dev == SQ_CPU && src_dev == SQ_CUDA) return sq_cuda_copy_d2h(ctx, dst, src, nbytes);
    return sq_cuda_copy_d2d(ctx, dst, src, nbytes);
}

sq_status sq_device_sync(sq_ctx *ctx, sq_device dev)
{
    if (dev != SQ_CUDA || !ctx->cuda) return SQ_OK;
    return sq_cuda_sync(ctx);
}

int sq_device_parse(const char *name)
{
    if (!name) return -1;
    if (strcmp(name, "cpu") == 0) return SQ_CPU;
    if (strcmp(name, "cuda") == 0 || strcmp(name, "cuda:0") == 0 || strcmp(name, "gpu") == 0) return SQ_CUDA;
    return -1;
}
