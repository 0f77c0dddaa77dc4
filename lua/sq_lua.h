/* sq_lua.h — shared plumbing for squeeze's Lua bindings (the only layer that
 * raises Lua errors).
 *
 * The C module `squeeze.core` is one table.  Each binding file contributes a
 * set of functions through an open function below; every function is
 * registered with ONE upvalue: the userdata holding this Lua state's sq_ctx
 * (no globals; configuration in an upvalue, as lua-cjson does).
 *
 * Error conventions (style.md):
 *  - argument errors:  luaL_argerror -> "bad argument #2 to 'matmul' (shapes 3x4 and 5x6 do not match)"
 *  - engine failures:  sq_lua_raise(L, "name", st) -> "name: <ctx->err>"
 *  - environmental failures in I/O-ish calls may instead return nil, message.
 *  A binding releases every tensor it owns before raising. */
#ifndef SQ_LUA_H
#define SQ_LUA_H

#include <lauxlib.h>
#include <lua.h>

#include "sq_ops.h"

#define SQ_LUA_TENSOR_MT "squeeze.Tensor"

/* Tensor userdata: t becomes NULL after __close / __gc (both idempotent). */
typedef struct { sq_tensor *t; } sq_lua_tensor;

/* What the ctx upvalue holds: the engine context first (so its address is
 * the sq_ctx's), then the Lua layer's own bookkeeping. */
typedef struct {
    sq_ctx ctx;
    /* Dead tensor userdata keep their device memory until Lua collects them,
     * and Lua's collector only sees its own small heap (sq_lua_device_gc):
     * ctx.mem.allocated[SQ_CUDA] at the last collection (mark) and at the
     * last full one (full_mark); backward passes seen; whether the collector
     * was switched to generational mode. */
    int64_t gc_mark, gc_full_mark, gc_backwards;
    int gc_generational;
} sq_lua_state;

/* The context of this Lua state (upvalue 1 of every binding function). */
sq_ctx *sq_lua_ctx(lua_State *L);
/* Gives the GPU memory of dead tensor userdata back (a dead intermediate
 * result holds its GPU memory until collected, where Python would free it
 * at once).  Once the GPU is in use the collector runs in generational mode,
 * and a young collection -- cheap: it visits what was created since the
 * last one -- runs before and after every backward pass (the forward's
 * leftovers, then the step's activations) and whenever the GPU allocated
 * 128 MiB since the last collection; a full collection follows a backward
 * pass after 1 GiB of GPU allocation, and at least every 64.  Never
 * collects in a CPU-only run. */
enum { SQ_LUA_GC_PRESSURE = 0, SQ_LUA_GC_BEFORE_BACKWARD, SQ_LUA_GC_AFTER_BACKWARD };
void sq_lua_device_gc(lua_State *L, int when);
/* Raises "bad argument #arg to 'fn' (tensor expected, got X)" or "(tensor is closed)". */
sq_tensor *sq_lua_check_tensor(lua_State *L, int arg);
/* nil/none -> NULL, otherwise as sq_lua_check_tensor. */
sq_tensor *sq_lua_opt_tensor(lua_State *L, int arg);
/* Pushes a tensor userdata taking ownership of one reference of t. */
void sq_lua_push_tensor(lua_State *L, sq_tensor *t);
/* Raises "<fname>: <ctx->err>".  Never returns. */
int sq_lua_raise(lua_State *L, const char *fname, sq_status st);
/* Reads a shape from a table of integers or from integer args starting at arg. */
int sq_lua_check_shape(lua_State *L, int arg, int64_t *shape);
/* Adds fns to the table at the top of the stack, each with the ctx upvalue
 * (the ctx userdata must be at absolute index ctx_index). */
void sq_lua_setfuncs(lua_State *L, const luaL_Reg *fns, int ctx_index);

/* Registers metatable `name` once: __index = methods (each with the ctx
 * upvalue), __gc and __close = close (must be idempotent), __tostring = tostr
 * when given.  Leaves the stack as it was. */
void sq_lua_new_class(lua_State *L, const char *name, const luaL_Reg *methods,
                      lua_CFunction close, lua_CFunction tostr, int ctx_index);

/* Open functions: each adds its functions to the core table at the top of
 * the stack; ctx_index is the absolute index of the ctx userdata. */
void sq_lua_open_tensor(lua_State *L, int ctx_index);  /* l_tensor.c: tensors, ops, autograd, memory */
void sq_lua_open_optim(lua_State *L, int ctx_index);   /* l_optim.c: SGD, AdamW */
void sq_lua_open_data(lua_State *L, int ctx_index);    /* l_data.c: IDX, text corpora, batching */
void sq_lua_open_h5(lua_State *L, int ctx_index);      /* l_h5.c: HDF5 save / load of tensors */
void sq_lua_open_lowrank(lua_State *L, int ctx_index); /* l_lowrank.c: SVD, low-rank decomposition, rank search */
void sq_lua_open_store(lua_State *L, int ctx_index);   /* l_store.c: SQLite results store */
void sq_lua_open_proc(lua_State *L, int ctx_index);    /* l_proc.c: processes, signals, files for the runner */
void sq_lua_open_actprune(lua_State *L, int ctx_index); /* l_actprune.c: pruned linear, BSR prune-and-pack */
void sq_lua_open_cuda(lua_State *L, int ctx_index);    /* l_cuda.c: the GPU: availability, sync, TF32, memory, events */

/* luaopen for `require "squeeze.core"` (l_core.c). */
int luaopen_squeeze_core(lua_State *L);

#endif
