/* sq_h5.c — named tensors to and from HDF5 (groups from dotted names,
 * checksummed chunks, deflate for large datasets, atomic rename on save). */
#include "sq_h5.h"

#include <hdf5.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define COMPRESS_MIN_BYTES (64 * 1024)
#define CHUNK_TARGET_BYTES (1024 * 1024)
#define MAX_PATH_CHARS 4096

/* ---- HDF5 error handling ------------------------------------------------------ */

/* Silences HDF5's printing for the duration of one public call. */
typedef struct { H5E_auto2_t func; void *data; } quiet_state;

static void quiet_on(quiet_state *q)
{
    H5Eget_auto2(H5E_DEFAULT, &q->func, &q->data);
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
}

static void quiet_off(const quiet_state *q)
{
    H5Eclear2(H5E_DEFAULT);
    H5Eset_auto2(H5E_DEFAULT, q->func, q->data);
}

typedef struct { char msg[256]; int found; } h5_detail;

static herr_t first_error(unsigned n, const H5E_error2_t *e, void *data)
{
    h5_detail *d = data;
    if (!d->found && e->desc && e->desc[0]) {
        snprintf(d->msg, sizeof d->msg, "%s", e->desc);
        d->found = 1;
    }
    return 0;
}

/* The innermost HDF5 message (where the problem was detected), then clears the stack. */
static const char *h5_why(h5_detail *d)
{
    d->msg[0] = 0;
    d->found = 0;
    H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, first_error, d);
    H5Eclear2(H5E_DEFAULT);
    if (!d->found) snprintf(d->msg, sizeof d->msg, "no detail from HDF5");
    return d->msg;
}

static void close_id(hid_t *id, herr_t (*fn)(hid_t))
{
    if (*id >= 0) fn(*id);
    *id = H5I_INVALID_HID;
}

/* ---- names ------------------------------------------------------------------ */

static int name_char_ok(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
}

static sq_status check_name(sq_ctx *ctx, const char *path, const char *name)
{
    if (!name || !*name) return sq_fail(ctx, SQ_ERR_ARG, "%s: tensor name is empty", path);
    size_t len = strlen(name);
    if (len + 2 > MAX_PATH_CHARS) return sq_fail(ctx, SQ_ERR_ARG, "%s: tensor name too long (%zu chars)", path, len);
    int prev_dot = 1;
    for (size_t i = 0; i < len; i++) {
        char c = name[i];
        if (c == '.') {
            if (prev_dot) break;
            prev_dot = 1;
        } else if (!name_char_ok(c)) {
            return sq_fail(ctx, SQ_ERR_ARG, "%s: tensor name '%s': character '%c' not allowed (names are "
                           "[A-Za-z0-9_-] parts joined by dots)", path, name, c);
        } else {
            prev_dot = 0;
        }
        if (i + 1 == len && !prev_dot) return SQ_OK;
    }
    return sq_fail(ctx, SQ_ERR_ARG, "%s: tensor name '%s' has an empty part (leading, trailing or double dot)",
                   path, name);
}

/* "layers.1.weight" -> "/layers/1/weight" */
static void name_to_h5(const char *name, char *buf)
{
    buf[0] = '/';
    size_t i = 0;
    for (; name[i]; i++) buf[i + 1] = name[i] == '.' ? '/' : name[i];
    buf[i + 1] = 0;
}

/* 1 if a is b or a group above it ("a.b" above "a.b.c") */
static int is_prefix_part(const char *a, const char *b)
{
    size_t la = strlen(a);
    return strncmp(a, b, la) == 0 && (b[la] == 0 || b[la] == '.');
}

static hid_t file_type(sq_dtype dt)
{
    switch (dt) {
    case SQ_F32: return H5T_IEEE_F32LE;
    case SQ_F64: return H5T_IEEE_F64LE;
    case SQ_I32: return H5T_STD_I32LE;
    case SQ_I64: return H5T_STD_I64LE;
    default: return H5I_INVALID_HID;
    }
}

