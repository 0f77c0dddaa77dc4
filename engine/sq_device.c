/* sq_device.c — CPU memory; CUDA reports itself unavailable in CPU builds. */
#include "sq_device.h"

#include <stdlib.h>

sq_status sq_device_alloc(sq_ctx *ctx, sq_device dev, size_t nbytes, void **out)
{
    *out = NULL;
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
    (void)ctx;
    (void)dev;
    free(p);
}

int sq_device_available(sq_device dev) { return dev == SQ_CPU; }
