/* l_proc.c — Lua binding of the runner's OS helpers (engine/sq_proc.h).
 *
 *   core.proc_spawn{argv = {...}, env = {"K=V"}, log = path, cwd = dir,
 *                   new_group = bool, die_with_parent = bool} -> pid | nil, msg
 *   core.proc_wait(pid [, nohang]) -> nil (still running) |
 *       {pid=, state="exited"|"signaled", code=, signal=, signame=, core=}
 *   core.proc_kill(pid, sig [, group])      sig: number or "TERM", "SIGKILL", ...
 *   core.proc_alive(pid), core.proc_getpid(), core.proc_hostname(),
 *   core.proc_self_exe(), core.proc_getcwd(), core.proc_isatty(fd), core.proc_term_width(fd),
 *   core.proc_monotonic(), core.proc_time(), core.proc_sleep(seconds),
 *   core.proc_signum(name), core.proc_signame(n)
 *   core.proc_signals{"TERM", "INT", ...} -> handle:
 *       handle:take() -> signum, name | nil     (clears)
 *       handle:raise_on_signal(true|false)      count hook on this Lua thread
 *           that raises {squeeze_signal = n, signame = "SIGTERM"} once a
 *           signal has been caught (and again until take() clears it, so a
 *           pcall in user code cannot swallow it)
 *       handle:restore()                        (also __gc / __close)
 *   core.proc_heartbeat(path, interval_s) -> handle (handle:stop(); __gc stops)
 *   core.proc_mkdir_p(path), core.proc_rename(a, b),
 *   core.proc_write_atomic(path, data)       -> true | nil, msg
 *   core.proc_stat(path) -> nil (missing) | {size=, mtime=, dir=}
 *   core.proc_listdir(dir) -> sorted {names} | nil, msg
 * Environmental failures return nil, message; bad arguments raise. */
#include "sq_lua.h"
#include "sq_proc.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

#define SIGNALS_MT "squeeze.ProcSignals"
#define HEARTBEAT_MT "squeeze.ProcHeartbeat"
#define ARMED_KEY "squeeze.proc.armed_signals"

static int fail(lua_State *L) {
    lua_pushnil(L);
    lua_pushstring(L, sq_lua_ctx(L)->err);
    return 2;
}

static int check_signal(lua_State *L, int arg) {
    if (lua_type(L, arg) == LUA_TNUMBER) {
        lua_Integer v = luaL_checkinteger(L, arg);
        if (v <= 0 || v > 64) luaL_argerror(L, arg, "signal number out of range");
        return (int)v;
    }
    const char *name = luaL_checkstring(L, arg);
    int s = sq_proc_signum(name);
    if (!s) luaL_argerror(L, arg, lua_pushfstring(L, "unknown signal '%s'", name));
    return s;
}

/* Reads t[key] as an array of strings into a NULL-terminated vector that
 * lives in a userdata pushed on the stack (freed by Lua). */
static const char **string_vector(lua_State *L, int t, const char *key, int required) {
    int ty = lua_getfield(L, t, key);
    if (ty == LUA_TNIL) {
        lua_pop(L, 1);
        if (required) luaL_argerror(L, 1, lua_pushfstring(L, "'%s' is required", key));
        lua_pushnil(L);   /* keep the stack shape */
        return NULL;
    }
    if (ty != LUA_TTABLE) luaL_argerror(L, 1, lua_pushfstring(L, "'%s' must be a table", key));
    lua_Integer n = luaL_len(L, -1);
    if (required && n < 1) luaL_argerror(L, 1, lua_pushfstring(L, "'%s' is empty", key));
    const char **v = lua_newuserdatauv(L, sizeof(char *) * (size_t)(n + 1), 1);
    lua_pushvalue(L, -2);
    lua_setiuservalue(L, -2, 1);   /* the strings stay referenced by their table */
    for (lua_Integer i = 1; i <= n; i++) {
        lua_geti(L, -2, i);
        if (lua_type(L, -1) != LUA_TSTRING)
            luaL_argerror(L, 1, lua_pushfstring(L, "'%s'[%I] is not a string", key, i));
        v[i - 1] = lua_tostring(L, -1);
        lua_pop(L, 1);
    }
    v[n] = NULL;
    lua_remove(L, -2);
    return v;
}

static const char *opt_field_string(lua_State *L, int t, const char *key) {
    lua_getfield(L, t, key);
    const char *s = NULL;
    if (!lua_isnil(L, -1)) {
        if (lua_type(L, -1) != LUA_TSTRING)
            luaL_argerror(L, 1, lua_pushfstring(L, "'%s' must be a string", key));
        s = lua_tostring(L, -1);
    }
    lua_pop(L, 1);   /* still referenced by the options table */
    return s;
}

