/* main.c — the `squeeze` executable: Lua 5.4 with the engine built in.
 *
 *   squeeze run SCRIPT [key=value ...]   run a Lua script; the parsed
 *                                        arguments are its first vararg
 *   squeeze version                      versions and BLAS configuration
 *   squeeze help | -h | --help           usage
 *   squeeze NAME [args ...]              the command module squeeze.cmd.NAME:
 *                                        main(argv) is called, its result is
 *                                        the exit code
 *
 * `require "squeeze"` works without environment variables: package.path
 * starts with the installed Lua directory (relative to this executable)
 * and then the source tree's lua/ directory. */
#include "sq_lua.h"
#include "sq_cpu.h"

#include <lualib.h>

#include <limits.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifndef SQ_LUA_BUILD_DIR
#define SQ_LUA_BUILD_DIR "lua"
#endif
#ifndef SQ_LUA_INSTALL_REL
#define SQ_LUA_INSTALL_REL "../share/squeeze/lua"
#endif

/* OpenBLAS reports its build; weak so another BLAS links too. */
char *openblas_get_config(void) __attribute__((weak));

static void usage(FILE *f)
{
    fputs("usage: squeeze run SCRIPT [key=value ...] [--results DIR]   run a Lua script (an experiment\n"
          "                                            script runs its base config once, recorded in DIR)\n"
          "       squeeze version                      show versions and BLAS configuration\n"
          "       squeeze help                         show this message\n"
          "       squeeze COMMAND [args ...]           run the command module squeeze.cmd.COMMAND\n"
          "\n"
          "Experiment commands (docs/harness.md; each takes --help):\n"
          "  sweep SCRIPT [-j N] [--retry-failed] [k=v ...]  run a sweep locally, resumably\n"
          "  submit SCRIPT --slurm [--throttle N ...]        submit a sweep as Slurm job arrays\n"
          "  merge | status                                   fold Slurm shards in; every point's state\n"
          "  runs | query SQL | table | plot                  list runs, read-only SQL, paper tables, plots\n"
          "\n"
          "Script arguments: key=value pairs become a table passed to the script as its\n"
          "first vararg (local args = ...) and as require('squeeze').args.  Numbers and\n"
          "true/false are converted; dotted keys (model.depth=4) build nested tables;\n"
          "seed=N seeds the engine's generator.\n",
          f);
}

/* Message handler: adds a traceback to the error message (as lua.c does). */
static int msghandler(lua_State *L)
{
    /* {usage = message}: a mistake in the command line, no traceback */
    if (lua_istable(L, 1) && lua_getfield(L, 1, "usage") == LUA_TSTRING) {
        lua_pushfstring(L, "squeeze run: %s", lua_tostring(L, -1));
        return 1;
    }
    const char *msg = lua_tostring(L, 1);
    if (msg == NULL) {
        if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING) return 1;
        msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
    }
    luaL_traceback(L, L, msg, 1);
    return 1;
}

/* Calls the function below its nargs arguments with the message handler;
 * on error prints the message and traceback to stderr. */
static int docall(lua_State *L, int nargs, int nres)
{
    int base = lua_gettop(L) - nargs;
    lua_pushcfunction(L, msghandler);
    lua_insert(L, base);
    int st = lua_pcall(L, nargs, nres, base);
    lua_remove(L, base);
    if (st != LUA_OK) {
        fprintf(stderr, "%s\n", lua_tostring(L, -1));
        lua_pop(L, 1);
    }
    return st;
}

/* package.path = <exe dir>/<install rel>/?.lua;...;<build dir>/?.lua;...;<default> */
static void set_package_path(lua_State *L)
{
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    if (n > 0) {
        exe[n] = 0;
        char *slash = strrchr(exe, '/');
        if (slash) *slash = 0;
        lua_pushfstring(L, "%s/%s/?.lua;%s/%s/?/init.lua;", exe, SQ_LUA_INSTALL_REL, exe,
                        SQ_LUA_INSTALL_REL);
        luaL_addvalue(&b);
    }
    luaL_addstring(&b, SQ_LUA_BUILD_DIR "/?.lua;" SQ_LUA_BUILD_DIR "/?/init.lua;");
    lua_getglobal(L, "package");
    lua_getfield(L, -1, "path");
    const char *def = lua_tostring(L, -1);
    lua_pushstring(L, def ? def : "");
    lua_remove(L, -2); /* old path */
    lua_remove(L, -2); /* package */
    luaL_addvalue(&b);
    luaL_pushresult(&b);
    lua_getglobal(L, "package");
    lua_insert(L, -2);
    lua_setfield(L, -2, "path");
    /* package.preload["squeeze.core"] */
    lua_getfield(L, -1, "preload");
    lua_pushcfunction(L, luaopen_squeeze_core);
    lua_setfield(L, -2, "squeeze.core");
    lua_pop(L, 2);
}

