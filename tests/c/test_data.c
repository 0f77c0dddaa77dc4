/* test_data.c — the IDX loader on small gzip files written here (valid and
 * every way of being wrong), the real Fashion-MNIST when installed,
 * permutations and row gathering, and text-corpus splits and sampling. */
#include "sq_data.h"
#include "sq_test.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

static char tmpdir[256];

static void tmp_path(char *buf, size_t n, const char *name)
{
    snprintf(buf, n, "%s/%s", tmpdir, name);
}

static void put_be32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

/* Writes bytes to path, gzip-compressed (gz = 1) or raw. */
static int write_file(const char *path, const void *data, size_t n, int gz)
{
    if (gz) {
        gzFile f = gzopen(path, "wb");
        if (!f) return 0;
        int ok = n == 0 || gzwrite(f, data, (unsigned)n) == (int)n;
        return gzclose(f) == Z_OK && ok;
    }
    FILE *f = fopen(path, "wb");
    if (!f) return 0;
    int ok = fwrite(data, 1, n, f) == n;
    return fclose(f) == 0 && ok;
}

/* An images file: magic, count, rows, cols, then npix pixel bytes (pixel i = i*7 mod 256). */
static int write_images(const char *name, uint32_t magic, uint32_t count, uint32_t rows, uint32_t cols,
                        size_t npix, int gz)
{
    unsigned char *b = malloc(16 + npix);
    if (!b) return 0;
    put_be32(b, magic);
    put_be32(b + 4, count);
    put_be32(b + 8, rows);
    put_be32(b + 12, cols);
    for (size_t i = 0; i < npix; i++) b[16 + i] = (unsigned char)(i * 7 % 256);
    char p[512];
    tmp_path(p, sizeof p, name);
    int ok = write_file(p, b, 16 + npix, gz);
    free(b);
    return ok;
}

static int write_labels(const char *name, uint32_t magic, uint32_t count, const unsigned char *lab, size_t n)
{
    unsigned char b[64];
    put_be32(b, magic);
    put_be32(b + 4, count);
    memcpy(b + 8, lab, n);
    char p[512];
    tmp_path(p, sizeof p, name);
    return write_file(p, b, 8 + n, 1);
}

/* Loads images file `img` with labels file `lab` from tmpdir. */
static sq_status load(sq_ctx *ctx, const char *img, const char *lab, const sq_mnist_opts *o, sq_tensor **x,
                      sq_tensor **y)
{
    char ip[512], lp[512];
    tmp_path(ip, sizeof ip, img);
    tmp_path(lp, sizeof lp, lab);
    return sq_data_idx_load(ctx, ip, lp, o, x, y);
}

#define PIX 784
static const unsigned char LAB3[3] = {9, 0, 3};

TEST(idx_valid_files)
{
    sq_ctx ctx;
    sq_ctx_init(&ctx, 1);
    CHECK(write_images("ok-images.gz", 0x803, 3, 28, 28, 3 * PIX, 1));
    CHECK(write_labels("ok-labels.gz", 0x801, 3, LAB3, 3));
    sq_tensor *x = NULL, *y = NULL;
    CHECK_OK(&ctx, load(&ctx, "ok-images.gz", "ok-labels.gz", NULL, &x, &y));
    if (!x) return;
    CHECK(x->dtype == SQ_F32 && x->ndim == 2 && x->shape[0] == 3 && x->shape[1] == PIX);
    CHECK(y->dtype == SQ_I64 && y->ndim == 1 && y->shape[0] == 3);
    for (int i = 0; i < 3; i++) CHECK(sq_tensor_get_flat(y, i) == LAB3[i]);
    int bad = 0;
    for (int i = 0; i < 3 * PIX; i++)
        bad += sq_tensor_get_flat(x, i) != (float)((i * 7 % 256) / 255.0);
    CHECK_MSG(bad == 0, "%d pixels differ from byte/255", bad);
    sq_tensor_release(x);
    sq_tensor_release(y);
    /* (N,1,28,28), normalised */
    sq_mnist_opts o = {NULL, 0, 1, 0.25, 0.5};
    CHECK_OK(&ctx, load(&ctx, "ok-images.gz", "ok-labels.gz", &o, &x, &y));
    if (!x) return;
    CHECK(x->ndim == 4 && x->shape[0] == 3 && x->shape[1] == 1 && x->shape[2] == 28 && x->shape[3] == 28);
    CHECK_NEAR(sq_tensor_get_flat(x, 5), (35 / 255.0 - 0.25) / 0.5, 1e-6);
    CHECK_NEAR(sq_tensor_get_flat(x, 3 * PIX - 1), (((3 * PIX - 1) * 7 % 256) / 255.0 - 0.25) / 0.5, 1e-6);
    sq_tensor_release(x);
    sq_tensor_release(y);
    sq_mnist_opts bad_o = {NULL, 1, 1, 0.25, 0.0};
    CHECK_FAIL(&ctx, SQ_ERR_ARG, "std > 0", load(&ctx, "ok-images.gz", "ok-labels.gz", &bad_o, &x, &y));
    CHECK(ctx.mem.total_cur[SQ_CPU] == 0);
}