static int opt_field_bool(lua_State *L, int t, const char *key, int def) {
    lua_getfield(L, t, key);
    int v = lua_isnil(L, -1) ? def : lua_toboolean(L, -1);
    lua_pop(L, 1);
    return v;
}

static int l_spawn(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    sq_proc_spawn_opts o;
    memset(&o, 0, sizeof o);
    o.argv = string_vector(L, 1, "argv", 1);
    o.env = string_vector(L, 1, "env", 0);
    o.log_path = opt_field_string(L, 1, "log");
    o.cwd = opt_field_string(L, 1, "cwd");
    o.new_group = opt_field_bool(L, 1, "new_group", 0);
    o.die_with_parent = opt_field_bool(L, 1, "die_with_parent", 0);
    int pid = -1;
    if (sq_proc_spawn(sq_lua_ctx(L), &o, &pid) != SQ_OK) return fail(L);
    lua_pushinteger(L, pid);
    return 1;
}

static int l_wait(lua_State *L) {
    lua_Integer pid = luaL_checkinteger(L, 1);
    int nohang = lua_toboolean(L, 2);
    if (pid == 0 || pid < -1) return luaL_argerror(L, 1, "pid must be > 0 or -1");
    sq_proc_exit e;
    int which = 0;
    if (sq_proc_wait(sq_lua_ctx(L), (int)pid, nohang, &which, &e) != SQ_OK) return fail(L);
    if (e.state == SQ_PROC_RUNNING) {
        lua_pushnil(L);
        return 1;
    }
    lua_createtable(L, 0, 6);
    lua_pushinteger(L, which);
    lua_setfield(L, -2, "pid");
    lua_pushstring(L, e.state == SQ_PROC_EXITED ? "exited" : "signaled");
    lua_setfield(L, -2, "state");
    if (e.state == SQ_PROC_EXITED) {
        lua_pushinteger(L, e.code);
        lua_setfield(L, -2, "code");
    } else {
        char buf[32];
        lua_pushinteger(L, e.signal);
        lua_setfield(L, -2, "signal");
        lua_pushstring(L, sq_proc_signame(e.signal, buf, sizeof buf));
        lua_setfield(L, -2, "signame");
        lua_pushboolean(L, e.core_dumped);
        lua_setfield(L, -2, "core");
    }
    return 1;
}

static int l_kill(lua_State *L) {
    lua_Integer pid = luaL_checkinteger(L, 1);
    if (pid <= 0 || pid > INT_MAX) return luaL_argerror(L, 1, "pid must be > 0");
    int sig = check_signal(L, 2);
    if (sq_proc_kill(sq_lua_ctx(L), (int)pid, sig, lua_toboolean(L, 3)) != SQ_OK) return fail(L);
    lua_pushboolean(L, 1);
    return 1;
}

static int l_alive(lua_State *L) {
    lua_Integer pid = luaL_checkinteger(L, 1);
    lua_pushboolean(L, pid > 0 && pid <= INT_MAX && sq_proc_alive((int)pid));
    return 1;
}

static int l_getpid(lua_State *L) {
    lua_pushinteger(L, sq_proc_getpid());
    return 1;
}

static int l_hostname(lua_State *L) {
    char buf[256];
    if (sq_proc_hostname(sq_lua_ctx(L), buf, sizeof buf) != SQ_OK) return fail(L);
    lua_pushstring(L, buf);
    return 1;
}

static int l_self_exe(lua_State *L) {
    char buf[PATH_MAX];
    if (sq_proc_self_exe(sq_lua_ctx(L), buf, sizeof buf) != SQ_OK) return fail(L);
    lua_pushstring(L, buf);
    return 1;
}

static int l_getcwd(lua_State *L) {
    char buf[PATH_MAX];
    if (sq_proc_getcwd(sq_lua_ctx(L), buf, sizeof buf) != SQ_OK) return fail(L);
    lua_pushstring(L, buf);
    return 1;
}

static int l_isatty(lua_State *L) {
    lua_pushboolean(L, sq_proc_isatty((int)luaL_optinteger(L, 1, 1)));
    return 1;
}

static int l_term_width(lua_State *L) {
    lua_pushinteger(L, sq_proc_term_width((int)luaL_optinteger(L, 1, 1)));
    return 1;
}

static int l_monotonic(lua_State *L) {
    lua_pushnumber(L, sq_proc_monotonic());
    return 1;
}

static int l_time(lua_State *L) {
    lua_pushnumber(L, sq_proc_walltime());
    return 1;
}

