/* actprune_dw_bench.cu — kernel-level measurement of issue 5 (methods.md §1)
 * on one GPU: squeeze's fused prune-and-pack and BSR weight gradient
 * against dense cuBLAS (SGEMM fp32 and TF32) on the same device.
 * Built and run by experiments/bench/actprune_dw.sh; PyTorch's BSR matmul
 * is timed on the same x̂ by actprune_dw_torch.py from the files this
 * program writes.
 *
 * For each layer shape (in -> out, R rows) it draws x (R,in) and dy (R,out)
 * uniform in (-1,1), never 0 (a hash of the index, on the device), times
 * the dense dW = dyᵀ·x (cuBLAS fp32, TF32), and for every block size and
 * keep ratio: prune-and-pack x (scope tensor), the BSR dW in TF32 and
 * 3xTF32, and cuBLAS on the densified x̂.  Correctness comes first: the
 * BSR dW is compared with cuBLAS fp32 on the densified x̂ (rel Frobenius:
 * TF32 <= 5e-3, 3xTF32 <= 1e-4) and the BSR's pointers with its size;
 * a failed check is printed and marked in the CSV.
 *
 * Timing: CUDA events around each call on the context stream, 3 warm-up
 * calls, then the median of `reps` (default 15; dense fp32 GEMMs 7).
 *
 * usage: actprune_dw_bench DATA_DIR CSV [reps]
 *   DATA_DIR receives x_<shape>.bin, dy_<shape>.bin (float32, row-major)
 *   and mask_<shape>_b<b>_k<keep>.bin (uint8 per block, block-row order)
 *   for the PyTorch side ("-" to write nothing).
 * Environment (to look at a subset while tuning; the committed table uses
 * the defaults): AP_SHAPES (indices into 0 384x1536, 1 1536x384,
 * 2 4096x4096, e.g. "0,2"), AP_BLOCKS ("32,64"), AP_KEEPS ("0.5,0.3"),
 * AP_DIAG=0 to skip the split-scaling diagnostics. */
#include "sq_cuda_actprune.h"
#include "sq_cuda_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CK(x)                                                                               \
    do {                                                                                    \
        cudaError_t e_ = (x);                                                               \
        if (e_ != cudaSuccess) {                                                            \
            fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_)); \
            exit(1);                                                                        \
        }                                                                                   \
    } while (0)
#define SQ(ctx, x)                                                                          \
    do {                                                                                    \
        sq_status s_ = (x);                                                                 \
        if (s_ != SQ_OK) {                                                                  \
            fprintf(stderr, "%s:%d: %s: %s: %s\n", __FILE__, __LINE__, #x, sq_status_name(s_), \
                    (ctx)->err);                                                            \
            exit(1);                                                                        \
        }                                                                                   \
    } while (0)

/* uniform in (-1,1), never 0: (2k+1)/2^24 - 1 with k a 24-bit hash */
__global__ void k_fill(float *p, int64_t n, uint32_t seed)
{
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        uint32_t h = (uint32_t)i * 0x9E3779B1u ^ (uint32_t)(i >> 32) * 0x85EBCA77u ^ seed;
        h ^= h >> 16;
        h *= 0x7FEB352Du;
        h ^= h >> 15;
        h *= 0x846CA68Bu;
        h ^= h >> 16;
        p[i] = (float)(2 * (h >> 8) + 1) * (1.0f / 16777216.0f) - 1.0f;
    }
}

static int cmp_f(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return x < y ? -1 : x > y;
}

typedef struct {
    sq_ctx *ctx;
    cudaEvent_t ev[2][64];
} timer;

/* median ms of reps calls of op (after 3 warm-ups) */
#define TIME(T, reps, out, stmt)                                                           \
    do {                                                                                   \
        cudaStream_t st_ = (T)->ctx->cuda->stream;                                         \
        for (int w_ = 0; w_ < 3; w_++) { stmt; }                                           \
        for (int r_ = 0; r_ < (reps); r_++) {                                              \
            CK(cudaEventRecord((T)->ev[0][r_], st_));                                      \
            stmt;                                                                          \
            CK(cudaEventRecord((T)->ev[1][r_], st_));                                      \
        }                                                                                  \
        CK(cudaStreamSynchronize(st_));                                                    \
        float ms_[64];                                                                     \
        for (int r_ = 0; r_ < (reps); r_++) CK(cudaEventElapsedTime(&ms_[r_], (T)->ev[0][r_], (T)->ev[1][r_])); \
        qsort(ms_, (size_t)(reps), sizeof(float), cmp_f);                                  \
        (out) = ms_[(reps) / 2];                                                           \
    } while (0)

