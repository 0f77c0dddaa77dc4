/* sq_device.h — raw memory of each device.  The CPU is always present; the
 * CUDA backend (kernels/cuda, a build option) plugs in here, so tensor code
 * never calls malloc or cudaMalloc directly.
 *
 * The CUDA backend of a context is created on its first use (the first
 * CUDA allocation, or sq_device_ensure), on GPU ctx->cuda_device, so a run
 * that never asks for the GPU never touches the driver. */
#ifndef SQ_DEVICE_H
#define SQ_DEVICE_H

#include "sq_base.h"

/* 64-byte aligned (CPU) / 256-byte aligned (CUDA); fails with SQ_ERR_NOMEM
 * naming the size, or SQ_ERR_DEVICE when the device cannot be used.
 * *out: caller owns, free with sq_device_free. */
sq_status sq_device_alloc(sq_ctx *ctx, sq_device dev, size_t nbytes, void **out);
void sq_device_free(sq_ctx *ctx, sq_device dev, void *p);
/* 1 when the device can be used in this process (for CUDA: a driver and a
 * GPU are present; asks the driver, creates nothing). */
int sq_device_available(sq_device dev);
/* Makes dev usable in ctx (creates the CUDA backend when missing). */
sq_status sq_device_ensure(sq_ctx *ctx, sq_device dev);
/* Releases every device backend of ctx; device tensors still alive lose
 * their memory (release them first).  Idempotent. */
void sq_device_release_all(sq_ctx *ctx);

/* nbytes from src (on src_dev) to dst (on dst_dev).  Host-to-device and
 * device-to-device are asynchronous on the context stream (the host buffer
 * may be reused at once); device-to-host returns with the bytes in place and
 * reports errors that kernels recorded since the last check. */
sq_status sq_device_copy(sq_ctx *ctx, sq_device dst_dev, void *dst, sq_device src_dev,
                         const void *src, size_t nbytes);
/* Waits for the device's queued work and reports deferred errors (a no-op
 * for the CPU, and for CUDA before its backend exists). */
sq_status sq_device_sync(sq_ctx *ctx, sq_device dev);
/* "cpu" / "cuda" -> device; -1 for anything else. */
int sq_device_parse(const char *name);

#endif
