-- squeeze.data — datasets for the experiments: Fashion-MNIST, seeded
-- mini-batches, and byte-level text corpora with fixed, recorded splits.
--
--   local ds = data.fashion_mnist{split = "train"}          -- {x = (N,784) float32, y = (N) int64, n = N}
--   for xb, yb, i in data.batches(ds, 128, {shuffle = true}) do ... end
--   local corpus, info = data.text{name = "kjv"}             -- or "fortunes", or path = "file.txt"
--   local x, y = corpus:sample("train", 32, 128)
--
-- Loaders raise when their data is missing or corrupt (a script cannot go
-- on without it); the message names the file and, for the Debian-packaged
-- data, the package to install.  Shuffling uses the engine's seeded
-- generator: the same seed gives the same batches.
local core = require "squeeze.core"

local data = {}

local function opts_table(o, fname, argn)
  if o == nil then return {} end
  if type(o) ~= "table" then
    error(("bad argument #%d to '%s' (table expected, got %s)"):format(argn, fname, type(o)), 3)
  end
  return o
end

local function check_keys(o, allowed, fname)
  for k in pairs(o) do
    if not allowed[k] then error(("%s: unknown option '%s'"):format(fname, tostring(k)), 3) end
  end
end

-- ---- Fashion-MNIST ---------------------------------------------------------------

-- data.fashion_mnist{split = "train" | "test", dir =, flatten = true, mean =, std =, n =}
--   -> {x = images, y = labels, n = count, split = split}
-- n keeps the first n examples (a fixed subset, the same on every run).
function data.fashion_mnist(o)
  o = opts_table(o, "data.fashion_mnist", 1)
  check_keys(o, { split = true, dir = true, flatten = true, mean = true, std = true, n = true },
             "data.fashion_mnist")
  local split = o.split or "train"
  local x, y = core.fashion_mnist(split, { dir = o.dir, flatten = o.flatten, mean = o.mean, std = o.std })
  local total = y:numel()
  if o.n ~= nil then
    if math.type(o.n) ~= "integer" or o.n < 1 or o.n > total then
      error(("data.fashion_mnist: n must be an integer in 1..%d (the %s split), got %s"):format(
        total, split, tostring(o.n)), 2)
    end
    x, y = x:narrow(1, 1, o.n):contiguous(), y:narrow(1, 1, o.n):contiguous()
  end
  return { x = x, y = y, n = y:numel(), split = split }
end

-- ---- batches --------------------------------------------------------------------

-- data.batches(ds, batch_size [, {shuffle = false, drop_last = false, reuse = false, device = "cpu"}])
--   -> iterator of xb, yb, batch_index (1-based)
-- ds: {x =, y = [, n =]} with rows along dim 1.  shuffle draws one
-- permutation per call from the seeded generator (so one per epoch when
-- called once per epoch).  reuse = true gathers every full batch into the
-- same two buffers: less allocation, but a batch is only valid until the
-- next iteration.  device = "cuda" hands out batches on the GPU: each is
-- gathered on the CPU and sent with an asynchronous host-to-device copy
-- through the context's pinned staging buffers (the CPU gathers the next
-- batch while the GPU still copies this one); the dataset stays on the CPU.
function data.batches(ds, batch_size, o)
  if type(ds) ~= "table" or not core.is_tensor(ds.x) then
    error("bad argument #1 to 'data.batches' (dataset {x =, y =} expected)", 2)
  end
  if math.type(batch_size) ~= "integer" or batch_size < 1 then
    error("bad argument #2 to 'data.batches' (batch size must be an integer >= 1, got " .. tostring(batch_size) .. ")", 2)
  end
  o = opts_table(o, "data.batches", 3)
  check_keys(o, { shuffle = true, drop_last = true, reuse = true, device = true }, "data.batches")
  local device = o.device or "cpu"
  if device ~= "cpu" and device ~= "cuda" then
    error("bad argument #3 to 'data.batches' (device must be \"cpu\" or \"cuda\", got " .. tostring(device) .. ")", 2)
  end
  local n = ds.x:shape()[1]
  if ds.n ~= nil and ds.n ~= n then error(("data.batches: ds.n = %s but x has %d rows"):format(tostring(ds.n), n), 2) end
  if ds.y ~= nil and ds.y:shape()[1] ~= n then
    error(("data.batches: x has %d rows but y has %d"):format(n, ds.y:shape()[1]), 2)
  end
  local order = o.shuffle and core.permutation(n) or core.arange(n)
  local nb = o.drop_last and n // batch_size or (n + batch_size - 1) // batch_size
  local bx, by
  local i = 0
  return function()
    i = i + 1
    if i > nb then return nil end
    local start = (i - 1) * batch_size
    local len = math.min(batch_size, n - start)
    local idx = order:narrow(1, start + 1, len)
    local xb, yb
    if o.reuse and len == batch_size then
      if not bx then
        bx = core.gather_rows(ds.x, idx)
        by = ds.y and core.gather_rows(ds.y, idx)
      else
        core.gather_rows(ds.x, idx, bx)
        if ds.y then core.gather_rows(ds.y, idx, by) end
      end
      xb, yb = bx, by
    else
      xb = core.gather_rows(ds.x, idx)
      yb = ds.y and core.gather_rows(ds.y, idx)
    end
    if device ~= "cpu" then
      xb = xb:to(device)
      yb = yb and yb:to(device)
    end
    return xb, yb, i
  end
