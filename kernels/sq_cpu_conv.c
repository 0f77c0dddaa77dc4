/* sq_cpu_conv.c — im2col / col2im for convolution as GEMM. */
#include "sq_cpu.h"

#define IM2COL_BODY(T)                                                                    \
    do {                                                                                  \
        T *c = cols;                                                                      \
        const T *xi = x;                                                                  \
        for (int64_t ch = 0; ch < C; ch++)                                                \
            for (int i = 0; i < kh; i++)                                                  \
                for (int j = 0; j < kw; j++) {                                            \
                    T *row = c + ((ch * kh + i) * kw + j) * Ho * Wo;                      \
                    for (int64_t oy = 0; oy < Ho; oy++) {                                 \
                        int64_t y = oy * stride - pad + i;                                \
                        for (int64_t ox = 0; ox < Wo; ox++) {                             \
                            int64_t xx = ox * stride - pad + j;                           \
                            row[oy * Wo + ox] = (y >= 0 && y < H && xx >= 0 && xx < W)    \
                                                    ? xi[(ch * H + y) * W + xx]           \
                                                    : (T)0;                               \
                        }                                                                 \
                    }                                                                     \
                }                                                                         \
    } while (0)

#define COL2IM_BODY(T)                                                                    \
    do {                                                                                  \
        T *d = dx;                                                                        \
        const T *c = cols;                                                                \
        for (int64_t ch = 0; ch < C; ch++)                                                \
            for (int i = 0; i < kh; i++)                                                  \
                for (int j = 0; j < kw; j++) {                                            \
                    const T *row = c + ((ch * kh + i) * kw + j) * Ho * Wo;                \
                    for (int64_t oy = 0; oy < Ho; oy++) {                                 \
                        int64_t y = oy * stride - pad + i;                                \
                        if (y < 0 || y >= H) continue;                                    \
                        for (int64_t ox = 0; ox < Wo; ox++) {                             \
                            int64_t xx = ox * stride - pad + j;                           \
                            if (xx >= 0 && xx < W) d[(ch * H + y) * W + xx] += row[oy * Wo + ox]; \
                        }                                                                 \
                    }                                                                     \
                }                                                                         \
    } while (0)

void sq_cpu_im2col(sq_dtype dt, void *cols, const void *x, int64_t C, int64_t H, int64_t W,
                   int kh, int kw, int stride, int pad, int64_t Ho, int64_t Wo)
{
    if (dt == SQ_F32) IM2COL_BODY(float);
    else IM2COL_BODY(double);
}

void sq_cpu_col2im(sq_dtype dt, void *dx, const void *cols, int64_t C, int64_t H, int64_t W,
                   int kh, int kw, int stride, int pad, int64_t Ho, int64_t Wo)
{
    if (dt == SQ_F32) COL2IM_BODY(float);
    else COL2IM_BODY(double);
}
