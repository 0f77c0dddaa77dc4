/* sq_h5.h — save and load a set of named tensors as an HDF5 file.
 *
 * Layout (readable by h5py and the HDF5 tools):
 *  - a tensor named "layers.1.weight" is the dataset /layers/1/weight (each
 *    dot-separated part a group; names are [A-Za-z0-9_-] parts joined by
 *    dots, so the mapping back is exact);
 *  - the dtype is the dataset's type (float32, float64, int32, int64,
 *    little-endian), the shape its dataspace (a 0-d tensor is a scalar);
 *  - every non-empty dataset of rank >= 1 is chunked with a Fletcher-32
 *    checksum, so corrupted data is detected on load; datasets of 64 KiB and
 *    more are also shuffle + deflate compressed;
 *  - metadata key/value strings are UTF-8 variable-length string attributes
 *    of the root group;
 *  - links are created in save order and tracked by creation order, so a
 *    load returns the tensors in the order they were saved (files written
 *    elsewhere come back in name order).
 * A save writes `<path>.tmp-<pid>`, fsyncs it and renames it over path: an
 * interrupted save leaves the old file (or none), never a half-written one.
 * HDF5's automatic error printing is off during every call; its innermost
 * message is folded into ours instead. */
#ifndef SQ_H5_H
#define SQ_H5_H

#include "sq_tensor.h"

/* Saves tensors[i] under names[i] (i < n; any strides, cpu) and the nattr
 * attributes keys[j] = values[j].  Fails without touching path on a bad
 * name, a duplicate, a name that is a prefix group of another ("a.b" and
 * "a.b.c"), or any write error (the temporary file is removed). */
sq_status sq_h5_save(sq_ctx *ctx, const char *path, int n, const char *const *names,
                     sq_tensor *const *tensors, int nattr, const char *const *keys,
                     const char *const *values);

/* Everything in a file.  Owned by the set: names, tensors (one reference
 * each, category OTHER), keys and values. */
typedef struct {
    int n;
    char **names;          /* dotted names, save order */
    sq_tensor **tensors;
    int nattr;
    char **keys, **values; /* root string attributes (other attributes are skipped) */
} sq_h5_set;

/* Loads every dataset of path.  *out: caller owns, free with sq_h5_set_free.
 * SQ_ERR_IO: missing / unreadable; SQ_ERR_FORMAT: not HDF5, corrupt, or a
 * dataset of a type squeeze has no dtype for (the message names it). */
sq_status sq_h5_load(sq_ctx *ctx, const char *path, sq_h5_set **out);
/* Loads one dataset by dotted name; a missing name fails with
 * SQ_ERR_ARG naming the file, the name and what the file holds. */
sq_status sq_h5_load_tensor(sq_ctx *ctx, const char *path, const char *name, sq_tensor **out);
/* Borrowed tensor of the set by name, or NULL. */
sq_tensor *sq_h5_set_get(const sq_h5_set *s, const char *name);
/* Borrowed attribute value by key, or NULL. */
const char *sq_h5_set_attr(const sq_h5_set *s, const char *key);
void sq_h5_set_free(sq_h5_set *s); /* NULL-safe */

#endif
