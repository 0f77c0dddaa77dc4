-- squeeze.sweep — the sweep grammar: which points of a config space to run.
--
-- Axis values (one config key, several values):
--   {a, b, c} or sweep.list{a, b, c}   explicit values (a value may be a table)
--   sweep.range(start, stop [, step])  start, start+step, ... < stop (stop excluded,
--                                      like Python / Hydra); integers stay integers
--   sweep.linspace(a, b, n)            n evenly spaced values, both ends included
--   sweep.logspace(a, b, n)            10^linspace(a, b, n) (numpy's convention)
-- Combinators (a sweep is one of these; a plain table of axes means grid):
--   sweep.grid{lr = ..., seed = ..., [1] = sub_sweep, ...}  Cartesian product
--   sweep.zip{lr = {...}, warmup = {...}}   i-th values together (equal lengths)
--   sweep.random{n = 20, seed = 0, axes = {lr = sweep.loguniform(1e-4, 1e-2),
--                depth = sweep.choice{2, 4}, p = sweep.uniform(0, 1),
--                k = sweep.randint(1, 8)}}  seeded sampling
--   sweep.concat{sweep_a, sweep_b}         the points of both, in order
-- Keys are config paths; nested keys are dotted: ["model.depth"] = {2, 4}.
--
-- Determinism: grid axes are taken in sorted key order (the first key varies
-- slowest); computed floats are rounded to 12 significant digits (sampled ones
-- to 6) so the same sweep gives bit-identical configs, hence identical run
-- ids, on every machine.  The random sampler is SplitMix64 in Lua integers,
-- independent of math.random.
local M = {}

local fmt = string.format
local NODE = {}   -- metatable marking sweep nodes
M.NODE = NODE

local function node(t) return setmetatable(t, NODE) end
local function is_node(v) return getmetatable(v) == NODE end
M.is_node = is_node

local function round_sig(x, digits)
  if x ~= x or x == math.huge or x == -math.huge or x == 0 then return x end
  return tonumber(fmt("%." .. digits .. "g", x)) + 0.0
end

local function show(v)
  if type(v) == "string" then return fmt("%q", v) end
  return tostring(v)
end

local function check_number(name, i, v)
  if type(v) ~= "number" or v ~= v or v == math.huge or v == -math.huge then
    error(fmt("sweep.%s: argument #%d must be a finite number (got %s)", name, i, show(v)), 3)
  end
end

local function check_count(name, i, n)
  if math.type(n) ~= "integer" or n < 1 then
    error(fmt("sweep.%s: argument #%d must be an integer >= 1 (got %s)", name, i, show(n)), 3)
  end
end

-- ---- axis values ---------------------------------------------------------

function M.list(values)
  if type(values) ~= "table" then
    error("sweep.list: a table of values expected, got " .. type(values), 2)
  end
  local n = #values
  if n == 0 then error("sweep.list: the list is empty", 2) end
  local copy = {}
  for i = 1, n do copy[i] = values[i] end
  return node { kind = "values", values = copy, desc = "list[" .. n .. "]" }
end

function M.range(start, stop, step)
  step = step or 1
  check_number("range", 1, start)
  check_number("range", 2, stop)
  check_number("range", 3, step)
  local desc = fmt("range(%s, %s, %s)", start, stop, step)
  if step == 0 then error("sweep." .. desc .. ": step is 0", 2) end
  local ints = math.type(start) == "integer" and math.type(stop) == "integer"
               and math.type(step) == "integer"
  local n = math.ceil((stop - start) / step - 1e-9)
  if n < 1 then error("sweep." .. desc .. " is empty", 2) end
  if n > 1000000 then error("sweep." .. desc .. " has more than a million values", 2) end
  local values = {}
  for i = 0, n - 1 do
    values[i + 1] = ints and (start + i * step) or round_sig(start + i * step, 12)
  end
  return node { kind = "values", values = values, desc = desc }
end

function M.linspace(a, b, n)
  check_number("linspace", 1, a)
  check_number("linspace", 2, b)
  check_count("linspace", 3, n)
  local values = {}
  for i = 0, n - 1 do
    values[i + 1] = n == 1 and round_sig(a + 0.0, 12) or round_sig(a + (b - a) * i / (n - 1), 12)
  end
  return node { kind = "values", values = values, desc = fmt("linspace(%s, %s, %d)", a, b, n) }
end

function M.logspace(a, b, n)
  check_number("logspace", 1, a)
  check_number("logspace", 2, b)
  check_count("logspace", 3, n)
  local values = {}
  for i = 0, n - 1 do
    local e = n == 1 and a or a + (b - a) * i / (n - 1)
    values[i + 1] = round_sig(10.0 ^ e, 12)
  end
  return node { kind = "values", values = values, desc = fmt("logspace(%s, %s, %d)", a, b, n) }
end

-- ---- distributions (inside sweep.random only) -------------------------------

function M.uniform(a, b)
  check_number("uniform", 1, a); check_number("uniform", 2, b)
  if not (a < b) then error(fmt("sweep.uniform(%s, %s): need a < b", a, b), 2) end
  return node { kind = "dist", dist = "uniform", a = a, b = b, desc = fmt("uniform(%s, %s)", a, b) }
end

function M.loguniform(a, b)
  check_number("loguniform", 1, a); check_number("loguniform", 2, b)
  if not (a > 0 and a < b) then error(fmt("sweep.loguniform(%s, %s): need 0 < a < b", a, b), 2) end
  return node { kind = "dist", dist = "loguniform", a = a, b = b,
                desc = fmt("loguniform(%s, %s)", a, b) }
end

function M.randint(a, b)
  if math.type(a) ~= "integer" or math.type(b) ~= "integer" or a > b then
    error(fmt("sweep.randint(%s, %s): two integers a <= b expected", show(a), show(b)), 2)
  end
  return node { kind = "dist", dist = "randint", a = a, b = b, desc = fmt("randint(%d, %d)", a, b) }
end

function M.choice(values)
  if type(values) ~= "table" or #values == 0 then
    error("sweep.choice: a non-empty table of values expected", 2)
  end
  local copy = {}
  for i = 1, #values do copy[i] = values[i] end
  return node { kind = "dist", dist = "choice", values = copy, desc = "choice[" .. #copy .. "]" }
end

-- ---- combinators ------------------------------------------------------------

local function sorted_keys(t)
  local keys = {}
  for k in pairs(t) do
    if type(k) == "string" then keys[#keys + 1] = k end
  end
  table.sort(keys)
  return keys
end

local KEY_PATTERN = "^[%a_][%w_]*$"
local function check_key(fn, k)
  for part in (k .. "."):gmatch("([^.]*)%.") do
    if not part:match(KEY_PATTERN) then
      error(fmt("sweep.%s: '%s' is not a config key (names and dots: model.depth)", fn, k), 3)
    end
  end
end

-- Values of one axis, or an error naming the axis.
local function axis_values(fn, key, v)
  if is_node(v) then
    if v.kind == "values" then return v.values, v.desc end
    if v.kind == "dist" then
      error(fmt("sweep.%s: axis '%s' is %s, which only works inside sweep.random", fn, key, v.desc), 4)
    end
    error(fmt("sweep.%s: axis '%s' is a whole sweep; put sweeps in the array part of grid{}",
              fn, key), 4)
  end
  if type(v) == "table" then
    if #v == 0 then error(fmt("sweep.%s: axis '%s' has no values", fn, key), 4) end
    local copy = {}
    for i = 1, #v do copy[i] = v[i] end
    return copy, "list[" .. #v .. "]"
  end
  return { v }, show(v)
end

function M.grid(spec)
  if type(spec) ~= "table" then error("sweep.grid: a table of axes expected", 2) end
  local axes, subs = {}, {}
  for _, k in ipairs(sorted_keys(spec)) do
    check_key("grid", k)
    local values, desc = axis_values("grid", k, spec[k])
    axes[#axes + 1] = { key = k, values = values, desc = desc }
  end
  for i = 1, #spec do
    local s = spec[i]
    if not is_node(s) and type(s) == "table" then s = M.grid(s) end
    if not is_node(s) or s.kind == "values" or s.kind == "dist" then
      error(fmt("sweep.grid: entry [%d] must be a sweep (grid, zip, random, concat)", i), 2)
    end
    subs[#subs + 1] = s
  end
  if #axes == 0 and #subs == 0 then error("sweep.grid: no axes", 2) end
  return node { kind = "grid", axes = axes, subs = subs }
end

function M.zip(spec)
  if type(spec) ~= "table" then error("sweep.zip: a table of axes expected", 2) end
  local axes, len = {}, nil
  for _, k in ipairs(sorted_keys(spec)) do
    check_key("zip", k)
    local values, desc = axis_values("zip", k, spec[k])
    if len and #values ~= len then
      local lens = {}
      for _, a in ipairs(axes) do lens[#lens + 1] = a.key .. "=" .. #a.values end
      lens[#lens + 1] = k .. "=" .. #values
      error("sweep.zip: axes must have equal lengths (" .. table.concat(lens, ", ") .. ")", 2)
    end
    len = #values
    axes[#axes + 1] = { key = k, values = values, desc = desc }
  end
  if #axes == 0 then error("sweep.zip: no axes", 2) end
  return node { kind = "zip", axes = axes, n = len }
end

function M.random(spec)
  if type(spec) ~= "table" then error("sweep.random: a table {n=, seed=, axes=} expected", 2) end
  if math.type(spec.n) ~= "integer" or spec.n < 1 then
    error("sweep.random: n must be an integer >= 1 (got " .. show(spec.n) .. ")", 2)
  end
  if math.type(spec.seed) ~= "integer" then
    error("sweep.random: seed must be an integer (sampling is always seeded; got "
          .. show(spec.seed) .. ")", 2)
  end
  if type(spec.axes) ~= "table" then error("sweep.random: axes must be a table", 2) end
  local axes = {}
  for _, k in ipairs(sorted_keys(spec.axes)) do
    check_key("random", k)
    local v = spec.axes[k]
    if is_node(v) and v.kind == "dist" then
      axes[#axes + 1] = { key = k, dist = v }
    else
      local values, desc = axis_values("random", k, v)
      axes[#axes + 1] = { key = k, dist = { dist = "choice", values = values, desc = desc } }
    end
  end
  if #axes == 0 then error("sweep.random: no axes", 2) end
  return node { kind = "random", n = spec.n, seed = spec.seed, axes = axes }
end

function M.concat(list)
  if type(list) ~= "table" or #list == 0 then error("sweep.concat: a list of sweeps expected", 2) end
  local parts = {}
  for i, s in ipairs(list) do
    if not is_node(s) and type(s) == "table" then s = M.grid(s) end
    if not is_node(s) or s.kind == "values" or s.kind == "dist" then
      error(fmt("sweep.concat: entry [%d] must be a sweep", i), 2)
    end
    parts[i] = s
  end
  return node { kind = "concat", parts = parts }
end

-- A plain table of axes is a grid; nil is the single empty point.
function M.normalize(s)
  if s == nil then return nil end
  if is_node(s) then
    if s.kind == "values" or s.kind == "dist" then
      error("a sweep must be grid{...}, zip{...}, random{...} or concat{...}, not " .. s.desc, 0)
    end
    return s
  end
  if type(s) == "table" then return M.grid(s) end
  error("a sweep must be a table, got " .. type(s), 0)
end

-- ---- expansion ----------------------------------------------------------------

-- SplitMix64 (Steele et al.): a stateless-step generator with good equidistribution.
local function splitmix(state)
  state = state + 0x9e3779b97f4a7c15
  local z = state
  z = (z ~ (z >> 30)) * 0xbf58476d1ce4e5b9
  z = (z ~ (z >> 27)) * 0x94d049bb133111eb
  return state, z ~ (z >> 31)
end

local function sample(dist, state)
  local z
  state, z = splitmix(state)
  local u = (z >> 11) * (1.0 / 9007199254740992.0)   -- [0, 1) with 53 bits
  local d = dist.dist
  if d == "uniform" then return round_sig(dist.a + (dist.b - dist.a) * u, 6), state end
  if d == "loguniform" then
    local la, lb = math.log(dist.a), math.log(dist.b)
    return round_sig(math.exp(la + (lb - la) * u), 6), state
  end
  if d == "randint" then return dist.a + math.floor(u * (dist.b - dist.a + 1)), state end
  return dist.values[math.floor(u * #dist.values) + 1], state
end

local function product(left, right)
  local out = {}
  for _, a in ipairs(left) do
    for _, b in ipairs(right) do
      local p = {}
      for k, v in pairs(a) do p[k] = v end
      for k, v in pairs(b) do p[k] = v end
      out[#out + 1] = p
    end
  end
  return out
end

-- Points of sweep s: an array of {["dotted.key"] = value} assignments.
function M.expand(s)
  if s == nil then return { {} } end
  s = M.normalize(s)
  local k = s.kind
  if k == "grid" then
    local pts = { {} }
    for _, sub in ipairs(s.subs) do pts = product(pts, M.expand(sub)) end
    for _, ax in ipairs(s.axes) do
      local vs = {}
      for i, v in ipairs(ax.values) do vs[i] = { [ax.key] = v } end
      pts = product(pts, vs)
    end
    return pts
  elseif k == "zip" then
    local pts = {}
    for i = 1, s.n do
      local p = {}
      for _, ax in ipairs(s.axes) do p[ax.key] = ax.values[i] end
      pts[i] = p
    end
    return pts
  elseif k == "random" then
    local pts, state = {}, s.seed
    for i = 1, s.n do
      local p = {}
      for _, ax in ipairs(s.axes) do p[ax.key], state = sample(ax.dist, state) end
      pts[i] = p
    end
    return pts
  elseif k == "concat" then
    local pts = {}
    for _, part in ipairs(s.parts) do
      for _, p in ipairs(M.expand(part)) do pts[#pts + 1] = p end
    end
    return pts
  end
  error("unknown sweep node kind " .. tostring(k), 0)
end

-- Every axis key that s sets (a set), and where each one was declared.
function M.keys(s, out)
  out = out or {}
  if s == nil then return out end
  s = M.normalize(s)
  if s.kind == "grid" then
    for _, sub in ipairs(s.subs) do M.keys(sub, out) end
    for _, ax in ipairs(s.axes) do out[ax.key] = true end
  elseif s.kind == "zip" or s.kind == "random" then
    for _, ax in ipairs(s.axes) do out[ax.key] = true end
  elseif s.kind == "concat" then
    for _, part in ipairs(s.parts) do M.keys(part, out) end
  end
  return out
end

-- One line describing s, for --dry-run.
function M.describe(s)
  if s == nil then return "(no sweep: the base config only)" end
  s = M.normalize(s)
  local function axes_desc(axes)
    local parts = {}
    for _, ax in ipairs(axes) do
      parts[#parts + 1] = ax.key .. ": " .. (ax.desc or (ax.dist and ax.dist.desc) or "?")
    end
    return table.concat(parts, ", ")
  end
  if s.kind == "grid" then
    local parts = {}
    for _, sub in ipairs(s.subs) do parts[#parts + 1] = M.describe(sub) end
    if #s.axes > 0 then parts[#parts + 1] = axes_desc(s.axes) end
    return "grid(" .. table.concat(parts, "; ") .. ")"
  elseif s.kind == "zip" then return "zip(" .. axes_desc(s.axes) .. ")"
  elseif s.kind == "random" then
    return fmt("random(n=%d, seed=%d; %s)", s.n, s.seed, axes_desc(s.axes))
  else
    local parts = {}
    for _, part in ipairs(s.parts) do parts[#parts + 1] = M.describe(part) end
    return "concat(" .. table.concat(parts, " + ") .. ")"
  end
end

return M