/* Each broken file fails with its status and a message naming the file. */
TEST(idx_every_error_is_named)
{
    sq_ctx ctx;
    sq_ctx_init(&ctx, 2);
    sq_tensor *x = NULL, *y = NULL;
    char p[512];
    /* wrong magic: a label file where images belong */
    CHECK(write_images("magic-images.gz", 0x801, 3, 28, 28, 3 * PIX, 1));
    CHECK_FAIL(&ctx, SQ_ERR_FORMAT, "magic-images.gz: bad magic number: expected 0x00000803 (images, idx3 ubyte), found 0x00000801 (a label file)",
               load(&ctx, "magic-images.gz", "ok-labels.gz", NULL, &x, &y));
    CHECK(write_labels("magic-labels.gz", 0x803, 3, LAB3, 3));
    CHECK_FAIL(&ctx, SQ_ERR_FORMAT, "magic-labels.gz: bad magic number: expected 0x00000801",
               load(&ctx, "ok-images.gz", "magic-labels.gz", NULL, &x, &y));
    /* truncated payload */
    CHECK(write_images("short-images.gz", 0x803, 3, 28, 28, 1000, 1));
    CHECK_FAIL(&ctx, SQ_ERR_FORMAT, "short-images.gz: truncated: expected 2352 bytes of pixels, found 1000",
               load(&ctx, "short-images.gz", "ok-labels.gz", NULL, &x, &y));
    CHECK(write_labels("short-labels.gz", 0x801, 3, LAB3, 2));
    CHECK_FAIL(&ctx, SQ_ERR_FORMAT, "short-labels.gz: truncated: expected 3 bytes of labels, found 2",
               load(&ctx, "ok-images.gz", "short-labels.gz", NULL, &x, &y));
    /* truncated header */
    CHECK(write_images("hdr-images.gz", 0x803, 3, 28, 28, 0, 1));
    tmp_path(p, sizeof p, "hdr-images.gz");
    {
        unsigned char h[10] = {0, 0, 8, 3, 0, 0, 0, 3, 0, 0};
        CHECK(write_file(p, h, sizeof h, 1));
    }
    CHECK_FAIL(&ctx, SQ_ERR_FORMAT, "hdr-images.gz: truncated: expected a 16-byte IDX header, found 10 bytes",
               load(&ctx, "hdr-images.gz", "ok-labels.gz", NULL, &x, &y));
    /* trailing garbage */
    CHECK(write_images("long-images.gz", 0x803, 3, 28, 28, 3 * PIX + 5, 1));
    CHECK_FAIL(&ctx, SQ_ERR_FORMAT, "long-images.gz: trailing data: expected exactly 2352 bytes of pixels after the header, found more",
               load(&ctx, "long-images.gz", "ok-labels.gz", NULL, &x, &y));
    /* wrong dims */
    CHECK(write_images("dims-images.gz", 0x803, 3, 32, 28, 3 * 32 * 28, 1));
    CHECK_FAIL(&ctx, SQ_ERR_FORMAT, "dims-images.gz: expected 28x28 images, found 32x28",
               load(&ctx, "dims-images.gz", "ok-labels.gz", NULL, &x, &y));
    /* label out of range */
    const unsigned char badlab[3] = {1, 12, 2};
    CHECK(write_labels("range-labels.gz", 0x801, 3, badlab, 3));
    CHECK_FAIL(&ctx, SQ_ERR_FORMAT, "range-labels.gz: label 12 at index 1 is outside 0..9",
               load(&ctx, "ok-images.gz", "range-labels.gz", NULL, &x, &y));
    /* count mismatch */
    CHECK(write_labels("two-labels.gz", 0x801, 2, LAB3, 2));
    CHECK_FAIL(&ctx, SQ_ERR_FORMAT, "ok-images.gz: count mismatch: 3 images, but",
               load(&ctx, "ok-images.gz", "two-labels.gz", NULL, &x, &y));
    CHECK_FAIL(&ctx, SQ_ERR_FORMAT, "two-labels.gz has 2 labels",
               load(&ctx, "ok-images.gz", "two-labels.gz", NULL, &x, &y));
    /* not gzip at all: the same bytes, uncompressed */
    CHECK(write_images("raw-images", 0x803, 3, 28, 28, 3 * PIX, 0));
    CHECK_FAIL(&ctx, SQ_ERR_FORMAT, "raw-images: not a gzip file: expected the gzip magic 1f 8b, found 00 00",
               load(&ctx, "raw-images", "ok-labels.gz", NULL, &x, &y));
    /* empty file */
    tmp_path(p, sizeof p, "empty.gz");
    CHECK(write_file(p, "", 0, 0));
    CHECK_FAIL(&ctx, SQ_ERR_FORMAT, "empty.gz: empty file",
               load(&ctx, "empty.gz", "ok-labels.gz", NULL, &x, &y));
    /* missing file: says which package provides the dataset */
    CHECK_FAIL(&ctx, SQ_ERR_IO, "nope-images.gz: no such file (Fashion-MNIST comes with the Debian package dataset-fashion-mnist",
               load(&ctx, "nope-images.gz", "ok-labels.gz", NULL, &x, &y));
    sq_mnist_opts o = {tmpdir, 1, 0, 0, 1};
    CHECK_FAIL(&ctx, SQ_ERR_IO, "train-labels-idx1-ubyte.gz: no such file", sq_data_fashion_mnist(&ctx, "train", &o, &x, &y));
    CHECK_FAIL(&ctx, SQ_ERR_ARG, "split must be 'train' or 'test', got 'dev'", sq_data_fashion_mnist(&ctx, "dev", &o, &x, &y));
    /* a header promising far more than the file can hold fails before allocating */
    CHECK(write_images("huge-images.gz", 0x803, 0x7fffffff, 28, 28, 100, 1));
    CHECK(write_labels("huge-labels.gz", 0x801, 0x7fffffff, LAB3, 3));
    CHECK_FAIL(&ctx, SQ_ERR_FORMAT, "huge-labels.gz: truncated or corrupt header: it promises 2147483647 bytes of labels",
               load(&ctx, "ok-images.gz", "huge-labels.gz", NULL, &x, &y));
    CHECK(x == NULL && y == NULL);
    CHECK(ctx.mem.total_cur[SQ_CPU] == 0);
    CHECK(ctx.mem.total_peak[SQ_CPU] < 1 << 20);
}

