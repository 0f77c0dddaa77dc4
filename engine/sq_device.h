/* sq_device.h — raw memory of each device.  The CPU is always present; the
 * CUDA backend (a later build option) plugs in here, so tensor code never
 * calls malloc or cudaMalloc directly. */
#ifndef SQ_DEVICE_H
#define SQ_DEVICE_H

#include "sq_base.h"

/* 64-byte aligned; fails with SQ_ERR_NOMEM naming the size. */
sq_status sq_device_alloc(sq_ctx *ctx, sq_device dev, size_t nbytes, void **out);
void sq_device_free(sq_ctx *ctx, sq_device dev, void *p);
/* 1 when the device can be used in this process. */
int sq_device_available(sq_device dev);

#endif
