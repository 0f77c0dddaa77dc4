-- squeeze.experiment — declaring an experiment and resolving its points.
--
--   local sq = require "squeeze"
--   return sq.experiment {            -- or require("squeeze.experiment"){...}
--     name   = "quickstart",          -- the sweep's name: results/sweeps/<name>/
--     config = { lr = 1e-3, seed = 0, model = { depth = 2 } },   -- base config
--     sweep  = sq.sweep.grid { lr = sq.sweep.logspace(-4, -2, 3), seed = {0, 1, 2} },
--     filter = function(cfg) return cfg.lr < 1e-2 or cfg.model.depth < 4 end,
--     run    = function(cfg, run) ... run:log("loss", l, step) ... end,
--     checkpoint = function(cfg, run) ... end,   -- on preemption, before requeue
--   }
--
-- Everything a user can get wrong is checked before any database is opened
-- for writing: an axis or override key that is not in the base config (with
-- a "did you mean" suggestion), a value of the wrong type, a malformed range,
-- a filter that raises or drops every point.
--
-- Identity: a point's config is encoded as canonical JSON (squeeze.json:
-- sorted keys, exact numbers); config_hash = FNV-1a 64 of that text and the
-- run id = FNV-1a 64 of "<sweep name>\n<canonical JSON>", both 16 hex digits.
-- The same config in the same sweep is the same run, on every machine.
local json = require "squeeze.json"
local sweep = require "squeeze.sweep"

local M = {}
local fmt = string.format

local EXPERIMENT = {}   -- metatable marking experiment objects
M.EXPERIMENT = EXPERIMENT

-- ---- helpers ------------------------------------------------------------------

local function deepcopy(v)
  if type(v) ~= "table" then return v end
  local c = {}
  for k, x in pairs(v) do c[k] = deepcopy(x) end
  return c
end
M.deepcopy = deepcopy

local function is_group(v)
  return type(v) == "table" and not json.array_len(v) and next(v) ~= nil
end