/* Damage to the compressed bytes themselves: cut-off stream, flipped bits. */
TEST(idx_damaged_gzip)
{
    sq_ctx ctx;
    sq_ctx_init(&ctx, 3);
    sq_tensor *x = NULL, *y = NULL;
    char p[512], q[512];
    CHECK(write_images("big-images.gz", 0x803, 40, 28, 28, 40 * PIX, 1));
    unsigned char lab[40];
    for (int i = 0; i < 40; i++) lab[i] = (unsigned char)(i % 10);
    CHECK(write_labels("big-labels.gz", 0x801, 40, lab, 40));
    CHECK_OK(&ctx, load(&ctx, "big-images.gz", "big-labels.gz", NULL, &x, &y));
    sq_tensor_release(x);
    sq_tensor_release(y);
    x = y = NULL;
    tmp_path(p, sizeof p, "big-images.gz");
    FILE *f = fopen(p, "rb");
    static unsigned char buf[1 << 16];
    size_t n = f ? fread(buf, 1, sizeof buf, f) : 0;
    if (f) fclose(f);
    CHECK(n > 200);
    /* cut the compressed file in half */
    tmp_path(q, sizeof q, "cut-images.gz");
    CHECK(write_file(q, buf, n / 2, 0));
    CHECK_FAIL(&ctx, SQ_ERR_FORMAT, "cut-images.gz: truncated: expected 31360 bytes of pixels, found",
               load(&ctx, "cut-images.gz", "big-labels.gz", NULL, &x, &y));
    CHECK_MSG(strstr(ctx.err, "the gzip stream is cut off") != NULL, "message: %s", ctx.err);
    /* drop only the 8-byte trailer (CRC + size): every pixel arrives, the end does not */
    tmp_path(q, sizeof q, "notrailer-images.gz");
    CHECK(write_file(q, buf, n - 8, 0));
    CHECK_FAIL(&ctx, SQ_ERR_FORMAT, "notrailer-images.gz: gzip stream ends badly after pixels",
               load(&ctx, "notrailer-images.gz", "big-labels.gz", NULL, &x, &y));
    /* flip bits in the CRC: all data decompresses, the check fails */
    buf[n - 7] ^= 0x5a;
    tmp_path(q, sizeof q, "crc-images.gz");
    CHECK(write_file(q, buf, n, 0));
    CHECK_FAIL(&ctx, SQ_ERR_FORMAT, "crc-images.gz: corrupt gzip data while reading",
               load(&ctx, "crc-images.gz", "big-labels.gz", NULL, &x, &y));
    CHECK_MSG(strstr(ctx.err, ": incorrect data check") && !strstr(ctx.err, "reading header: /"),
              "message: %s", ctx.err);
    CHECK(x == NULL && y == NULL);
    CHECK(ctx.mem.total_cur[SQ_CPU] == 0);
}