end

-- ---- text corpora -----------------------------------------------------------------

local KJV_RANGE = "Genesis1:1-Revelation22:21"
-- The line width is given explicitly: without it `bible` wraps at $COLUMNS
-- and the text (and every byte offset) would depend on the terminal.
local KJV_CMD = "bible -l79 '" .. KJV_RANGE .. "'"
local FORTUNE_DIR = "/usr/share/games/fortunes"

local function fail_env(fmt, ...) error(fmt:format(...), 3) end

local function have_command(name)
  return os.execute("command -v " .. name .. " >/dev/null 2>&1") == true
end

local function build_kjv()
  if not have_command("bible") then
    fail_env("data.text{name='kjv'}: the `bible` command is missing (install the Debian package bible-kjv: apt-get install bible-kjv)")
  end
  local p = assert(io.popen(KJV_CMD .. " 2>&1", "r"))
  local text = p:read("a")
  local ok, how, code = p:close()
  if not ok or #text < 1000000 then
    fail_env("data.text{name='kjv'}: `%s` failed (%s %s): %s", KJV_CMD, tostring(how), tostring(code), text:sub(1, 200))
  end
  return text, { source = KJV_CMD }
end

-- Share of letters among the non-space bytes: ASCII art is mostly punctuation
-- (measured: the ascii-art file scores 0.18, every prose file 0.78 or more).
local function letter_share(s)
  local letters = select(2, s:gsub("%a", ""))
  local nonspace = select(2, s:gsub("%S", ""))
  return nonspace > 0 and letters / nonspace or 0
end

