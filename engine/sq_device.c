/* sq_device.c — raw memory of each device: the CPU heap, and the CUDA
 * backend's caching allocator in builds that have it (SQ_HAVE_CUDA). */
#include "sq_device.h"

#include <stdlib.h>

#ifdef SQ_HAVE_CUDA
#include "cuda/sq_cuda.h"
#endif

sq_status sq_device_alloc(sq_ctx *ctx, sq_device dev, size_t nbytes, void **out)
{
    *out = NULL;
    if (dev == SQ_CUDA) {
#ifdef SQ_HAVE_CUDA
        if (!ctx->cuda)
            return sq_fail(ctx, SQ_ERR_DEVICE,
                           "device cuda: the CUDA backend is not initialised in this context (sq_cuda_init)");
        return sq_cuda_alloc(ctx, nbytes, out);
#else
        return sq_fail(ctx, SQ_ERR_DEVICE, "device %s is not available in this build", sq_device_name(dev));
#endif
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
#ifdef SQ_HAVE_CUDA
        sq_cuda_free_block(ctx, p);
#endif
        return;
    }
    free(p);
}

int sq_device_available(sq_device dev)
{
#ifdef SQ_HAVE_CUDA
    if (dev == SQ_CUDA) return sq_cuda_available();
#endif
    return dev == SQ_CPU;
}