static hid_t mem_type(sq_dtype dt)
{
    switch (dt) {
    case SQ_F32: return H5T_NATIVE_FLOAT;
    case SQ_F64: return H5T_NATIVE_DOUBLE;
    case SQ_I32: return H5T_NATIVE_INT32;
    case SQ_I64: return H5T_NATIVE_INT64;
    default: return H5I_INVALID_HID;
    }
}

/* ---- save ----------------------------------------------------------------------- */

/* Creation-order tracking on every group, so loads return save order. */
static hid_t ordered_gcpl(void)
{
    hid_t p = H5Pcreate(H5P_GROUP_CREATE);
    if (p >= 0) H5Pset_link_creation_order(p, H5P_CRT_ORDER_TRACKED | H5P_CRT_ORDER_INDEXED);
    return p;
}

/* Opens or creates the groups above /a/b/c (a and b); returns b's id. */
static hid_t parent_group(hid_t file, const char *h5name, hid_t gcpl, hid_t lcpl)
{
    char buf[MAX_PATH_CHARS];
    snprintf(buf, sizeof buf, "%s", h5name);
    char *last = strrchr(buf, '/');
    if (last == buf) return H5Gopen2(file, "/", H5P_DEFAULT);
    *last = 0;
    for (char *p = buf + 1;; p++) {
        if (*p == '/' || *p == 0) {
            char save = *p;
            *p = 0;
            htri_t ex = H5Lexists(file, buf, H5P_DEFAULT);
            if (ex < 0) return H5I_INVALID_HID;
            if (!ex) {
                hid_t g = H5Gcreate2(file, buf, lcpl, gcpl, H5P_DEFAULT);
                if (g < 0) return H5I_INVALID_HID;
                H5Gclose(g);
            }
            *p = save;
            if (save == 0) break;
        }
    }
    return H5Gopen2(file, buf, H5P_DEFAULT);
}

static sq_status write_dataset(sq_ctx *ctx, const char *path, hid_t file, const char *name, sq_tensor *t,
                               hid_t gcpl, hid_t lcpl)
{
    char h5name[MAX_PATH_CHARS];
    name_to_h5(name, h5name);
    h5_detail why;
    sq_tensor *c = NULL;
    hid_t space = H5I_INVALID_HID, dcpl = H5I_INVALID_HID, dset = H5I_INVALID_HID, grp = H5I_INVALID_HID;
    sq_status st = sq_tensor_contiguous_raw(ctx, t, &c);
    if (st != SQ_OK) return st;
    int64_t numel = sq_tensor_numel(c);
    size_t es = sq_dtype_size(c->dtype), bytes = (size_t)numel * es;
    hsize_t dims[SQ_MAX_DIMS], chunk[SQ_MAX_DIMS];
    for (int d = 0; d < c->ndim; d++) dims[d] = chunk[d] = (hsize_t)c->shape[d];
    space = c->ndim == 0 ? H5Screate(H5S_SCALAR) : H5Screate_simple(c->ndim, dims, NULL);
    dcpl = H5Pcreate(H5P_DATASET_CREATE);
    if (space < 0 || dcpl < 0) goto h5fail;
    if (c->ndim > 0 && numel > 0) {
        /* halve dims from the outermost until a chunk is about CHUNK_TARGET_BYTES */
        size_t cb = bytes;
        for (int d = 0; cb > CHUNK_TARGET_BYTES && d < c->ndim;) {
            if (chunk[d] <= 1) {
                d++;
                continue;
            }
            hsize_t half = (chunk[d] + 1) / 2;
            cb = cb / chunk[d] * half;
            chunk[d] = half;
        }
        if (H5Pset_chunk(dcpl, c->ndim, chunk) < 0) goto h5fail;
        if (bytes >= COMPRESS_MIN_BYTES && H5Zfilter_avail(H5Z_FILTER_DEFLATE) > 0) {
            if (H5Pset_shuffle(dcpl) < 0 || H5Pset_deflate(dcpl, 4) < 0) goto h5fail;
        }
        if (H5Pset_fletcher32(dcpl) < 0) goto h5fail;
    }
    grp = parent_group(file, h5name, gcpl, lcpl);
    if (grp < 0) goto h5fail;
    dset = H5Dcreate2(file, h5name, file_type(c->dtype), space, lcpl, dcpl, H5P_DEFAULT);
    if (dset < 0) goto h5fail;
    if (numel > 0 && H5Dwrite(dset, mem_type(c->dtype), H5S_ALL, H5S_ALL, H5P_DEFAULT, sq_tensor_data(c)) < 0)
        goto h5fail;
    goto done;
h5fail:
    st = sq_fail(ctx, SQ_ERR_IO, "%s: cannot write dataset '%s': %s", path, name, h5_why(&why));
done:
    close_id(&dset, H5Dclose);
    close_id(&grp, H5Gclose);
    close_id(&dcpl, H5Pclose);
    close_id(&space, H5Sclose);
    sq_tensor_release(c);
    return st;
}