-- Each fortune file: entries separated by "%" lines.  Overstrikes ("_\bX"
-- underline, "X\bX" bold) keep the struck character; "%" lines become blank
-- lines; files that are ASCII art are dropped.
local function build_fortunes()
  local st = core.proc_stat(FORTUNE_DIR)
  if not st or not st.dir then
    fail_env("data.text{name='fortunes'}: %s is missing (install the Debian package fortunes: apt-get install fortunes)", FORTUNE_DIR)
  end
  local names = assert(core.proc_listdir(FORTUNE_DIR))
  local parts, used, dropped = {}, {}, {}
  for _, name in ipairs(names) do
    local path = FORTUNE_DIR .. "/" .. name
    local s = core.proc_stat(path)
    if not name:find("%.dat$") and not name:find("%.u8$") and s and not s.dir then
      local f = assert(io.open(path, "rb"))
      local raw = f:read("a")
      f:close()
      local text = raw:gsub(".\b", ""):gsub("\b", "")
      if letter_share(text) < 0.5 then
        dropped[#dropped + 1] = name
      else
        local lines = {}
        for line in (text .. (text:sub(-1) == "\n" and "" or "\n")):gmatch("(.-)\n") do
          lines[#lines + 1] = line == "%" and "" or line
        end
        parts[#parts + 1] = table.concat(lines, "\n") .. "\n"
        used[#used + 1] = name
      end
    end
  end
  if #parts == 0 then fail_env("data.text{name='fortunes'}: no fortune files in %s", FORTUNE_DIR) end
  return table.concat(parts, "\n"), { source = FORTUNE_DIR, files = used, dropped = dropped }
end

local builders = { kjv = build_kjv, fortunes = build_fortunes }

local function frac_key(f) return ("%.10g,%.10g,%.10g"):format(f[1], f[2], f[3]) end

-- The record next to a cached corpus: "key=value" lines, one "split <fractions>=<offsets>" per split used.
local function read_record(path)
  local f = io.open(path, "r")
  if not f then return nil end
  local r = { splits = {} }
  for line in f:lines() do
    local k, v = line:match("^([^=]+)=(.*)$")
    if k then
      local fr = k:match("^split (.*)$")
      if fr then r.splits[fr] = v else r[k] = v end
    end
  end
  f:close()
  return r
end

local function write_record(path, r)
  local lines = { "source=" .. r.source, "bytes=" .. r.bytes, "fnv1a64=" .. r.fnv1a64 }
  local keys = {}
  for k in pairs(r.splits) do keys[#keys + 1] = k end
  table.sort(keys)
  for _, k in ipairs(keys) do lines[#lines + 1] = "split " .. k .. "=" .. r.splits[k] end
  local ok, msg = core.proc_write_atomic(path, table.concat(lines, "\n") .. "\n")
  if not ok then error("data.text: cannot write " .. path .. ": " .. tostring(msg), 3) end
end

-- data.text{name = "kjv" | "fortunes" | path = "file", split = {0.9, 0.05, 0.05}, cache_dir = "data/cache"}
--   -> corpus, info
-- A named corpus is materialised once as <cache_dir>/<name>.txt, with
-- <name>.txt.record holding its source, size, FNV-1a hash and the byte
-- offsets of every split asked for.  A later load whose bytes or offsets
-- differ from the record raises: results computed on different splits must
-- not be compared.  info = {name =, path =, bytes =, hash =, bounds = corpus:split_bounds(), source =}.
function data.text(o)
  o = opts_table(o, "data.text", 1)
  check_keys(o, { name = true, path = true, split = true, cache_dir = true }, "data.text")
  local split = o.split or { 0.9, 0.05, 0.05 }
  if (o.name == nil) == (o.path == nil) then error("data.text: give exactly one of name = 'kjv'|'fortunes' or path = file", 2) end
  if o.path then
    local c = core.text_corpus(o.path, { split = split })
    return c, { path = o.path, bytes = c:size(), hash = c:hash(), bounds = c:split_bounds() }
  end
  local build = builders[o.name]
  if not build then error(("data.text: unknown corpus '%s' (known: kjv, fortunes)"):format(tostring(o.name)), 2) end
  local dir = o.cache_dir or "data/cache"
  local path = dir .. "/" .. o.name .. ".txt"
  local rpath = path .. ".record"
  local extra
  if not core.proc_stat(path) then
    local text
    text, extra = build()
    local ok, msg = core.proc_mkdir_p(dir)
    if not ok then error("data.text: cannot create " .. dir .. ": " .. tostring(msg), 2) end
    ok, msg = core.proc_write_atomic(path, text)
    if not ok then error("data.text: cannot write " .. path .. ": " .. tostring(msg), 2) end
    os.remove(rpath) -- a record of an older text would not match
  end
  local c = core.text_corpus(path, { split = split })
  local b = c:split_bounds()
  local offsets = table.concat(b.offsets, ",")
  local rec = read_record(rpath)
  local key = frac_key(b.fractions)
  if rec then
    if tonumber(rec.bytes) ~= c:size() or rec.fnv1a64 ~= c:hash() then
      error(("data.text: %s changed since it was recorded (%s bytes, hash %s; recorded %s bytes, hash %s); "
        .. "delete %s and %s to rebuild"):format(path, c:size(), c:hash(), tostring(rec.bytes), tostring(rec.fnv1a64),
        path, rpath), 2)
    end
    if rec.splits[key] and rec.splits[key] ~= offsets then
      error(("data.text: %s split %s gives offsets %s but %s recorded %s"):format(path, key, offsets, rpath,
        rec.splits[key]), 2)
    end
  else
    rec = { source = extra and extra.source or "unknown (cache predates its record)", bytes = c:size(),
            fnv1a64 = c:hash(), splits = {} }
  end
  if not rec.splits[key] then
    rec.splits[key] = offsets
    write_record(rpath, rec)
  end
  return c, { name = o.name, path = path, bytes = c:size(), hash = c:hash(), bounds = b, source = rec.source,
              record = rpath, files = extra and extra.files, dropped = extra and extra.dropped }
end

return data