-- Every key path of a config: leaves and groups, dotted.
local function all_paths(cfg, prefix, out)
  out = out or {}
  for k, v in pairs(cfg) do
    local p = prefix and (prefix .. "." .. k) or k
    out[#out + 1] = p
    if is_group(v) then all_paths(v, p, out) end
  end
  return out
end

local function levenshtein(a, b)
  local prev = {}
  for j = 0, #b do prev[j] = j end
  for i = 1, #a do
    local cur = { [0] = i }
    for j = 1, #b do
      local cost = a:byte(i) == b:byte(j) and 0 or 1
      cur[j] = math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
    end
    prev = cur
  end
  return prev[#b]
end

local function suggest(key, cfg)
  local best, bd = nil, math.huge
  local paths = all_paths(cfg)
  table.sort(paths)
  for _, p in ipairs(paths) do
    local d = levenshtein(key, p)
    if d < bd then best, bd = p, d end
  end
  local hint = ""
  if best and bd <= math.max(2, #key // 3) then hint = fmt(" (did you mean '%s'?)", best) end
  local top = {}
  for k in pairs(cfg) do top[#top + 1] = k end
  table.sort(top)
  return hint .. "; the base config has: " .. table.concat(top, ", ")
end

-- Value at a dotted path (nil, "missing" when absent).
local function get_path(cfg, key)
  local t = cfg
  for part in key:gmatch("[^.]+") do
    if type(t) ~= "table" then return nil, "missing" end
    t = t[part]
    if t == nil then return nil, "missing" end
  end
  return t
end
M.get_path = get_path

local function set_path(cfg, key, v)
  local t, parts = cfg, {}
  for part in key:gmatch("[^.]+") do parts[#parts + 1] = part end
  for i = 1, #parts - 1 do t = t[parts[i]] end
  t[parts[#parts]] = v
end

local function kind_of(v)
  if type(v) == "table" then return is_group(v) and "group" or "list" end
  return type(v)
end

local function show(v)
  if type(v) == "string" then return fmt("%q", v) end
  if type(v) == "table" then
    local ok, s = pcall(json.encode, v)
    return ok and s or tostring(v)
  end
  return tostring(v)
end

-- Checks that key exists in base and v fits its type.  what: "override",
-- "sweep axis".  Raises a message naming the problem.
local function check_assign(base, key, v, what)
  local cur, missing = get_path(base, key)
  if missing then
    error(fmt("%s '%s' is not a key of the base config%s", what, key, suggest(key, base)), 0)
  end
  local want, got = kind_of(cur), kind_of(v)
  if want == "group" then
    if got ~= "group" then
      error(fmt("%s '%s': '%s' is a group of keys; set its keys (e.g. %s.%s=...)", what, key, key,
                key, (next(cur))), 0)
    end
    for k, x in pairs(v) do check_assign(base, key .. "." .. k, x, what) end
    return
  end
  if want ~= got and not (want == "list" and type(v) == "table") then
    error(fmt("%s '%s': %s is a %s, but the base config has a %s (%s)", what, key, show(v),
              got, want, show(cur)), 0)
  end
  -- an integer key (epochs, seed, hidden) takes integral values only: 2.0
  -- becomes 2, 1.5 is an error (a seed of 0.5 used to run with seed 0)
  if math.type(cur) == "integer" and math.type(v) == "float" and not math.tointeger(v) then
    error(fmt("%s '%s': %s is not an integer, but the base config has an integer (%s)", what, key,
              show(v), show(cur)), 0)
  end
end

local function assign(cfg, key, v)
  local cur = get_path(cfg, key)
  if math.type(cur) == "integer" and math.type(v) == "float" then v = math.tointeger(v) or v end
  if is_group(cur) and is_group(v) then
    for k, x in pairs(v) do assign(cfg, key .. "." .. k, x) end
  else
    set_path(cfg, key, deepcopy(v))
  end
end

-- ---- the declaration ------------------------------------------------------------

local NAME_PATTERN = "^[%w_][%w_.%-]*$"

function M.new(spec)
  if type(spec) ~= "table" then error("experiment{...}: a table expected", 2) end
  local function bad(msg) error("experiment{...}: " .. msg, 3) end
  if type(spec.name) ~= "string" or not spec.name:match(NAME_PATTERN) then
    bad("name must be a string of letters, digits, '_', '-' or '.' (it names results/sweeps/<name>)")
  end
  if type(spec.config) ~= "table" then bad("config must be a table (the base config)") end
  if type(spec.run) ~= "function" then bad("run must be a function(cfg, run)") end
  if spec.filter ~= nil and type(spec.filter) ~= "function" then bad("filter must be a function(cfg)") end
  if spec.checkpoint ~= nil and type(spec.checkpoint) ~= "function" then
    bad("checkpoint must be a function(cfg, run)")
  end
  local known = { name = true, config = true, sweep = true, filter = true, run = true,
                  checkpoint = true, description = true }
  for k in pairs(spec) do
    if not known[k] then
      bad(fmt("unknown field '%s' (known: checkpoint, config, description, filter, name, run, sweep)",
              tostring(k)))
    end
  end
  local ok, err = pcall(json.encode, spec.config)
  if not ok then bad("config: " .. err) end
  local sw
  ok, err = pcall(function() sw = sweep.normalize(spec.sweep) end)
  if not ok then bad("sweep: " .. err) end
  return setmetatable({ name = spec.name, config = deepcopy(spec.config), sweep = sw,
                        filter = spec.filter, run = spec.run, checkpoint = spec.checkpoint,
                        description = spec.description }, EXPERIMENT)
end

function M.is_experiment(x) return getmetatable(x) == EXPERIMENT end

-- Loads a script file and returns the experiment it returns.  Errors are
-- messages naming the script (missing file, syntax error, wrong result).
function M.load(path)
  local f = io.open(path, "r")
  if not f then error(fmt("script '%s' not found", path), 0) end
  f:close()
  local chunk, err = loadfile(path)
  if not chunk then error(fmt("cannot load script: %s", err), 0) end
  local ok, exp = pcall(chunk)
  if not ok then error(fmt("script '%s' raised while loading: %s", path, tostring(exp)), 0) end
  if not M.is_experiment(exp) then
    error(fmt("script '%s' must return an experiment (return sq.experiment{...}), it returned %s",
              path, type(exp) == "table" and "a plain table" or type(exp)), 0)
  end
  return exp
end

-- ---- command-line overrides ------------------------------------------------------

local KEY_PATTERN = "^[%a_][%w_]*$"

local function valid_key(k)
  for part in (k .. "."):gmatch("([^.]*)%.") do
    if not part:match(KEY_PATTERN) then return false end
  end
  return true
end

local function unquote(s)
  local q = s:match("^(['\"]).*%1$")
  if q and #s >= 2 then return s:sub(2, -2), true end
  return s, false
end

-- Splits at commas outside quotes and brackets.
local function split_commas(s)
  local parts, depth, quote, cur = {}, 0, nil, {}
  for i = 1, #s do
    local c = s:sub(i, i)
    if quote then
      if c == quote then quote = nil end
      cur[#cur + 1] = c
    elseif c == "'" or c == '"' then quote = c; cur[#cur + 1] = c
    elseif c == "[" or c == "(" or c == "{" then depth = depth + 1; cur[#cur + 1] = c
    elseif c == "]" or c == ")" or c == "}" then depth = depth - 1; cur[#cur + 1] = c
    elseif c == "," and depth == 0 then parts[#parts + 1] = table.concat(cur); cur = {}
    else cur[#cur + 1] = c end
  end
  parts[#parts + 1] = table.concat(cur)
  return parts
end

-- Lua value of one override value string, typed after the base value.
local function parse_scalar(arg, key, s, cur)
  local want = kind_of(cur)
  local raw, quoted = unquote(s)
  if want == "number" then
    local v = not quoted and tonumber(s)
    if not v then error(fmt("override '%s': '%s' is not a number (the base config has %s = %s)",
                            arg, s, key, show(cur)), 0) end
    return v
  elseif want == "boolean" then
    if s == "true" then return true elseif s == "false" then return false end
    error(fmt("override '%s': '%s' is not true or false (the base config has %s = %s)",
              arg, s, key, show(cur)), 0)
  elseif want == "string" then
    return raw
  elseif want == "list" then
    local ok, v = pcall(json.decode, s)
    if not ok or type(v) ~= "table" then
      error(fmt("override '%s': a list value is written as JSON, e.g. %s=[256,128]", arg, key), 0)
    end
    return v
  end
  error(fmt("override '%s': '%s' is a group of keys; set its keys, e.g. %s.%s=...", arg, key, key,
            (next(cur))), 0)
end

local RANGE_HELP = "expected START..STOP or START..STOP:STEP (both ends included, e.g. %s=1..5 "
                   .. "or %s=0..1:0.25) or range(a,b[,step]) / linspace(a,b,n) / logspace(a,b,n)"

-- Inclusive a..b[:step] from the command line.
local function parse_dotdot(arg, key, s)
  local a, b, step = s:match("^([^.:][^:]-)%.%.([^:]+):(.+)$")
  if not a then a, b = s:match("^(.-)%.%.(.+)$") end
  local na, nb = tonumber(a or ""), tonumber(b or "")
  local ns = step and tonumber(step) or (step == nil and 1 or nil)
  if not (na and nb and ns) or ns == 0 or (nb - na) / ns < 0 then
    error(fmt("malformed range in override '%s': " .. RANGE_HELP, arg, key, key), 0)
  end
  local ints = math.type(na) == "integer" and math.type(nb) == "integer" and math.type(ns) == "integer"
  local n = math.floor((nb - na) / ns + 1e-9) + 1
  if n > 1000000 then error(fmt("override '%s': more than a million values", arg), 0) end
  local values = {}
  for i = 0, n - 1 do
    values[#values + 1] = ints and (na + i * ns) or tonumber(fmt("%.12g", na + i * ns)) + 0.0
  end
  return values, s
end

-- Parses key=value overrides against the base config.  Returns
--   { set = { [key] = value }, axes = { {key=, values=, desc=} }, keys = {set} }
-- Raises a clear message for any problem.
function M.parse_overrides(base, args)
  local out = { set = {}, axes = {}, keys = {} }
  for _, arg in ipairs(args or {}) do
    local key, s = arg:match("^([^=]*)=(.*)$")
    if not key then error(fmt("override '%s' is not key=value", arg), 0) end
    if key == "" or not valid_key(key) then
      error(fmt("override '%s': '%s' is not a config key (names and dots: model.depth=4)", arg, key), 0)
    end
    if out.keys[key] then error(fmt("override '%s': key '%s' given twice", arg, key), 0) end
    local cur, missing = get_path(base, key)
    if missing then
      error(fmt("override '%s': '%s' is not a key of the base config%s", arg, key, suggest(key, base)), 0)
    end
    if s == "" then error(fmt("override '%s': empty value", arg), 0) end
    out.keys[key] = true
    local fname, fargs = s:match("^(%a+)%((.*)%)$")
    local values, desc
    if fname == "range" or fname == "linspace" or fname == "logspace" then
      if kind_of(cur) ~= "number" then
        error(fmt("override '%s': %s() makes numbers, but %s is a %s", arg, fname, key, kind_of(cur)), 0)
      end
      local nums = {}
      for _, p in ipairs(split_commas(fargs)) do
        local v = tonumber(p)
        if not v then error(fmt("malformed range in override '%s': '%s' is not a number", arg, p), 0) end
        nums[#nums + 1] = v
      end
      local ok, node = pcall(sweep[fname], table.unpack(nums))
      if not ok then
        error(fmt("malformed range in override '%s': %s", arg, tostring(node):gsub("^.-sweep%.", "")), 0)
      end
      values, desc = node.values, node.desc
    elseif kind_of(cur) == "number" and s:find("..", 1, true) then
      values, desc = parse_dotdot(arg, key, s)
    elseif kind_of(cur) ~= "list" and #split_commas(s) > 1 then
      values = {}
      for _, p in ipairs(split_commas(s)) do values[#values + 1] = parse_scalar(arg, key, p, cur) end
      desc = s
    end
    -- an integer key (epochs, seed, hidden) takes integral values only:
    -- 2.0 becomes 2, 1.5 is an error (seed=0.5 used to run with seed 0)
    local function fit(v)
      if math.type(cur) ~= "integer" or math.type(v) ~= "float" then return v end
      local i = math.tointeger(v)
      if not i then
        error(fmt("override '%s': %s is not an integer, but %s is an integer in the base config (%s)",
                  arg, show(v), key, show(cur)), 0)
      end
      return i
    end
    if values then
      for i, v in ipairs(values) do values[i] = fit(v) end
      out.axes[#out.axes + 1] = { key = key, values = values, desc = desc }
    else
      out.set[key] = fit(parse_scalar(arg, key, s, cur))
    end
  end
  return out
end

-- Overrides given as a table of values (what `squeeze run`'s argument
-- parser builds: {lr = 0.1, model = {depth = 4}}) as "key=value" strings;
-- an array of strings passes through.  Strings are quoted so that a comma
-- inside one does not make a list.
function M.override_strings(t)
  if t[1] ~= nil or next(t) == nil then return t end
  local out = {}
  local function walk(v, prefix)
    if type(v) == "table" and not json.array_len(v) then
      local keys = {}
      for k in pairs(v) do keys[#keys + 1] = k end
      table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
      for _, k in ipairs(keys) do walk(v[k], prefix and (prefix .. "." .. tostring(k)) or tostring(k)) end
    elseif type(v) == "string" then
      out[#out + 1] = prefix .. "='" .. v .. "'"
    elseif type(v) == "table" then
      out[#out + 1] = prefix .. "=" .. json.encode(v)
    else
      out[#out + 1] = prefix .. "=" .. (math.type(v) == "float" and json.encode(v) or tostring(v))
    end
  end
  walk(t, nil)
  return out
end

-- ---- points -------------------------------------------------------------------------

-- Resolves every point of exp under overrides (strings "k=v" or a parsed
-- table).  Returns points, base where each point is
--   {index=, id=, config_hash=, json=, config=, seed=, assign={dotted=value}}
-- opts.name overrides the sweep name.  Raises clear messages.
function M.points(exp, overrides, opts)
  opts = opts or {}
  local name = opts.name or exp.name
  if not name:match(NAME_PATTERN) then error(fmt("sweep name '%s' is not valid", name), 0) end
  local ov = overrides
  if ov == nil or ov[1] ~= nil or next(ov) == nil then ov = M.parse_overrides(exp.config, ov or {}) end
  local base = deepcopy(exp.config)
  for k, v in pairs(ov.set) do assign(base, k, v) end
  -- axis keys of the script must exist and fit
  local script_pts = sweep.expand(exp.sweep)
  for _, p in ipairs(script_pts) do
    for k, v in pairs(p) do check_assign(exp.config, k, v, "sweep axis") end
  end
  -- the command line wins over the script for any key it names
  for _, p in ipairs(script_pts) do
    for k in pairs(ov.keys) do p[k] = nil end
  end
  local pts = script_pts
  if #ov.axes > 0 then
    local spec = {}
    for _, ax in ipairs(ov.axes) do spec[ax.key] = ax.values end
    local cli = sweep.expand(sweep.grid(spec))
    local out = {}
    for _, a in ipairs(pts) do
      for _, b in ipairs(cli) do
        local p = {}
        for k, v in pairs(a) do p[k] = v end
        for k, v in pairs(b) do p[k] = v end
        out[#out + 1] = p
      end
    end
    pts = out
  end
  local points, seen, dropped, first_drop = {}, {}, 0, nil
  for _, p in ipairs(pts) do
    local cfg = deepcopy(base)
    local keys = {}
    for k in pairs(p) do keys[#keys + 1] = k end
    table.sort(keys)   -- a group before its members: members then win
    for _, k in ipairs(keys) do assign(cfg, k, p[k]) end
    local keep = true
    if exp.filter then
      local ok, r, why = pcall(exp.filter, deepcopy(cfg))
      if not ok then
        error(fmt("filter raised on the point %s: %s", json.encode(p), tostring(r)), 0)
      end
      keep = r and true or false
      if not keep and not first_drop then first_drop = { point = next(p) and p or cfg, why = why } end
    end
    if keep then
      local ok, text = pcall(json.encode, cfg)
      if not ok then error("config: " .. text, 0) end
      if not seen[text] then
        seen[text] = true
        points[#points + 1] = {
          index = #points, json = text, config = cfg, assign = p,
          config_hash = json.fnv1a64(text), id = json.fnv1a64(name .. "\n" .. text),
          seed = math.type(cfg.seed) == "integer" and cfg.seed or nil,
        }
      end
    else
      dropped = dropped + 1
    end
  end
  if #points == 0 then
    if dropped == 0 then error("the sweep has no points", 0) end
    local d = first_drop
    error(fmt("the filter dropped all %d point(s); the first, %s, because: %s", dropped, json.encode(d.point),
      d.why and tostring(d.why) or "the filter returned false (it gave no reason)"), 0)
  end
  return points, base, ov
end

-- Runs the base config (with overrides: "k=v" strings, or a table of values
-- such as {lr = 0.1, model = {depth = 4}}) as a one-point sweep, in this
-- process, recorded in the results folder like any sweep; exp.sweep is not
-- used.  Returns the
-- run's status ("finished", "failed", "killed") and the run id.
-- opts: results (default "results"), script (path, for provenance), argv.
function M.run_once(exp, overrides, opts)
  opts = opts or {}
  local worker = require "squeeze.worker"
  return worker.run_once(exp, overrides, opts)
end

-- `experiment{...}` and `require("squeeze.experiment"){...}` both build one.
return setmetatable(M, { __call = function(_, spec) return M.new(spec) end })