TEST(real_fashion_mnist)
{
    struct stat sb;
    if (stat(SQ_FASHION_MNIST_DIR "/train-images-idx3-ubyte.gz", &sb) != 0) {
        printf("  (skipped: %s not installed)\n", SQ_FASHION_MNIST_PACKAGE);
        return;
    }
    sq_ctx ctx;
    sq_ctx_init(&ctx, 4);
    sq_tensor *x = NULL, *y = NULL;
    CHECK_OK(&ctx, sq_data_fashion_mnist(&ctx, "train", NULL, &x, &y));
    if (!x) return;
    CHECK(x->ndim == 2 && x->shape[0] == 60000 && x->shape[1] == 784);
    CHECK(y->ndim == 1 && y->shape[0] == 60000);
    /* read from the file with python's gzip module: first labels 9 0 0 3 0 2 7 2 5 5,
     * 6000 of each class, pixel mean 0.2860405969887955, first image's byte sum 76247 */
    const int first[10] = {9, 0, 0, 3, 0, 2, 7, 2, 5, 5};
    for (int i = 0; i < 10; i++) CHECK(sq_tensor_get_flat(y, i) == first[i]);
    int64_t hist[10] = {0};
    const int64_t *lp = sq_tensor_data(y);
    for (int64_t i = 0; i < 60000; i++) hist[lp[i]]++;
    for (int c = 0; c < 10; c++) CHECK(hist[c] == 6000);
    const float *xp = sq_tensor_data(x);
    double sum = 0, sum0 = 0;
    for (int64_t i = 0; i < 60000 * 784; i++) sum += xp[i];
    for (int64_t i = 0; i < 784; i++) sum0 += xp[i];
    CHECK_NEAR(sum / (60000.0 * 784), 0.2860405969887955, 1e-7);
    CHECK_NEAR(sum0 * 255.0, 76247, 1e-2);
    sq_tensor_release(x);
    sq_tensor_release(y);
    sq_mnist_opts o = {NULL, 0, 0, 0, 1};
    CHECK_OK(&ctx, sq_data_fashion_mnist(&ctx, "test", &o, &x, &y));
    if (!x) return;
    CHECK(x->ndim == 4 && x->shape[0] == 10000 && x->shape[1] == 1 && x->shape[2] == 28);
    CHECK(y->shape[0] == 10000 && sq_tensor_get_flat(y, 0) == 9);
    sq_tensor_release(x);
    sq_tensor_release(y);
    CHECK(ctx.mem.total_cur[SQ_CPU] == 0);
}