static sq_status write_attr(sq_ctx *ctx, const char *path, hid_t file, const char *key, const char *value)
{
    h5_detail why;
    hid_t type = H5Tcopy(H5T_C_S1), space = H5Screate(H5S_SCALAR), root = H5Gopen2(file, "/", H5P_DEFAULT);
    hid_t attr = H5I_INVALID_HID;
    sq_status st = SQ_OK;
    if (type < 0 || space < 0 || root < 0 || H5Tset_size(type, H5T_VARIABLE) < 0 ||
        H5Tset_cset(type, H5T_CSET_UTF8) < 0)
        goto h5fail;
    attr = H5Acreate2(root, key, type, space, H5P_DEFAULT, H5P_DEFAULT);
    if (attr < 0 || H5Awrite(attr, type, &value) < 0) goto h5fail;
    goto done;
h5fail:
    st = sq_fail(ctx, SQ_ERR_IO, "%s: cannot write attribute '%s': %s", path, key, h5_why(&why));
done:
    close_id(&attr, H5Aclose);
    close_id(&root, H5Gclose);
    close_id(&space, H5Sclose);
    close_id(&type, H5Tclose);
    return st;
}

static sq_status check_save_args(sq_ctx *ctx, const char *path, int n, const char *const *names,
                                 sq_tensor *const *tensors, int nattr, const char *const *keys,
                                 const char *const *values)
{
    if (!path || !*path) return sq_fail(ctx, SQ_ERR_ARG, "h5_save: path is empty");
    if (strlen(path) + 32 > MAX_PATH_CHARS) return sq_fail(ctx, SQ_ERR_ARG, "h5_save: path too long");
    if (n < 0 || nattr < 0 || (n > 0 && (!names || !tensors)) || (nattr > 0 && (!keys || !values)))
        return sq_fail(ctx, SQ_ERR_ARG, "%s: tensor or attribute list missing", path);
    for (int i = 0; i < n; i++) {
        SQ_TRY(check_name(ctx, path, names[i]));
        const sq_tensor *t = tensors[i];
        if (!t) return sq_fail(ctx, SQ_ERR_ARG, "%s: tensor '%s' is missing", path, names[i]);
        if (file_type(t->dtype) < 0)
            return sq_fail(ctx, SQ_ERR_DTYPE, "%s: tensor '%s' has dtype %s, which cannot be saved", path, names[i],
                           sq_dtype_name(t->dtype));
        if (t->storage->device != SQ_CPU)
            return sq_fail(ctx, SQ_ERR_DEVICE, "%s: tensor '%s' is on %s; save a cpu copy", path, names[i],
                           sq_device_name(t->storage->device));
        for (int j = 0; j < i; j++) {
            if (strcmp(names[i], names[j]) == 0)
                return sq_fail(ctx, SQ_ERR_ARG, "%s: tensor name '%s' appears twice", path, names[i]);
            if (is_prefix_part(names[i], names[j]) || is_prefix_part(names[j], names[i]))
                return sq_fail(ctx, SQ_ERR_ARG, "%s: tensor names '%s' and '%s' clash (one would be a group "
                               "holding the other)", path, names[j], names[i]);
        }
    }
    for (int i = 0; i < nattr; i++) {
        if (!keys[i] || !*keys[i] || !values[i])
            return sq_fail(ctx, SQ_ERR_ARG, "%s: attribute %d has an empty key or a missing value", path, i + 1);
        for (int j = 0; j < i; j++)
            if (strcmp(keys[i], keys[j]) == 0)
                return sq_fail(ctx, SQ_ERR_ARG, "%s: attribute '%s' appears twice", path, keys[i]);
    }
    return SQ_OK;
}