static int l_sleep(lua_State *L) {
    double s = luaL_checknumber(L, 1);
    if (!(s >= 0) || s > 86400) return luaL_argerror(L, 1, "seconds must be in [0, 86400]");
    sq_proc_sleep(s);
    return 0;
}

static int l_signum(lua_State *L) {
    int s = sq_proc_signum(luaL_checkstring(L, 1));
    if (!s) lua_pushnil(L);
    else lua_pushinteger(L, s);
    return 1;
}

static int l_signame(lua_State *L) {
    char buf[32];
    lua_pushstring(L, sq_proc_signame((int)luaL_checkinteger(L, 1), buf, sizeof buf));
    return 1;
}

/* ---- signals ------------------------------------------------------------- */

typedef struct {
    int installed;
    sq_proc_signals s;
} l_signals;

static int l_signals_new(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    int sigs[SQ_PROC_MAX_SIGNALS];
    lua_Integer n = luaL_len(L, 1);
    if (n < 1 || n > SQ_PROC_MAX_SIGNALS)
        return luaL_argerror(L, 1, lua_pushfstring(L, "1..%d signals expected", SQ_PROC_MAX_SIGNALS));
    for (lua_Integer i = 1; i <= n; i++) {
        lua_geti(L, 1, i);
        sigs[i - 1] = check_signal(L, lua_gettop(L));
        lua_pop(L, 1);
    }
    l_signals *h = lua_newuserdatauv(L, sizeof *h, 0);
    memset(h, 0, sizeof *h);
    luaL_setmetatable(L, SIGNALS_MT);
    if (sq_proc_signals_install(sq_lua_ctx(L), &h->s, sigs, (int)n) != SQ_OK) return fail(L);
    h->installed = 1;
    return 1;
}

static int push_taken(lua_State *L, int sig) {
    if (!sig) {
        lua_pushnil(L);
        return 1;
    }
    char buf[32];
    lua_pushinteger(L, sig);
    lua_pushstring(L, sq_proc_signame(sig, buf, sizeof buf));
    return 2;
}

static int l_signals_take(lua_State *L) {
    l_signals *h = luaL_checkudata(L, 1, SIGNALS_MT);
    if (!h->installed) return luaL_argerror(L, 1, "signal handlers were restored");
    return push_taken(L, sq_proc_signals_take(&h->s));
}

/* Count hook: raises the signal as an error object once one was caught. */
static void signal_hook(lua_State *L, lua_Debug *ar) {
    (void)ar;
    lua_getfield(L, LUA_REGISTRYINDEX, ARMED_KEY);
    l_signals *h = luaL_testudata(L, -1, SIGNALS_MT);
    lua_pop(L, 1);
    if (!h || !h->installed || !h->s.last) return;
    /* The flag stays set: if user code swallows this error with pcall, the
     * hook raises again 1000 instructions later.  take() clears it. */
    int sig = h->s.last;
    char buf[32];
    lua_createtable(L, 0, 2);
    lua_pushinteger(L, sig);
    lua_setfield(L, -2, "squeeze_signal");
    lua_pushstring(L, sq_proc_signame(sig, buf, sizeof buf));
    lua_setfield(L, -2, "signame");
    lua_error(L);
}

static int l_signals_raise(lua_State *L) {
    l_signals *h = luaL_checkudata(L, 1, SIGNALS_MT);
    if (!h->installed) return luaL_argerror(L, 1, "signal handlers were restored");
    if (lua_toboolean(L, 2)) {
        lua_pushvalue(L, 1);
        lua_setfield(L, LUA_REGISTRYINDEX, ARMED_KEY);
        lua_sethook(L, signal_hook, LUA_MASKCOUNT, 1000);
    } else {
        lua_sethook(L, NULL, 0, 0);
        lua_pushnil(L);
        lua_setfield(L, LUA_REGISTRYINDEX, ARMED_KEY);
    }
    return 0;
}

static int l_signals_restore(lua_State *L) {
    l_signals *h = luaL_checkudata(L, 1, SIGNALS_MT);
    if (h->installed) {
        sq_proc_signals_restore(&h->s);
        h->installed = 0;
    }
    return 0;
}

/* ---- heartbeat ------------------------------------------------------------- */

typedef struct { sq_proc_heartbeat *hb; } l_heartbeat;

static int l_heartbeat_new(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    double interval = luaL_checknumber(L, 2);
    if (!(interval > 0) || interval > 86400) return luaL_argerror(L, 2, "interval must be in (0, 86400]");
    l_heartbeat *h = lua_newuserdatauv(L, sizeof *h, 0);
    h->hb = NULL;
    luaL_setmetatable(L, HEARTBEAT_MT);
    if (sq_proc_heartbeat_start(sq_lua_ctx(L), path, interval, &h->hb) != SQ_OK) return fail(L);
    return 1;
}