TEST(permutation_seeded)
{
    sq_ctx a, b, c;
    sq_ctx_init(&a, 42);
    sq_ctx_init(&b, 42);
    sq_ctx_init(&c, 43);
    sq_tensor *pa, *pb, *pc;
    CHECK_OK(&a, sq_data_permutation(&a, 1000, &pa));
    CHECK_OK(&b, sq_data_permutation(&b, 1000, &pb));
    CHECK_OK(&c, sq_data_permutation(&c, 1000, &pc));
    const int64_t *A = sq_tensor_data(pa), *B = sq_tensor_data(pb), *C = sq_tensor_data(pc);
    CHECK(memcmp(A, B, 1000 * sizeof *A) == 0);
    CHECK(memcmp(A, C, 1000 * sizeof *A) != 0);
    char seen[1000] = {0};
    int ok = 1, fixed = 0;
    for (int i = 0; i < 1000; i++) {
        if (A[i] < 0 || A[i] >= 1000 || seen[A[i]]) ok = 0;
        else seen[A[i]] = 1;
        fixed += A[i] == i;
    }
    CHECK(ok);
    CHECK_MSG(fixed < 10, "%d fixed points in a random permutation of 1000", fixed);
    /* the next permutation from the same stream differs */
    sq_tensor *pa2;
    CHECK_OK(&a, sq_data_permutation(&a, 1000, &pa2));
    CHECK(memcmp(A, sq_tensor_data(pa2), 1000 * sizeof *A) != 0);
    sq_tensor *p0, *p1;
    CHECK_OK(&a, sq_data_permutation(&a, 0, &p0));
    CHECK_OK(&a, sq_data_permutation(&a, 1, &p1));
    CHECK(sq_tensor_numel(p0) == 0 && sq_tensor_get_flat(p1, 0) == 0);
    sq_tensor *pn = NULL;
    CHECK_FAIL(&a, SQ_ERR_ARG, "n = -1 must be >= 0", sq_data_permutation(&a, -1, &pn));
    CHECK(pn == NULL);
    sq_tensor_release(pa);
    sq_tensor_release(pa2);
    sq_tensor_release(pb);
    sq_tensor_release(pc);
    sq_tensor_release(p1);
    sq_tensor_release(p0);
    CHECK(a.mem.total_cur[SQ_CPU] == 0);
}

TEST(gather_rows_batches)
{
    sq_ctx ctx;
    sq_ctx_init(&ctx, 5);
    int64_t s[3] = {6, 2, 3};
    sq_tensor *src, *dst = NULL, *out = NULL;
    CHECK_OK(&ctx, sq_tensor_arange(&ctx, SQ_F32, 0, 36, 1, &src));
    sq_tensor *src3;
    CHECK_OK(&ctx, sq_view_raw(&ctx, src, 3, s, (int64_t[]){6, 3, 1}, 0, &src3));
    const int64_t idx[4] = {5, 0, 5, 2};
    CHECK_OK(&ctx, sq_data_gather_rows(&ctx, src3, idx, 4, &out));
    CHECK(out && out->ndim == 3 && out->shape[0] == 4 && out->shape[1] == 2 && out->shape[2] == 3);
    for (int i = 0; out && i < 4; i++)
        for (int j = 0; j < 6; j++) CHECK(sq_tensor_get_flat(out, i * 6 + j) == idx[i] * 6 + j);
    /* into a caller-provided buffer, reused */
    int64_t ds[3] = {4, 2, 3};
    CHECK_OK(&ctx, sq_tensor_zeros(&ctx, SQ_F32, 3, ds, &dst));
    const int64_t idx2[4] = {1, 1, 3, 4};
    CHECK_OK(&ctx, sq_data_gather_rows_into(&ctx, dst, src3, idx2, 4));
    for (int i = 0; i < 4; i++) CHECK(sq_tensor_get_flat(dst, i * 6 + 5) == idx2[i] * 6 + 5);
    const int64_t bad[4] = {1, 6, 0, 0};
    CHECK_FAIL(&ctx, SQ_ERR_ARG, "index 6 at position 1 is out of range for 6 rows",
               sq_data_gather_rows_into(&ctx, dst, src3, bad, 4));
    const int64_t neg[4] = {1, 2, 0, -1};
    CHECK_FAIL(&ctx, SQ_ERR_ARG, "index -1 at position 3 is out of range for 6 rows",
               sq_data_gather_rows_into(&ctx, dst, src3, neg, 4));
    CHECK(sq_tensor_get_flat(dst, 0) == idx2[0] * 6); /* nothing written on failure */
    CHECK_FAIL(&ctx, SQ_ERR_SHAPE, "destination 4x2x3 must be contiguous with shape 3 x (rows of 6x2x3)",
               sq_data_gather_rows_into(&ctx, dst, src3, idx2, 3));
    sq_tensor *tr;
    CHECK_OK(&ctx, sq_view_raw(&ctx, src, 2, (int64_t[]){6, 6}, (int64_t[]){1, 6}, 0, &tr));
    sq_tensor *o2 = NULL;
    CHECK_FAIL(&ctx, SQ_ERR_ARG, "source 6x6 is not contiguous", sq_data_gather_rows(&ctx, tr, idx, 4, &o2));
    CHECK(o2 == NULL);
    sq_tensor_release(tr);
    sq_tensor_release(out);
    sq_tensor_release(dst);
    sq_tensor_release(src3);
    sq_tensor_release(src);
    CHECK(ctx.mem.total_cur[SQ_CPU] == 0);
}