/* Pushes a table {argv[from], ..., argv[argc-1]}. */
static void push_argv(lua_State *L, int argc, char **argv, int from)
{
    lua_createtable(L, argc > from ? argc - from : 0, 0);
    for (int i = from; i < argc; i++) {
        lua_pushstring(L, argv[i]);
        lua_seti(L, -2, i - from + 1);
    }
}

/* Protected body of `squeeze run`: argv table at 1, script path at 2. */
static int run_script(lua_State *L)
{
    const char *script = luaL_checkstring(L, 2);
    /* core = require "squeeze.core" */
    lua_getglobal(L, "require");
    lua_pushliteral(L, "squeeze.core");
    lua_call(L, 1, 1);
    int core = lua_gettop(L);
    /* args = core.parse_args(argv) */
    lua_getfield(L, core, "parse_args");
    lua_pushvalue(L, 1);
    lua_call(L, 1, 1);
    int args = lua_gettop(L);
    lua_pushvalue(L, args);
    lua_setfield(L, core, "args");
    /* seed= seeds the context's generator */
    if (lua_getfield(L, args, "seed") != LUA_TNIL) {
        if (!lua_isinteger(L, -1) || lua_tointeger(L, -1) < 0)
            return luaL_error(L, "seed=%s: the seed must be an integer >= 0", luaL_tolstring(L, -1, NULL));
        lua_getfield(L, core, "manual_seed");
        lua_pushvalue(L, -2);
        lua_call(L, 1, 0);
    }
    lua_pop(L, 1);
    if (luaL_loadfile(L, script) != LUA_OK) return lua_error(L);
    lua_pushvalue(L, args);
    lua_call(L, 1, 1);
    return 1;
}

/* Protected: (value, argv table, script path, results folder or nil) -> exit
 * code when value is an experiment, else value itself. */
static int run_experiment(lua_State *L)
{
    lua_getglobal(L, "require");
    lua_pushliteral(L, "squeeze.experiment");
    lua_call(L, 1, 1);
    int mod = lua_gettop(L);
    lua_getfield(L, mod, "is_experiment");
    lua_pushvalue(L, 1);
    lua_call(L, 1, 1);
    int is_exp = lua_toboolean(L, -1);
    lua_pop(L, 1);
    if (!is_exp) {
        lua_pushvalue(L, 1);
        return 1;
    }
    lua_getfield(L, mod, "run_once");
    lua_pushvalue(L, 1);
    lua_pushvalue(L, 2);              /* overrides as "key=value" strings */
    lua_createtable(L, 0, 4);         /* opts */
    lua_pushvalue(L, 3);
    lua_setfield(L, -2, "script");
    lua_pushvalue(L, 2);
    lua_setfield(L, -2, "argv");
    lua_pushvalue(L, 4);
    lua_setfield(L, -2, "results");
    lua_pushboolean(L, 1); /* command-line mistakes come back as {usage = message} */
    lua_setfield(L, -2, "cli");
    lua_call(L, 3, 2);
    const char *status = lua_tostring(L, -2);
    const char *id = lua_tostring(L, -1);
    const char *res = lua_isstring(L, 4) ? lua_tostring(L, 4) : "results";
    fprintf(stderr, "squeeze run: run %s %s (%s/squeeze.db)\n", id ? id : "?", status ? status : "?", res);
    lua_pushinteger(L, status && strcmp(status, "finished") == 0 ? 0 : 1);
    return 1;
}

static int cmd_run(lua_State *L, int argc, char **argv)
{
    if (argc < 3) {
        fputs("squeeze run: a script path is required\n\n", stderr);
        usage(stderr);
        return 2;
    }
    if (strcmp(argv[2], "--help") == 0 || strcmp(argv[2], "-h") == 0) {
        usage(stdout);
        return 0;
    }
    if (access(argv[2], R_OK) != 0) { /* a plain message, not a Lua traceback */
        fprintf(stderr, "squeeze run: script '%s' not found or not readable\n", argv[2]);
        return 2;
    }
    /* --results DIR / --results=DIR (where an experiment records; default
     * results/) is the runner's; everything else goes to the script */
    const char *results = NULL;
    int n = 0;
    for (int i = 3; i < argc; i++) {
        if (strcmp(argv[i], "--results") == 0) {
            if (i + 1 >= argc) {
                fputs("squeeze run: --results needs a folder\n", stderr);
                return 2;
            }
            results = argv[++i];
        } else if (strncmp(argv[i], "--results=", 10) == 0) {
            results = argv[i] + 10;
        } else {
            argv[3 + n++] = argv[i]; /* compacted in place: argv is main's to reorder */
        }
    }
    argc = 3 + n;
    lua_pushcfunction(L, run_script);
    push_argv(L, argc, argv, 3);
    lua_pushstring(L, argv[2]);
    if (docall(L, 2, 1) != LUA_OK) return 1;
    /* A script that returns an experiment (squeeze.experiment) runs its base
     * config with the key=value overrides as a one-point sweep recorded in
     * results/, exactly as `squeeze sweep` would record it. */
    if (results && !lua_istable(L, -1))
        fprintf(stderr, "squeeze run: --results applies to experiment scripts; %s returned no experiment, "
                        "so it was ignored\n", argv[2]);
    if (lua_istable(L, -1)) {
        lua_pushcfunction(L, run_experiment);
        lua_insert(L, -2);
        push_argv(L, argc, argv, 3);
        lua_pushstring(L, argv[2]);
        if (results) lua_pushstring(L, results);
        else lua_pushnil(L);
        if (docall(L, 4, 1) != LUA_OK) return 1;
    }
    /* a script may return its exit code; false means failure */
    int code = 0;
    if (lua_isinteger(L, -1)) code = (int)lua_tointeger(L, -1);
    else if (lua_isboolean(L, -1) && !lua_toboolean(L, -1)) code = 1;
    lua_pop(L, 1);
    return code;
}