sq_status sq_h5_save(sq_ctx *ctx, const char *path, int n, const char *const *names,
                     sq_tensor *const *tensors, int nattr, const char *const *keys,
                     const char *const *values)
{
    SQ_TRY(check_save_args(ctx, path, n, names, tensors, nattr, keys, values));
    char tmp[MAX_PATH_CHARS];
    snprintf(tmp, sizeof tmp, "%s.tmp-%ld", path, (long)getpid());
    /* a plain open first: its errno says why a file cannot be created */
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0666);
    if (fd < 0) return sq_fail(ctx, SQ_ERR_IO, "%s: cannot create %s: %s", path, tmp, strerror(errno));
    close(fd);
    quiet_state q;
    quiet_on(&q);
    h5_detail why;
    sq_status st = SQ_OK;
    hid_t fcpl = H5Pcreate(H5P_FILE_CREATE), fapl = H5Pcreate(H5P_FILE_ACCESS), gcpl = ordered_gcpl();
    hid_t lcpl = H5Pcreate(H5P_LINK_CREATE), file = H5I_INVALID_HID;
    if (fcpl < 0 || fapl < 0 || gcpl < 0 || lcpl < 0 ||
        H5Pset_link_creation_order(fcpl, H5P_CRT_ORDER_TRACKED | H5P_CRT_ORDER_INDEXED) < 0 ||
        /* v1.8 format objects: checksummed metadata, readable by HDF5 >= 1.8 */
        H5Pset_libver_bounds(fapl, H5F_LIBVER_V18, H5F_LIBVER_V18) < 0)
        goto h5fail;
    file = H5Fcreate(tmp, H5F_ACC_TRUNC, fcpl, fapl);
    if (file < 0) goto h5fail;
    for (int i = 0; i < n && st == SQ_OK; i++) st = write_dataset(ctx, path, file, names[i], tensors[i], gcpl, lcpl);
    for (int i = 0; i < nattr && st == SQ_OK; i++) st = write_attr(ctx, path, file, keys[i], values[i]);
    if (st != SQ_OK) goto done;
    herr_t cl = H5Fclose(file);
    file = H5I_INVALID_HID;
    if (cl < 0) goto h5fail;
    fd = open(tmp, O_RDONLY);
    if (fd < 0 || fsync(fd) != 0) {
        st = sq_fail(ctx, SQ_ERR_IO, "%s: cannot sync %s: %s", path, tmp, strerror(errno));
        if (fd >= 0) close(fd);
        goto done;
    }
    close(fd);
    if (rename(tmp, path) != 0) {
        st = sq_fail(ctx, SQ_ERR_IO, "%s: cannot rename %s into place: %s", path, tmp, strerror(errno));
        goto done;
    }
    goto done;
h5fail:
    st = sq_fail(ctx, SQ_ERR_IO, "%s: cannot write HDF5 file %s: %s", path, tmp, h5_why(&why));
done:
    close_id(&file, H5Fclose);
    close_id(&lcpl, H5Pclose);
    close_id(&gcpl, H5Pclose);
    close_id(&fapl, H5Pclose);
    close_id(&fcpl, H5Pclose);
    if (st != SQ_OK) unlink(tmp);
    quiet_off(&q);
    return st;
}

/* ---- load ---------------------------------------------------------------------- */