/* A corpus whose three regions are told apart by their letters. */
static int write_corpus(const char *name, int64_t n, char *path, size_t pn)
{
    tmp_path(path, pn, name);
    char *b = malloc((size_t)n);
    if (!b) return 0;
    for (int64_t i = 0; i < n; i++) b[i] = i < n * 9 / 10 ? (char)('a' + i % 26) : i < n * 95 / 100 ? 'v' : 't';
    int ok = write_file(path, b, (size_t)n, 0);
    free(b);
    return ok;
}

TEST(corpus_split_bounds)
{
    sq_ctx ctx;
    sq_ctx_init(&ctx, 6);
    char p[512];
    sq_corpus *c = NULL;
    CHECK(write_corpus("c1000.txt", 1000, p, sizeof p));
    CHECK_OK(&ctx, sq_corpus_load(&ctx, p, NULL, &c));
    if (!c) return;
    CHECK(c->n == 1000 && c->bounds[0] == 0 && c->bounds[1] == 900 && c->bounds[2] == 950 && c->bounds[3] == 1000);
    CHECK(ctx.mem.cur[SQ_CPU][SQ_MEM_OTHER] == 1000);
    uint64_t h = c->hash;
    sq_corpus_free(c);
    CHECK(ctx.mem.total_cur[SQ_CPU] == 0);
    /* floors on an odd size, and the same bounds and hash on a reload */
    CHECK(write_corpus("c1001.txt", 1001, p, sizeof p));
    CHECK_OK(&ctx, sq_corpus_load(&ctx, p, NULL, &c));
    if (!c) return;
    CHECK(c->bounds[1] == 900 && c->bounds[2] == 950 && c->bounds[3] == 1001);
    CHECK(c->hash != h);
    sq_corpus *c2;
    CHECK_OK(&ctx, sq_corpus_load(&ctx, p, NULL, &c2));
    CHECK(c2->hash == c->hash && c2->bounds[2] == c->bounds[2]);
    sq_corpus_free(c2);
    sq_corpus_free(c);
    const double fr[3] = {0.5, 0.25, 0.25};
    CHECK_OK(&ctx, sq_corpus_load(&ctx, p, fr, &c));
    CHECK(c->bounds[1] == 500 && c->bounds[2] == 750 && c->frac[0] == 0.5);
    sq_tensor *val;
    CHECK_OK(&ctx, sq_corpus_split_tokens(&ctx, c, SQ_SPLIT_VAL, &val));
    CHECK(val->shape[0] == 250 && sq_tensor_get_flat(val, 0) == 'a' + 500 % 26);
    sq_tensor_release(val);
    sq_corpus_free(c);
    const double bad[3] = {0.9, 0.05, 0.1};
    CHECK_FAIL(&ctx, SQ_ERR_ARG, "split fractions 0.9 + 0.05 + 0.1", sq_corpus_load(&ctx, p, bad, &c));
    tmp_path(p, sizeof p, "missing.txt");
    CHECK_FAIL(&ctx, SQ_ERR_IO, "missing.txt: cannot open: No such file or directory", sq_corpus_load(&ctx, p, NULL, &c));
    CHECK(sq_corpus_split_id("valid") == SQ_SPLIT_VAL && sq_corpus_split_id("dev") == -1);
    CHECK(ctx.mem.total_cur[SQ_CPU] == 0);
}