static int l_heartbeat_stop(lua_State *L) {
    l_heartbeat *h = luaL_checkudata(L, 1, HEARTBEAT_MT);
    sq_proc_heartbeat_stop(h->hb);
    h->hb = NULL;
    return 0;
}

/* ---- files --------------------------------------------------------------------- */

static int l_mkdir_p(lua_State *L) {
    if (sq_proc_mkdir_p(sq_lua_ctx(L), luaL_checkstring(L, 1)) != SQ_OK) return fail(L);
    lua_pushboolean(L, 1);
    return 1;
}

static int l_rename(lua_State *L) {
    if (sq_proc_rename(sq_lua_ctx(L), luaL_checkstring(L, 1), luaL_checkstring(L, 2)) != SQ_OK)
        return fail(L);
    lua_pushboolean(L, 1);
    return 1;
}

static int l_write_atomic(lua_State *L) {
    size_t n;
    const char *path = luaL_checkstring(L, 1);
    const char *data = luaL_checklstring(L, 2, &n);
    if (sq_proc_write_atomic(sq_lua_ctx(L), path, data, n) != SQ_OK) return fail(L);
    lua_pushboolean(L, 1);
    return 1;
}

static int l_stat(lua_State *L) {
    sq_proc_stat s;
    if (sq_proc_stat_path(sq_lua_ctx(L), luaL_checkstring(L, 1), &s) != SQ_OK) return fail(L);
    if (!s.exists) {
        lua_pushnil(L);
        return 1;
    }
    lua_createtable(L, 0, 3);
    lua_pushinteger(L, (lua_Integer)s.size);
    lua_setfield(L, -2, "size");
    lua_pushnumber(L, s.mtime);
    lua_setfield(L, -2, "mtime");
    lua_pushboolean(L, s.is_dir);
    lua_setfield(L, -2, "dir");
    return 1;
}

static int list_one(const char *name, void *ud) {
    lua_State *L = ud;
    lua_pushstring(L, name);
    lua_seti(L, -2, (lua_Integer)luaL_len(L, -2) + 1);
    return 0;
}

static int l_listdir(lua_State *L) {
    const char *dir = luaL_checkstring(L, 1);
    lua_newtable(L);
    if (sq_proc_listdir(sq_lua_ctx(L), dir, list_one, L) != SQ_OK) return fail(L);
    /* sorted, so that callers see a stable order */
    lua_getglobal(L, "table");
    lua_getfield(L, -1, "sort");
    lua_pushvalue(L, -3);
    lua_call(L, 1, 0);
    lua_pop(L, 1);
    return 1;
}

static const luaL_Reg proc_fns[] = {
    {"proc_spawn", l_spawn},
    {"proc_wait", l_wait},
    {"proc_kill", l_kill},
    {"proc_alive", l_alive},
    {"proc_getpid", l_getpid},
    {"proc_hostname", l_hostname},
    {"proc_self_exe", l_self_exe},
    {"proc_getcwd", l_getcwd},
    {"proc_isatty", l_isatty},
    {"proc_term_width", l_term_width},
    {"proc_monotonic", l_monotonic},
    {"proc_time", l_time},
    {"proc_sleep", l_sleep},
    {"proc_signum", l_signum},
    {"proc_signame", l_signame},
    {"proc_signals", l_signals_new},
    {"proc_heartbeat", l_heartbeat_new},
    {"proc_mkdir_p", l_mkdir_p},
    {"proc_rename", l_rename},
    {"proc_write_atomic", l_write_atomic},
    {"proc_stat", l_stat},
    {"proc_listdir", l_listdir},
    {NULL, NULL},
};

static const luaL_Reg signals_methods[] = {
    {"take", l_signals_take},
    {"raise_on_signal", l_signals_raise},
    {"restore", l_signals_restore},
    {NULL, NULL},
};

static const luaL_Reg heartbeat_methods[] = {
    {"stop", l_heartbeat_stop},
    {NULL, NULL},
};


void sq_lua_open_proc(lua_State *L, int ctx_index) {
    sq_lua_new_class(L, SIGNALS_MT, signals_methods, l_signals_restore, NULL, ctx_index);
    sq_lua_new_class(L, HEARTBEAT_MT, heartbeat_methods, l_heartbeat_stop, NULL, ctx_index);
    sq_lua_setfuncs(L, proc_fns, ctx_index);
}