static int cmd_version(void)
{
    printf("squeeze %s\n", SQ_VERSION);
    printf("%s\n", LUA_RELEASE);
    if (openblas_get_config) printf("BLAS: %s\n", openblas_get_config());
    else printf("BLAS: (configuration not reported)\n");
    printf("BLAS threads: %d\n", sq_cpu_get_threads());
    return 0;
}

/* Protected: finds squeeze.cmd.NAME (name at 1, argv table at 2); returns
 * false when no such module exists, else true and main(argv)'s result. */
static int run_command(lua_State *L)
{
    const char *name = luaL_checkstring(L, 1);
    lua_pushfstring(L, "squeeze.cmd.%s", name);
    int modname = lua_gettop(L);
    /* look for the module first, so that an error inside it is not mistaken
     * for its absence */
    lua_getglobal(L, "package");
    int found = 0;
    if (lua_getfield(L, -1, "preload") == LUA_TTABLE) {
        found = lua_getfield(L, -1, lua_tostring(L, modname)) != LUA_TNIL;
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    if (!found) {
        lua_getfield(L, -1, "searchpath");
        lua_pushvalue(L, modname);
        lua_getfield(L, -3, "path");
        lua_call(L, 2, 1);
        found = !lua_isnil(L, -1);
        lua_pop(L, 1);
    }
    lua_pop(L, 1); /* package */
    if (!found) {
        lua_pushboolean(L, 0);
        lua_pushnil(L);
        return 2;
    }
    lua_getglobal(L, "require");
    lua_pushvalue(L, modname);
    lua_call(L, 1, 1);
    if (!lua_istable(L, -1) || lua_getfield(L, -1, "main") != LUA_TFUNCTION)
        return luaL_error(L, "module %s has no main(argv) function", lua_tostring(L, modname));
    lua_pushboolean(L, 1);
    lua_insert(L, -2); /* true, main */
    lua_pushvalue(L, 2);
    lua_call(L, 1, 1);
    return 2;
}

static int valid_command_name(const char *s)
{
    if (!*s) return 0;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
              *s == '_'))
            return 0;
    return 1;
}

static int cmd_module(lua_State *L, int argc, char **argv)
{
    const char *name = argv[1];
    if (valid_command_name(name)) {
        lua_pushcfunction(L, run_command);
        lua_pushstring(L, name);
        push_argv(L, argc, argv, 2);
        if (docall(L, 2, 2) != LUA_OK) return 1;
        int found = lua_toboolean(L, -2), code = 0;
        if (lua_isinteger(L, -1)) code = (int)lua_tointeger(L, -1);
        else if (lua_isboolean(L, -1) && !lua_toboolean(L, -1)) code = 1;
        lua_pop(L, 2);
        if (found) return code;
    }
    fprintf(stderr, "squeeze: unknown command '%s'\n\n", name);
    usage(stderr);
    return 2;
}

int main(int argc, char **argv)
{
    /* Training reallocates the same activation sizes every step.  glibc serves
     * blocks over 128 KiB with fresh mmaps, so each step paid page faults and
     * kernel page clearing (~10% of a CPU epoch, measured with perf).  Keep
     * large blocks in the heap and let freed memory be reused instead. */
    mallopt(M_MMAP_THRESHOLD, 1 << 30);
    mallopt(M_TRIM_THRESHOLD, 1 << 30);
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "help") == 0 || strcmp(cmd, "-h") == 0 || strcmp(cmd, "--help") == 0) {
        usage(stdout);
        return 0;
    }
    if (strcmp(cmd, "version") == 0 || strcmp(cmd, "--version") == 0) return cmd_version();

    lua_State *L = luaL_newstate();
    if (!L) {
        fputs("squeeze: cannot create a Lua state (out of memory)\n", stderr);
        return 1;
    }
    luaL_openlibs(L);
    set_package_path(L);
    int code = strcmp(cmd, "run") == 0 ? cmd_run(L, argc, argv) : cmd_module(L, argc, argv);
    lua_close(L); /* runs every __gc: tensors give their memory back */
    return code;
}