static double rel_err(const float *ref, const float *got, int64_t n)
{
    double num = 0, den = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = (double)got[i] - ref[i];
        if (!isfinite(got[i])) return INFINITY;
        num += d * d;
        den += (double)ref[i] * ref[i];
    }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

/* device -> host after everything queued on any stream (the context's
 * stream is non-blocking: a plain cudaMemcpy would not wait for it) */
static void d2h(void *dst, const void *src, size_t bytes)
{
    CK(cudaDeviceSynchronize());
    CK(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToHost));
}

static void write_file(const char *dir, const char *name, const void *dev, size_t bytes, int host)
{
    if (!dir) return;
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    void *h = host ? (void *)dev : malloc(bytes);
    if (!h) { fprintf(stderr, "out of host memory\n"); exit(1); }
    if (!host) d2h(h, dev, bytes);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(h, 1, bytes, f) != bytes || fclose(f) != 0) {
        fprintf(stderr, "cannot write %s\n", path);
        exit(1);
    }
    if (!host) free(h);
}

/* comma-separated ints (ip) or doubles (dp), at most n; returns the count */
static int parse_list(const char *s, int *ip, double *dp, int n)
{
    int k = 0;
    while (*s && k < n) {
        char *end;
        if (ip) ip[k++] = (int)strtol(s, &end, 10);
        else dp[k++] = strtod(s, &end);
        if (end == s) break;
        s = *end == ',' ? end + 1 : end;
    }
    return k;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: %s DATA_DIR|- CSV [reps]\n", argv[0]);
        return 2;
    }
    const char *dir = strcmp(argv[1], "-") ? argv[1] : NULL;
    int reps = argc > 3 ? atoi(argv[3]) : 15;
    if (reps < 1 || reps > 64) reps = 15;
    int reps_slow = reps < 7 ? reps : 7;
    FILE *csv = fopen(argv[2], "w");
    if (!csv) { fprintf(stderr, "cannot write %s\n", argv[2]); return 1; }

    static sq_ctx C;
    sq_ctx *ctx = &C;
    sq_ctx_init(ctx, 5);
    SQ(ctx, sq_cuda_init(ctx, 0));
    char dev[256];
    printf("device: %s\n", sq_cuda_device_str(ctx, dev, sizeof dev));
    timer T;
    T.ctx = ctx;
    for (int i = 0; i < 64; i++) {
        CK(cudaEventCreate(&T.ev[0][i]));
        CK(cudaEventCreate(&T.ev[1][i]));
    }
    cudaStream_t s = ctx->cuda->stream;
    fprintf(csv, "shape,in,out,rows,b,keep,nnzb,nblocks,pack_ms,bsr_tf32_ms,bsr_3xtf32_ms,"
                 "dense_fp32_ms,dense_tf32_ms,dense_xhat_fp32_ms,dense_xhat_tf32_ms,err_tf32,err_3xtf32,"
                 "bsr_bytes,dense_bytes,check\n");

    const struct { const char *name; int64_t in, out, R; } shapes[3] = {
        {"384x1536", 384, 1536, 200704}, {"1536x384", 1536, 384, 200704}, {"4096x4096", 4096, 4096, 16384}};
    int bsz[8] = {16, 32, 64}, nb = 3, shp[8] = {0, 1, 2}, ns = 3;
    double keeps[8] = {0.75, 0.5, 0.3, 0.1};
    int nk = 4;
    const char *ev;
    if ((ev = getenv("AP_SHAPES"))) ns = parse_list(ev, shp, NULL, 8);
    if ((ev = getenv("AP_BLOCKS"))) nb = parse_list(ev, bsz, NULL, 8);
    if ((ev = getenv("AP_KEEPS"))) nk = parse_list(ev, NULL, keeps, 8);
    const int diag = !(ev = getenv("AP_DIAG")) || atoi(ev) != 0;

    for (int sj = 0; sj < ns; sj++) {
        const int si = shp[sj];
        if (si < 0 || si > 2) { fprintf(stderr, "AP_SHAPES: %d is not 0, 1 or 2\n", si); return 2; }
        const int64_t K = shapes[si].in, M = shapes[si].out, R = shapes[si].R;
        float *x, *dy, *xh, *dw_ref, *dw;
        SQ(ctx, sq_cuda_alloc(ctx, (size_t)(R * K) * 4, (void **)&x));
        SQ(ctx, sq_cuda_alloc(ctx, (size_t)(R * K) * 4, (void **)&xh));
        SQ(ctx, sq_cuda_alloc(ctx, (size_t)(R * M) * 4, (void **)&dy));
        SQ(ctx, sq_cuda_alloc(ctx, (size_t)(M * K) * 4, (void **)&dw_ref));
        SQ(ctx, sq_cuda_alloc(ctx, (size_t)(M * K) * 4, (void **)&dw));
        k_fill<<<4096, 256, 0, s>>>(x, R * K, 0x1234u + (uint32_t)si);
        k_fill<<<4096, 256, 0, s>>>(dy, R * M, 0xBEEFu + (uint32_t)si);
        CK(cudaGetLastError());
        char name[256];
        snprintf(name, sizeof name, "x_%s.bin", shapes[si].name);
        write_file(dir, name, x, (size_t)(R * K) * 4, 0);
        snprintf(name, sizeof name, "dy_%s.bin", shapes[si].name);
        write_file(dir, name, dy, (size_t)(R * M) * 4, 0);

        /* dense baseline on x: dW (M,K) = dyᵀ (M,R) · x (R,K) */
        float t_fp32, t_tf32;
        sq_cuda_set_tf32(ctx, 0);
        TIME(&T, reps_slow, t_fp32, SQ(ctx, sq_cuda_gemm(ctx, SQ_F32, 1, 0, M, K, R, 1.0, dy, M, x, K, 0.0, dw, K)));
        sq_cuda_set_tf32(ctx, 1);
        TIME(&T, reps, t_tf32, SQ(ctx, sq_cuda_gemm(ctx, SQ_F32, 1, 0, M, K, R, 1.0, dy, M, x, K, 0.0, dw, K)));
        sq_cuda_set_tf32(ctx, 0);
        double fl = 2.0 * (double)M * (double)R * (double)K;
        printf("\n== %s: x (%lld,%lld), dy (%lld,%lld); dense dW fp32 %.3f ms (%.1f TFLOP/s), tf32 %.3f ms (%.1f TFLOP/s)\n",
               shapes[si].name, (long long)R, (long long)K, (long long)R, (long long)M, t_fp32,
               fl / t_fp32 * 1e-9, t_tf32, fl / t_tf32 * 1e-9);
        float *h_ref = (float *)malloc((size_t)(M * K) * 4), *h_got = (float *)malloc((size_t)(M * K) * 4);

        for (int bi = 0; bi < nb; bi++)
            for (int ki = 0; ki < nk; ki++) {
                const int64_t b = bsz[bi];
                const double keep = keeps[ki];
                sq_cuda_bsr m;
                SQ(ctx, sq_cuda_bsr_shape(ctx, R, K, b, keep, SQ_PRUNE_SCOPE_TENSOR, &m));
                SQ(ctx, sq_cuda_bsr_alloc(ctx, &m, SQ_MEM_SAVED));
                SQ(ctx, sq_cuda_bsr_prune_pack(ctx, &m, x, K, 1, keep, SQ_PRUNE_SCOPE_TENSOR));
                /* correctness first */
                int ok = 1;
                int64_t last_r = -1, last_c = -1;
                d2h(&last_r, m.row_ptr + m.nbr, 8);
                d2h(&last_c, m.col_ptr + m.nbc, 8);
                if (last_r != m.nnzb || last_c != m.nnzb) {
                    printf("CHECK FAILED: row_ptr end %lld, col_ptr end %lld, nnzb %lld\n", (long long)last_r,
                           (long long)last_c, (long long)m.nnzb);
                    ok = 0;
                }
                SQ(ctx, sq_cuda_bsr_to_dense(ctx, xh, &m));
                SQ(ctx, sq_cuda_gemm(ctx, SQ_F32, 1, 0, M, K, R, 1.0, dy, M, xh, K, 0.0, dw_ref, K));
                d2h(h_ref, dw_ref, (size_t)(M * K) * 4);
                CK(cudaMemsetAsync(dw, 0xff, (size_t)(M * K) * 4, s)); /* NaN poison */
                SQ(ctx, sq_cuda_bsr_dw(ctx, dw, K, dy, M, M, &m, SQ_CUDA_DW_TF32, 0));
                d2h(h_got, dw, (size_t)(M * K) * 4);
                double e_tf32 = rel_err(h_ref, h_got, M * K);
                CK(cudaMemsetAsync(dw, 0xff, (size_t)(M * K) * 4, s));
                SQ(ctx, sq_cuda_bsr_dw(ctx, dw, K, dy, M, M, &m, SQ_CUDA_DW_3XTF32, 0));
                d2h(h_got, dw, (size_t)(M * K) * 4);
                double e_3x = rel_err(h_ref, h_got, M * K);
                /* cuBLAS TF32 on x̂ against the same fp32 reference: the
                 * accuracy squeeze's TF32 kernel is held to in spirit */
                sq_cuda_set_tf32(ctx, 1);
                SQ(ctx, sq_cuda_gemm(ctx, SQ_F32, 1, 0, M, K, R, 1.0, dy, M, xh, K, 0.0, dw, K));
                sq_cuda_set_tf32(ctx, 0);
                d2h(h_got, dw, (size_t)(M * K) * 4);
                const double e_cublas_tf32 = rel_err(h_ref, h_got, M * K);
                if (!(e_tf32 <= 5e-3) || !(e_3x <= 1e-4)) {
                    printf("CHECK FAILED: b %lld keep %.2f: BSR dW vs cuBLAS fp32 on x̂: tf32 %.2e, 3xtf32 %.2e\n",
                           (long long)b, keep, e_tf32, e_3x);
                    ok = 0;
                }
                if (dir) { /* the kept-block mask for PyTorch */
                    int64_t nb = m.nbr * m.nbc;
                    int64_t *rp = (int64_t *)malloc((size_t)(m.nbr + 1) * 8);
                    int32_t *ci = (int32_t *)malloc((size_t)m.nnzb * 4);
                    unsigned char *mask = (unsigned char *)calloc((size_t)nb, 1);
                    d2h(rp, m.row_ptr, (size_t)(m.nbr + 1) * 8);
                    d2h(ci, m.col_idx, (size_t)m.nnzb * 4);
                    for (int64_t i = 0; i < m.nbr; i++)
                        for (int64_t p = rp[i]; p < rp[i + 1]; p++) mask[i * m.nbc + ci[p]] = 1;
                    snprintf(name, sizeof name, "mask_%s_b%lld_k%.2f.bin", shapes[si].name, (long long)b, keep);
                    write_file(dir, name, mask, (size_t)nb, 1);
                    free(rp), free(ci), free(mask);
                }
                /* timings */
                float t_pack, t_bsr, t_bsr3, t_dx32, t_dxtf;
                TIME(&T, reps, t_pack, SQ(ctx, sq_cuda_bsr_prune_pack(ctx, &m, x, K, 1, keep, SQ_PRUNE_SCOPE_TENSOR)));
                TIME(&T, reps, t_bsr, SQ(ctx, sq_cuda_bsr_dw(ctx, dw, K, dy, M, M, &m, SQ_CUDA_DW_TF32, 0)));
                TIME(&T, reps, t_bsr3, SQ(ctx, sq_cuda_bsr_dw(ctx, dw, K, dy, M, M, &m, SQ_CUDA_DW_3XTF32, 0)));
                sq_cuda_set_tf32(ctx, 0);
                TIME(&T, reps_slow, t_dx32, SQ(ctx, sq_cuda_gemm(ctx, SQ_F32, 1, 0, M, K, R, 1.0, dy, M, xh, K, 0.0, dw, K)));
                sq_cuda_set_tf32(ctx, 1);
                TIME(&T, reps, t_dxtf, SQ(ctx, sq_cuda_gemm(ctx, SQ_F32, 1, 0, M, K, R, 1.0, dy, M, xh, K, 0.0, dw, K)));
                sq_cuda_set_tf32(ctx, 0);
                CK(cudaStreamSynchronize(s));
                double bfl = 2.0 * (double)M * (double)m.nnzb * (double)(b * b);
                printf("b %2lld keep %.2f nnzb %8lld: pack %.3f ms (%.1f%% of fp32 dW, %.0f%% of tf32 dW) | "
                       "BSR dW tf32 %.3f ms (%.0f TFLOP/s, %.2fx dense tf32) 3xtf32 %.3f ms (%.2fx dense fp32) | "
                       "cuBLAS on x̂ fp32 %.3f tf32 %.3f | err %.1e %.1e (cuBLAS tf32 %.1e)%s\n",
                       (long long)b, keep, (long long)m.nnzb, t_pack, 100 * t_pack / t_fp32, 100 * t_pack / t_tf32,
                       t_bsr, bfl / t_bsr * 1e-9, t_tf32 / t_bsr, t_bsr3, t_fp32 / t_bsr3, t_dx32, t_dxtf, e_tf32,
                       e_3x, e_cublas_tf32, ok ? "" : "  CHECK FAILED");
                fflush(stdout);
                fprintf(csv, "%s,%lld,%lld,%lld,%lld,%.2f,%lld,%lld,%.4f,%.4f,%.4f,%.4f,%.4f,%.4f,%.4f,%.3e,%.3e,%lld,%lld,%s\n",
                        shapes[si].name, (long long)K, (long long)M, (long long)R, (long long)b, keep,
                        (long long)m.nnzb, (long long)(m.nbr * m.nbc), t_pack, t_bsr, t_bsr3, t_fp32, t_tf32,
                        t_dx32, t_dxtf, e_tf32, e_3x, (long long)sq_cuda_bsr_bytes(&m), (long long)(R * K * 4),
                        ok ? "ok" : "FAILED");
                fflush(csv);
                sq_cuda_bsr_free(ctx, &m);
            }
        if (diag) {   /* diagnostics (not in the table): how the BSR dW scales with the
             * number of row splits, and its speed with every block kept */
            sq_cuda_bsr m;
            const double kd[2] = {0.5, 1.0};
            for (int db = 32; db <= 64; db += 32)
            for (int q = 0; q < 2; q++) {
                SQ(ctx, sq_cuda_bsr_shape(ctx, R, K, db, kd[q], SQ_PRUNE_SCOPE_TENSOR, &m));
                SQ(ctx, sq_cuda_bsr_alloc(ctx, &m, SQ_MEM_SAVED));
                SQ(ctx, sq_cuda_bsr_prune_pack(ctx, &m, x, K, 1, kd[q], SQ_PRUNE_SCOPE_TENSOR));
                const int sp[5] = {0, 1, 4, 16, 64}; /* 0: the automatic choice */
                double bfl = 2.0 * (double)M * (double)m.nnzb * (double)(db * db);
                if (sq_cuda_bsr_dw_has_wgmma(ctx)) { /* the wgmma kernel, automatic tile and splits */
                    float tw;
                    TIME(&T, 5, tw, SQ(ctx, sq_cuda_bsr_dw_tile(ctx, dw, K, dy, M, M, &m, SQ_CUDA_DW_TF32, 0, 0,
                                                                 SQ_CUDA_DW_WGMMA)));
                    printf("diag %s b %d keep %.2f wgmma tf32 %.3f ms (%.0f TFLOP/s)\n", shapes[si].name, db, kd[q],
                           tw, bfl / tw * 1e-9);
                }
                for (int k = 0; k < 5; k++) {
                    float t1, t3;
                    TIME(&T, 5, t1, SQ(ctx, sq_cuda_bsr_dw(ctx, dw, K, dy, M, M, &m, SQ_CUDA_DW_TF32, sp[k])));
                    TIME(&T, 5, t3, SQ(ctx, sq_cuda_bsr_dw(ctx, dw, K, dy, M, M, &m, SQ_CUDA_DW_3XTF32, sp[k])));
                    printf("diag %s b %d keep %.2f splits %2d: BSR dW tf32 %.3f ms (%.0f TFLOP/s), 3xtf32 %.3f ms "
                           "(%.0f TFLOP/s)\n", shapes[si].name, db, kd[q], sp[k], t1, bfl / t1 * 1e-9, t3,
                           bfl / t3 * 1e-9);
                }
                sq_cuda_bsr_free(ctx, &m);
            }
        }
        free(h_ref);
        free(h_got);
        sq_cuda_free_block(ctx, x);
        sq_cuda_free_block(ctx, xh);
        sq_cuda_free_block(ctx, dy);
        sq_cuda_free_block(ctx, dw_ref);
        sq_cuda_free_block(ctx, dw);
        sq_cuda_empty_cache(ctx);
    }
    fclose(csv);
    sq_cuda_free(ctx);
    return 0;
}