TEST(corpus_sampling_deterministic)
{
    sq_ctx a, b;
    sq_ctx_init(&a, 7);
    sq_ctx_init(&b, 7);
    char p[512];
    CHECK(write_corpus("c2000.txt", 2000, p, sizeof p));
    sq_corpus *ca, *cb;
    CHECK_OK(&a, sq_corpus_load(&a, p, NULL, &ca));
    CHECK_OK(&b, sq_corpus_load(&b, p, NULL, &cb));
    if (!ca || !cb) return;
    const int64_t B = 8, T = 16;
    for (int split = 0; split < 3; split++) {
        sq_tensor *xa, *ya, *xb, *yb;
        CHECK_OK(&a, sq_corpus_sample(&a, ca, split, B, T, &xa, &ya));
        CHECK_OK(&b, sq_corpus_sample(&b, cb, split, B, T, &xb, &yb));
        CHECK(xa->dtype == SQ_I64 && xa->ndim == 2 && xa->shape[0] == B && xa->shape[1] == T);
        CHECK(memcmp(sq_tensor_data(xa), sq_tensor_data(xb), (size_t)(B * T) * 8) == 0);
        CHECK(memcmp(sq_tensor_data(ya), sq_tensor_data(yb), (size_t)(B * T) * 8) == 0);
        const int64_t *x = sq_tensor_data(xa), *y = sq_tensor_data(ya);
        int shift_ok = 1, inside = 1;
        for (int64_t r = 0; r < B; r++)
            for (int64_t t = 0; t < T; t++) {
                if (t + 1 < T && y[r * T + t] != x[r * T + t + 1]) shift_ok = 0;
                int64_t v = y[r * T + t], u = x[r * T + t];
                if (split == 0 && (u < 'a' || u > 'z' || v < 'a' || v > 'z')) inside = 0;
                if (split == 1 && (u != 'v' || v != 'v')) inside = 0;
                if (split == 2 && (u != 't' || v != 't')) inside = 0;
            }
        /* the train split is a..z cycling: y is x's successor letter */
        if (split == 0)
            for (int64_t i = 0; i < B * T; i++)
                if (y[i] != 'a' + (x[i] - 'a' + 1) % 26) shift_ok = 0;
        CHECK_MSG(shift_ok, "split %d: targets are not the inputs shifted by one", split);
        CHECK_MSG(inside, "split %d: a window crosses its split boundary", split);
        sq_tensor_release(xa);
        sq_tensor_release(ya);
        sq_tensor_release(xb);
        sq_tensor_release(yb);
    }
    /* val has 100 bytes: T = 99 fits exactly once, T = 100 does not */
    sq_tensor *x, *y;
    CHECK_OK(&a, sq_corpus_sample(&a, ca, SQ_SPLIT_VAL, 2, 99, &x, &y));
    sq_tensor_release(x);
    sq_tensor_release(y);
    CHECK_FAIL(&a, SQ_ERR_ARG, "the val split has 100 bytes; a window of 100 needs at least 101",
               sq_corpus_sample(&a, ca, SQ_SPLIT_VAL, 2, 100, &x, &y));
    CHECK_FAIL(&a, SQ_ERR_ARG, "split 3 is not train", sq_corpus_sample(&a, ca, 3, 2, 4, &x, &y));
    /* a different seed gives different windows */
    sq_ctx c;
    sq_ctx_init(&c, 8);
    sq_tensor *x1, *y1, *x2, *y2;
    CHECK_OK(&a, sq_corpus_sample(&a, ca, 0, B, T, &x1, &y1));
    CHECK_OK(&c, sq_corpus_sample(&c, ca, 0, B, T, &x2, &y2));
    CHECK(memcmp(sq_tensor_data(x1), sq_tensor_data(x2), (size_t)(B * T) * 8) != 0);
    sq_tensor_release(x1);
    sq_tensor_release(y1);
    sq_tensor_release(x2);
    sq_tensor_release(y2);
    sq_corpus_free(ca);
    sq_corpus_free(cb);
    CHECK(a.mem.total_cur[SQ_CPU] == 0 && b.mem.total_cur[SQ_CPU] == 0 && c.mem.total_cur[SQ_CPU] == 0);
}

int main(void)
{
    sq_test_state T_ = {0, 0, 0, NULL};
    snprintf(tmpdir, sizeof tmpdir, "/tmp/sq_test_data_XXXXXX");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    RUN(idx_valid_files);
    RUN(idx_every_error_is_named);
    RUN(idx_damaged_gzip);
    RUN(real_fashion_mnist);
    RUN(permutation_seeded);
    RUN(gather_rows_batches);
    RUN(corpus_split_bounds);
    RUN(corpus_sampling_deterministic);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0) printf("  (could not remove %s)\n", tmpdir);
    printf("%d passed, %d failed\n", T_.passed, T_.failed);
    return T_.failed ? 1 : 0;
}