static sq_status open_for_read(sq_ctx *ctx, const char *path, hid_t *file)
{
    *file = H5I_INVALID_HID;
    struct stat sb;
    if (!path) return sq_fail(ctx, SQ_ERR_ARG, "h5_load: path is missing");
    if (stat(path, &sb) != 0) return sq_fail(ctx, SQ_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    if (!S_ISREG(sb.st_mode)) return sq_fail(ctx, SQ_ERR_IO, "%s: not a regular file", path);
    if (access(path, R_OK) != 0) return sq_fail(ctx, SQ_ERR_IO, "%s: cannot read: %s", path, strerror(errno));
    h5_detail why;
    htri_t is = H5Fis_hdf5(path);
    if (is == 0)
        return sq_fail(ctx, SQ_ERR_FORMAT, "%s: not an HDF5 file (no HDF5 signature in its %lld bytes)", path,
                       (long long)sb.st_size);
    if (is < 0) return sq_fail(ctx, SQ_ERR_FORMAT, "%s: not a readable HDF5 file: %s", path, h5_why(&why));
    *file = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (*file < 0) return sq_fail(ctx, SQ_ERR_FORMAT, "%s: corrupt HDF5 file: %s", path, h5_why(&why));
    return SQ_OK;
}

/* Maps a dataset's stored type to a dtype (HDF5 converts on read). */
static sq_status dataset_dtype(sq_ctx *ctx, const char *path, const char *name, hid_t dset, sq_dtype *dt)
{
    hid_t type = H5Dget_type(dset);
    h5_detail why;
    if (type < 0) return sq_fail(ctx, SQ_ERR_FORMAT, "%s: dataset '%s': unreadable type: %s", path, name, h5_why(&why));
    H5T_class_t cls = H5Tget_class(type);
    size_t size = H5Tget_size(type);
    H5T_sign_t sign = cls == H5T_INTEGER ? H5Tget_sign(type) : H5T_SGN_ERROR;
    H5Tclose(type);
    if (cls == H5T_FLOAT && (size == 4 || size == 8)) *dt = size == 4 ? SQ_F32 : SQ_F64;
    else if (cls == H5T_INTEGER && size == 4 && sign == H5T_SGN_2) *dt = SQ_I32;
    else if (cls == H5T_INTEGER && (size < 8 || (size == 8 && sign == H5T_SGN_2))) *dt = SQ_I64;
    else
        return sq_fail(ctx, SQ_ERR_FORMAT, "%s: dataset '%s': stored as %s%s of %zu bytes, which has no squeeze "
                       "dtype (float32/64, int32/64)", path, name, sign == H5T_SGN_NONE ? "unsigned " : "",
                       cls == H5T_FLOAT ? "float" : cls == H5T_INTEGER ? "integer" : cls == H5T_STRING ? "string"
                       : "a compound or other non-numeric type", size);
    return SQ_OK;
}

static sq_status read_dataset(sq_ctx *ctx, const char *path, hid_t file, const char *h5name, const char *name,
                              sq_tensor **out)
{
    *out = NULL;
    h5_detail why;
    hid_t dset = H5Dopen2(file, h5name, H5P_DEFAULT), space = H5I_INVALID_HID;
    sq_tensor *t = NULL;
    sq_status st = SQ_OK;
    sq_dtype dt = SQ_F32;
    if (dset < 0) {
        st = sq_fail(ctx, SQ_ERR_FORMAT, "%s: dataset '%s': cannot open: %s", path, name, h5_why(&why));
        goto done;
    }
    SQ_CHECK(dataset_dtype(ctx, path, name, dset, &dt));
    space = H5Dget_space(dset);
    int nd = space >= 0 ? H5Sget_simple_extent_ndims(space) : -1;
    if (nd < 0 || nd > SQ_MAX_DIMS) {
        st = sq_fail(ctx, SQ_ERR_FORMAT, "%s: dataset '%s': rank %d outside 0..%d%s", path, name, nd, SQ_MAX_DIMS,
                     nd < 0 ? " (unreadable dataspace)" : "");
        goto done;
    }
    hsize_t dims[SQ_MAX_DIMS];
    int64_t shape[SQ_MAX_DIMS];
    if (nd > 0) H5Sget_simple_extent_dims(space, dims, NULL);
    for (int d = 0; d < nd; d++) shape[d] = (int64_t)dims[d];
    SQ_CHECK(sq_tensor_empty(ctx, dt, nd, shape, &t));
    if (sq_tensor_numel(t) > 0 && H5Dread(dset, mem_type(dt), H5S_ALL, H5S_ALL, H5P_DEFAULT, t->storage->data) < 0) {
        st = sq_fail(ctx, SQ_ERR_FORMAT, "%s: dataset '%s': corrupt data: %s", path, name, h5_why(&why));
        goto done;
    }
    *out = t;
    t = NULL;
done:
    close_id(&space, H5Sclose);
    close_id(&dset, H5Dclose);
    sq_tensor_release(t);
    return st;
}

typedef struct {
    sq_ctx *ctx;
    const char *path;
    hid_t file;
    sq_h5_set *set;
    int cap;
    sq_status st;
    int names_only;
} visit_state;

static int grow(void **p, int n, size_t es)
{
    void *q = realloc(*p, (size_t)n * es);
    if (!q) return 0;
    *p = q;
    return 1;
}

static herr_t visit_link(hid_t grp, const char *rel, const H5L_info_t *info, void *data)
{
    visit_state *v = data;
    if (info->type != H5L_TYPE_HARD) return 0;
    hid_t obj = H5Oopen(grp, rel, H5P_DEFAULT);
    if (obj < 0) {
        h5_detail why;
        v->st = sq_fail(v->ctx, SQ_ERR_FORMAT, "%s: object '%s': cannot open: %s", v->path, rel, h5_why(&why));
        return -1;
    }
    H5I_type_t kind = H5Iget_type(obj);
    H5Oclose(obj);
    if (kind != H5I_DATASET) return 0;
    sq_h5_set *s = v->set;
    if (s->n == v->cap) {
        int nc = v->cap ? 2 * v->cap : 16;
        if (!grow((void **)&s->names, nc, sizeof *s->names) || !grow((void **)&s->tensors, nc, sizeof *s->tensors)) {
            v->st = sq_fail(v->ctx, SQ_ERR_NOMEM, "%s: out of host memory listing datasets", v->path);
            return -1;
        }
        v->cap = nc;
    }
    char *name = strdup(rel);
    if (!name) {
        v->st = sq_fail(v->ctx, SQ_ERR_NOMEM, "%s: out of host memory", v->path);
        return -1;
    }
    for (char *p = name; *p; p++)
        if (*p == '/') *p = '.';
    char h5name[MAX_PATH_CHARS];
    snprintf(h5name, sizeof h5name, "/%s", rel);
    sq_tensor *t = NULL;
    if (!v->names_only) v->st = read_dataset(v->ctx, v->path, v->file, h5name, name, &t);
    if (v->st != SQ_OK) {
        free(name);
        return -1;
    }
    s->names[s->n] = name;
    s->tensors[s->n] = t;
    s->n++;
    return 0;
}

typedef struct {
    sq_ctx *ctx;
    const char *path;
    sq_h5_set *set;
    int cap;
    sq_status st;
} attr_state;

/* One root attribute: string ones are kept, others skipped. */
static herr_t visit_attr(hid_t loc, const char *key, const H5A_info_t *info, void *data)
{
    attr_state *v = data;
    h5_detail why;
    hid_t a = H5Aopen(loc, key, H5P_DEFAULT);
    if (a < 0) {
        v->st = sq_fail(v->ctx, SQ_ERR_FORMAT, "%s: attribute '%s': cannot open: %s", v->path, key, h5_why(&why));
        return -1;
    }
    hid_t type = H5Aget_type(a), space = H5Aget_space(a);
    int is_str = type >= 0 && H5Tget_class(type) == H5T_STRING && space >= 0 &&
                 H5Sget_simple_extent_npoints(space) == 1;
    char *val = NULL;
    if (is_str && H5Tis_variable_str(type) > 0) {
        char *vs = NULL;
        hid_t mt = H5Tcopy(H5T_C_S1);
        if (mt >= 0 && H5Tset_size(mt, H5T_VARIABLE) >= 0 && H5Tset_cset(mt, H5Tget_cset(type)) >= 0 &&
            H5Aread(a, mt, &vs) >= 0 && vs) {
            val = strdup(vs);
            H5free_memory(vs);
        }
        if (mt >= 0) H5Tclose(mt);
    } else if (is_str) {
        size_t sz = H5Tget_size(type);
        val = calloc(sz + 1, 1);
        if (val && H5Aread(a, type, val) < 0) {
            free(val);
            val = NULL;
        }
    }
    if (space >= 0) H5Sclose(space);
    if (type >= 0) H5Tclose(type);
    H5Aclose(a);
    if (!is_str) return 0;
    sq_h5_set *s = v->set;
    char *k = val ? strdup(key) : NULL;
    if (!val || !k) {
        free(val);
        v->st = sq_fail(v->ctx, SQ_ERR_FORMAT, "%s: attribute '%s': cannot read: %s", v->path, key, h5_why(&why));
        return -1;
    }
    if (s->nattr == v->cap) {
        int nc = v->cap ? 2 * v->cap : 8;
        if (!grow((void **)&s->keys, nc, sizeof *s->keys) || !grow((void **)&s->values, nc, sizeof *s->values)) {
            free(val);
            free(k);
            v->st = sq_fail(v->ctx, SQ_ERR_NOMEM, "%s: out of host memory for attributes", v->path);
            return -1;
        }
        v->cap = nc;
    }
    s->keys[s->nattr] = k;
    s->values[s->nattr] = val;
    s->nattr++;
    return 0;
}

static sq_status read_attrs(sq_ctx *ctx, const char *path, hid_t file, sq_h5_set *s)
{
    h5_detail why;
    attr_state v = {ctx, path, s, 0, SQ_OK};
    hid_t root = H5Gopen2(file, "/", H5P_DEFAULT);
    if (root < 0) return sq_fail(ctx, SQ_ERR_FORMAT, "%s: cannot open the root group: %s", path, h5_why(&why));
    herr_t r = H5Aiterate2(root, H5_INDEX_NAME, H5_ITER_INC, NULL, visit_attr, &v);
    H5Gclose(root);
    if (v.st != SQ_OK) return v.st;
    if (r < 0) return sq_fail(ctx, SQ_ERR_FORMAT, "%s: cannot list the root attributes: %s", path, h5_why(&why));
    return SQ_OK;
}

/* Fills s with every dataset below the root (names only when names_only). */
static sq_status collect(sq_ctx *ctx, const char *path, hid_t file, sq_h5_set *s, int names_only)
{
    visit_state v = {ctx, path, file, s, 0, SQ_OK, names_only};
    /* creation order where the writer tracked it (our files), else names */
    herr_t r = H5Lvisit(file, H5_INDEX_CRT_ORDER, H5_ITER_INC, visit_link, &v);
    if (r < 0 && v.st == SQ_OK) {
        H5Eclear2(H5E_DEFAULT);
        for (int i = 0; i < s->n; i++) {
            free(s->names[i]);
            sq_tensor_release(s->tensors[i]);
        }
        s->n = 0;
        r = H5Lvisit(file, H5_INDEX_NAME, H5_ITER_INC, visit_link, &v);
    }
    if (v.st != SQ_OK) return v.st;
    if (r < 0) {
        h5_detail why;
        return sq_fail(ctx, SQ_ERR_FORMAT, "%s: corrupt HDF5 file: cannot list its datasets: %s", path, h5_why(&why));
    }
    return SQ_OK;
}

sq_status sq_h5_load(sq_ctx *ctx, const char *path, sq_h5_set **out)
{
    *out = NULL;
    quiet_state q;
    quiet_on(&q);
    hid_t file;
    sq_status st = open_for_read(ctx, path, &file);
    sq_h5_set *s = NULL;
    if (st != SQ_OK) goto done;
    s = calloc(1, sizeof *s);
    if (!s) {
        st = sq_fail(ctx, SQ_ERR_NOMEM, "%s: out of host memory", path);
        goto done;
    }
    SQ_CHECK(collect(ctx, path, file, s, 0));
    SQ_CHECK(read_attrs(ctx, path, file, s));
    *out = s;
    s = NULL;
done:
    sq_h5_set_free(s);
    if (file >= 0) H5Fclose(file);
    quiet_off(&q);
    return st;
}

/* "the file has 3: a, b, c" (at most 8 names) into buf, for "missing" messages. */
static void list_names(sq_ctx *ctx, const char *path, hid_t file, char *buf, size_t n)
{
    buf[0] = 0;
    sq_h5_set *s = calloc(1, sizeof *s);
    char keep[sizeof ctx->err];
    memcpy(keep, ctx->err, sizeof keep);
    if (s && collect(ctx, path, file, s, 1) == SQ_OK) {
        size_t used = (size_t)snprintf(buf, n, "the file has %d:", s->n);
        for (int i = 0; i < s->n && used < n; i++) {
            if (i == 8) {
                snprintf(buf + used, n - used, " ...");
                break;
            }
            used += (size_t)snprintf(buf + used, n - used, "%s %s", i ? "," : "", s->names[i]);
        }
    }
    memcpy(ctx->err, keep, sizeof keep);
    sq_h5_set_free(s);
}

sq_status sq_h5_load_tensor(sq_ctx *ctx, const char *path, const char *name, sq_tensor **out)
{
    *out = NULL;
    if (!name || !*name) return sq_fail(ctx, SQ_ERR_ARG, "%s: dataset name is empty", path ? path : "h5_load");
    if (strlen(name) + 2 > MAX_PATH_CHARS) return sq_fail(ctx, SQ_ERR_ARG, "%s: dataset name too long", path);
    quiet_state q;
    quiet_on(&q);
    hid_t file;
    int missing = 0;
    sq_status st = open_for_read(ctx, path, &file);
    if (st == SQ_OK) {
        char h5name[MAX_PATH_CHARS];
        name_to_h5(name, h5name);
        /* each level must exist before the next can be asked about */
        for (char *p = h5name + 1; !missing; p++) {
            if (*p == '/' || *p == 0) {
                char save = *p;
                *p = 0;
                if (H5Lexists(file, h5name, H5P_DEFAULT) <= 0) missing = 1;
                *p = save;
                if (save == 0) break;
            }
        }
        if (!missing) {
            hid_t obj = H5Oopen(file, h5name, H5P_DEFAULT);
            missing = obj < 0 || H5Iget_type(obj) != H5I_DATASET;
            if (obj >= 0) H5Oclose(obj);
        }
        H5Eclear2(H5E_DEFAULT);
        if (!missing) {
            st = read_dataset(ctx, path, file, h5name, name, out);
        } else {
            char names[512];
            list_names(ctx, path, file, names, sizeof names);
            st = sq_fail(ctx, SQ_ERR_ARG, "%s: no dataset '%s'%s%s", path, name, names[0] ? "; " : "", names);
        }
        H5Fclose(file);
    }
    quiet_off(&q);
    return st;
}

sq_tensor *sq_h5_set_get(const sq_h5_set *s, const char *name)
{
    for (int i = 0; s && i < s->n; i++)
        if (strcmp(s->names[i], name) == 0) return s->tensors[i];
    return NULL;
}

const char *sq_h5_set_attr(const sq_h5_set *s, const char *key)
{
    for (int i = 0; s && i < s->nattr; i++)
        if (strcmp(s->keys[i], key) == 0) return s->values[i];
    return NULL;
}

void sq_h5_set_free(sq_h5_set *s)
{
    if (!s) return;
    for (int i = 0; i < s->n; i++) {
        free(s->names[i]);
        sq_tensor_release(s->tensors[i]);
    }
    for (int i = 0; i < s->nattr; i++) {
        free(s->keys[i]);
        free(s->values[i]);
    }
    free(s->names);
    free(s->tensors);
    free(s->keys);
    free(s->values);
    free(s);
}
