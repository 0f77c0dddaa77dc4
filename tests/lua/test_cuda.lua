-- test_cuda.lua — the GPU from Lua: moving tensors and models, creation on
-- the device, reading values back, errors (mixed devices, out of memory,
-- an index out of range found by a kernel), TF32, events, memory, and
-- training runs whose loss curves must match the CPU's.
--
-- Without a usable GPU (a CPU-only build, no driver, CI) it prints why and
-- exits 77, which ctest reports as skipped.
--
-- Tolerances: values computed by one op, float32: 1e-5 relative; loss
-- curves of 30 AdamW steps, float32: 1e-4 relative per step (the GPU sums
-- in another order, and AdamW carries the difference from step to step).
local sq = require "squeeze"

if not sq.cuda.available() then
  print("SKIP: no usable GPU (squeeze.cuda.available() is false)")
  os.exit(77, true)
end

local T = dofile("tests/lua/testlib.lua")
local nn, optim, data = sq.nn, sq.optim, sq.data

print("device: " .. sq.cuda.init())

-- max |a - b| / max(1, max |b|) over two tensors (any devices)
local function rel(a, b)
  local x, y = a:cpu():reshape(-1):tolist(), b:cpu():reshape(-1):tolist()
  assert(#x == #y, "sizes differ")
  local num, den = 0, 1
  for i = 1, #y do
    num = math.max(num, math.abs(x[i] - y[i]))
    den = math.max(den, math.abs(y[i]))
  end
  return num / den
end

T.test("t:cuda(), t:cpu(), t:device() and creation on the device", function()
  local a = sq.randn(3, 5)
  local g = a:cuda()
  T.eq(g:device(), "cuda")
  T.eq(a:device(), "cpu")
  T.check(g:is_cuda() and not a:is_cuda())
  T.eq(rel(g:cpu(), a), 0)
  local same = g:cuda()
  same:set(1, 1, 42)
  T.eq(g:get(1, 1), 42, "cuda() of a GPU tensor shares its storage")
  g:set(1, 1, a:get(1, 1))
  local z = sq.zeros({ 4, 3 }, { device = "cuda" })
  T.eq(z:device(), "cuda")
  T.eq(z:sum():item(), 0)
  local o = sq.ones(2, 7, { device = "cuda", dtype = "float64" })
  T.eq(o:dtype(), "float64")
  T.eq(o:sum():item(), 14)
  T.eq(sq.full({ 2, 2 }, 3.5, { device = "cuda" }):mean():item(), 3.5)
  sq.manual_seed(3)
  local r1 = sq.randn(4, 4)
  sq.manual_seed(3)
  local r2 = sq.randn(4, 4, { device = "cuda" })
  T.eq(rel(r2, r1), 0, "a seed gives the same values on either device")
  local ar = sq.arange(5, { device = "cuda" })
  T.eq(ar:dtype(), "int64")
  T.allnear(ar, { 0, 1, 2, 3, 4 }, 0)
  T.allnear(sq.tensor({ { 1, 2 }, { 3, 4 } }, { device = "cuda" }), { { 1, 2 }, { 3, 4 } }, 0)
  T.eq(sq.zeros_like(g):device(), "cuda", "zeros_like keeps the device")
  T.eq(a:to("cuda"):device(), "cuda")
  T.eq(g:to({ dtype = "float64", device = "cpu" }):dtype(), "float64")
end)

T.test("reading GPU values: item, get, set, tolist, printing, bytes", function()
  local g = sq.tensor({ { 1.5, 2 }, { 3, 4 } }):cuda()
  T.eq(g:get(2, 1), 3)
  g:set(2, 1, -7)
  T.eq(g:get(2, 1), -7)
  T.allnear(g:tolist(), { { 1.5, 2 }, { -7, 4 } }, 0)
  T.eq(g:sum():item(), 0.5)
  local s = tostring(g)
  T.check(s:find("cuda", 1, true) and s:find("1.5", 1, true), s)
  T.eq(#g:bytes(), 16)
  local big = sq.tensor({ 9007199254740993 }, "int64"):cuda()
  T.eq(big:item(), 9007199254740993, "int64 values come back exactly")
  big:set(1, -9007199254740993)
  T.eq(big:get(1), -9007199254740993)
end)

T.test("ops run where their inputs are; mixed devices are an error", function()
  local a, b = sq.randn(6, 5), sq.randn(5, 4)
  local ga, gb = a:cuda(), b:cuda()
  T.check(rel(ga:matmul(gb), a:matmul(b)) < 1e-5)
  T.check(rel((ga * 2 + 1):relu(), (a * 2 + 1):relu()) < 1e-6)
  T.check(rel(ga:softmax(), a:softmax()) < 1e-6)
  T.check(rel(ga:sum(1), a:sum(1)) < 1e-6)
  T.eq(ga:argmax(2):device(), "cuda")
  T.allnear(ga:argmax(2), a:argmax(2):tolist(), 0)
  local err = T.raises(function() return a:matmul(gb) end, "cuda")
  T.check(err:find("cpu", 1, true), err)
  T.raises(function() return ga + a end, "cpu")
end)

T.test("model:cuda() moves parameters, keeping names, categories and frozen flags", function()
  local m = nn.MLP { sizes = { 8, 16, 4 } }
  m:freeze("layers.1.bias")
  local before = {}
  for _, e in ipairs(m:named_parameters()) do before[e.name] = e.param:tolist() end
  local cuda_param0 = sq.cuda.memory().current.param
  T.eq(m:cuda(), m)
  T.eq(m:device(), "cuda")
  for _, e in ipairs(m:named_parameters()) do
    T.eq(e.param:device(), "cuda", e.name)
    T.eq(e.param:category(), "param", e.name)
    T.allnear(e.param:tolist(), before[e.name], 0, e.name)
  end
  T.check(not m.layers[1].bias:requires_grad(), "frozen stays frozen")
  T.check(m.layers[1].weight:requires_grad())
  T.eq(sq.cuda.memory().current.param - cuda_param0, (8 * 16 + 16 + 16 * 4 + 4) * 4)
  local y = m(sq.randn(3, 8, { device = "cuda" }))
  T.eq(y:device(), "cuda")
  y:sum():backward()
  T.eq(m.layers[1].weight:grad():device(), "cuda")
  T.check(m.layers[1].bias:grad() == nil, "a frozen parameter gets no gradient")
  m:cpu()
  T.eq(m:device(), "cpu")
end)

-- Builds the same model twice from one seed; the second copy goes to the GPU.
local function twins(make, seed)
  sq.manual_seed(seed)
  local a = make()
  sq.manual_seed(seed)
  local b = make():cuda()
  return a, b
end

T.test("GPT and ResMLP forward and backward match the CPU", function()
  local g1, g2 = twins(function() return nn.GPT { vocab = 50, context = 16, dim = 32, heads = 2, layers = 2 } end, 11)
  sq.manual_seed(12)
  local idx = sq.tensor((function()
    local rows = {}
    for b = 1, 3 do
      rows[b] = {}
      for i = 1, 16 do rows[b][i] = (b * 7 + i * 13) % 50 end
    end
    return rows
  end)(), "int64")
  local tgt = idx:narrow(2, 2, 15)
  local inp = idx:narrow(2, 1, 15)
  local l1 = nn.cross_entropy(g1(inp), tgt)
  local l2 = nn.cross_entropy(g2(inp:cuda()), tgt:cuda())
  T.near(l2:item(), l1:item(), 1e-5, "GPT loss")
  l1:backward()
  l2:backward()
  local p1, p2 = g1:named_parameters(), g2:named_parameters()
  for i = 1, #p1 do T.check(rel(p2[i].param:grad(), p1[i].param:grad()) < 1e-4, "GPT grad " .. p1[i].name) end
  local r1, r2 = twins(function() return nn.ResMLP { image = 8, patch = 4, channels = 3, dim = 24, depth = 2, classes = 5 } end, 13)
  local x = sq.randn(6, 3, 8, 8)
  local y = sq.tensor({ 0, 1, 2, 3, 4, 0 }, "int64")
  local m1 = nn.cross_entropy(r1(x), y)
  local m2 = nn.cross_entropy(r2(x:cuda()), y:cuda())
  T.near(m2:item(), m1:item(), 1e-5, "ResMLP loss")
  m1:backward()
  m2:backward()
  p1, p2 = r1:named_parameters(), r2:named_parameters()
  for i = 1, #p1 do T.check(rel(p2[i].param:grad(), p1[i].param:grad()) < 1e-4, "ResMLP grad " .. p1[i].name) end
end)

-- 30 AdamW steps of an MLP on fixed random data, batches from data.batches;
-- returns the loss of every step.
local function train(model, ds, device)
  local opt = optim.AdamW(model, { lr = 1e-2, weight_decay = 0.01 })
  local losses = {}
  for epoch = 1, 3 do
    for xb, yb in data.batches(ds, 64, { device = device }) do
      local loss = nn.cross_entropy(model(xb), yb)
      opt:zero_grad()
      loss:backward()
      opt:step()
      losses[#losses + 1] = loss:item()
    end
  end
  return losses
end

T.test("a 30-step MLP training run on the GPU follows the CPU's loss curve", function()
  sq.manual_seed(21)
  local ds = { x = sq.randn(640, 64), y = sq.tensor((function()
    local t = {}
    for i = 1, 640 do t[i] = (i * 7) % 10 end
    return t
  end)(), "int64") }
  local mc, mg = twins(function() return nn.MLP { sizes = { 64, 128, 128, 10 } } end, 22)
  local lc = train(mc, ds, "cpu")
  local lg = train(mg, ds, "cuda")
  T.eq(#lg, 30)
  local worst = 0
  for i = 1, #lc do worst = math.max(worst, math.abs(lg[i] - lc[i]) / math.max(1, math.abs(lc[i]))) end
  print(("     loss cpu %.5f -> %.5f, cuda %.5f -> %.5f, worst step difference %.2e (tol 1e-4)")
    :format(lc[1], lc[#lc], lg[1], lg[#lg], worst))
  T.check(worst <= 1e-4, "loss curves differ by " .. worst)
  T.check(lc[#lc] < lc[1] * 0.95, "the run learns")
  local p1, p2 = mc:parameters(), mg:parameters()
  for i = 1, #p1 do T.check(rel(p2[i], p1[i]) < 1e-3, "final parameter " .. i) end
end)

T.test("dropout on the GPU: seeded, and training/eval respected", function()
  local x = sq.ones(64, 64, { device = "cuda" })
  local d = nn.Dropout(0.5)
  sq.manual_seed(5)
  local a = d(x):tolist()
  sq.manual_seed(5)
  local b = d(x):tolist()
  T.allnear(a, b, 0, "same seed, same mask")
  local zeros = 0
  for _, row in ipairs(a) do for _, v in ipairs(row) do if v == 0 then zeros = zeros + 1 end end end
  T.check(math.abs(zeros / 4096 - 0.5) < 0.05, "about half dropped: " .. zeros)
  d:eval()
  T.eq(d(x):sum():item(), 4096)
end)

T.test("memory: squeeze.memory() has the cuda device; squeeze.cuda.memory() the allocator", function()
  collectgarbage()
  collectgarbage()
  local m = sq.memory()
  T.check(m.cuda ~= nil, "squeeze.memory().cuda exists once the GPU is in use")
  local before = m.cuda.current.total
  local t = sq.zeros({ 1000, 1000 }, { device = "cuda" })
  T.eq(sq.memory().cuda.current.total - before, 4000000)
  T.eq(sq.memory().cuda.current.other - m.cuda.current.other, 4000000)
  local cm = sq.cuda.memory()
  T.check(cm.allocator.reserved >= cm.allocator.in_use and cm.allocator.in_use >= 4000000)
  T.eq(cm.current.total, sq.memory().cuda.current.total)
  t = nil
  collectgarbage()
  T.eq(sq.memory().cuda.current.total, before, "released on collection")
end)

T.test("out of memory: a Lua error naming the op and the size; then work goes on", function()
  local err = T.raises(function() return sq.empty({ 1 << 20, 1 << 20 }, { device = "cuda" }) end,
    "out of device memory")
  T.check(err:find("empty", 1, true) and err:find("bytes", 1, true), err)
  print("     " .. err)
  collectgarbage()
  local a = sq.randn(100, 100, { device = "cuda" })
  T.check(a:matmul(a):sum():item() == a:matmul(a):sum():item())
end)

T.test("an index out of range found by a kernel is raised at the next read", function()
  local w = sq.randn(4, 3, { device = "cuda" })
  local idx = sq.tensor({ 0, 1, 9 }, "int64"):cuda()
  local y = sq.embedding(idx, w) -- returns at once
  local err = T.raises(function() return y:sum():item() end, "embedding")
  T.check(err:find("9", 1, true), err)
  T.eq(sq.embedding(sq.tensor({ 0, 3 }, "int64"):cuda(), w):dim(), 2, "and the GPU goes on")
  sq.cuda.synchronize()
end)

T.test("TF32 is an explicit switch; float32 matmuls are exact float32 by default", function()
  T.eq(sq.cuda.tf32(), false)
  local a, b = sq.randn(128, 1024, { dtype = "float64" }), sq.randn(1024, 96, { dtype = "float64" })
  local ref = a:matmul(b)
  local ga, gb = a:float():cuda(), b:float():cuda()
  local e32 = rel(ga:matmul(gb):double(), ref)
  T.eq(sq.cuda.set_tf32(true), false)
  local etf = rel(ga:matmul(gb):double(), ref)
  sq.cuda.set_tf32(false)
  print(("     float32 %.2e, tf32 %.2e (max abs error / max |ref|)"):format(e32, etf))
  T.check(e32 < 1e-5 and etf > e32 and etf < 1e-2)
end)

T.test("events time GPU work", function()
  local a = sq.randn(512, 512, { device = "cuda" })
  local e0, e1 = sq.cuda.event(), sq.cuda.event()
  e0:record()
  for _ = 1, 5 do a = a:matmul(a) * 0.01 end
  e1:record()
  local ms = e0:elapsed_ms(e1)
  T.check(type(ms) == "number" and ms > 0, tostring(ms))
end)

T.test("under no_grad, dead activations are collected: 64 x 256 MiB chains keep live memory bounded", function()
  -- no backward pass comes under no_grad, so collection must be paced by
  -- allocation alone; old dead tensors need full collections (a full-size
  -- evaluation once held 79.7 GB of garbage)
  collectgarbage()
  local base = sq.memory().cuda.current.total
  local x = sq.randn({ 4096, 4096 }, { device = "cuda" })   -- 64 MiB
  local w = sq.randn({ 4096, 4096 }, { device = "cuda" })
  local peak = 0
  sq.no_grad(function()
    for i = 1, 64 do
      local h = x
      for _ = 1, 4 do h = h:matmul(w):scale_shift(1e-3) end  -- 4 links, 2 tensors each
      peak = math.max(peak, sq.memory().cuda.current.total - base)
    end
  end)
  -- 64 x 8 x 64 MiB = 32 GiB allocated in all; live memory must stay near the
  -- collection budget (1 GiB between full collections) plus the working set
  T.check(peak < 4 * 2 ^ 30, ("live GPU memory reached %.1f GiB"):format(peak / 2 ^ 30))
end)

os.exit(T.finish() == 0 and 0 or 1, true)
