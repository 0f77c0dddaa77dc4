-- test_cuda_actprune.lua — structured activation pruning on the GPU from Lua:
-- core.linear_pruned and core.actprune_dw_error on GPU tensors against the
-- CPU (the controls random and topk_unstructured too); a small pruned ResMLP
-- trained on both devices, with each criterion; the model of
-- experiments/actprune.lua at its full size (size=full: patch 2 on 28x28 =
-- 196 tokens, dim 384, depth 12, expansion 4; every token_mix, fc1 and fc2
-- pruned, block 32, keep 0.5, l2) training on the GPU for a few steps, with
-- the experiment's SAVED measurement.
--
-- Without a usable GPU it prints why and exits 77 (ctest: skipped).
--
-- Tolerances: one op, float32: 1e-5 relative (y), 2e-5 (dW, 3xTF32 vs the
-- CPU's float32 BSR dW); loss curves of 5 AdamW steps of the pruned small
-- ResMLP: 1e-3 relative per step (the GPU sums in another order and AdamW
-- carries it; a block whose score sits within rounding of the cut could
-- even flip, so this is looser than test_cuda.lua's dense 1e-4).
local sq = require "squeeze"

if not sq.cuda.available() then
  print("SKIP: no usable GPU (squeeze.cuda.available() is false)")
  os.exit(77, true)
end

local T = dofile("tests/lua/testlib.lua")
local nn, optim = sq.nn, sq.optim
local actprune = require "squeeze.actprune"

print("device: " .. sq.cuda.init())

local function rel(a, b)
  local x, y = a:cpu():reshape(-1):tolist(), b:cpu():reshape(-1):tolist()
  assert(#x == #y, "sizes differ")
  local num, den = 0, 0
  for i = 1, #y do
    num = num + (x[i] - y[i]) ^ 2
    den = den + y[i] ^ 2
  end
  return math.sqrt(num / math.max(den, 1e-300))
end

local function labels(n)
  local t = {}
  for i = 1, n do t[i] = (i * 7) % 10 end
  return sq.tensor(t, "int64")
end

T.test("core.linear_pruned on the GPU: y, dW, stats and SAVED bytes match the CPU", function()
  sq.manual_seed(31)
  local x, w, b = sq.randn(5, 39, 70), sq.randn(45, 70), sq.randn(45)
  local gy = sq.randn(5, 39, 45)
  local opts = { block = 16, keep = 0.3 }
  local function run(dev)
    local xd, wd, bd = x:to(dev), w:detach():to(dev):requires_grad(true), b:detach():to(dev):requires_grad(true)
    collectgarbage()
    local s0 = sq.memory()[dev].current.saved
    local y, st = sq.linear_pruned(xd, wd, bd, opts)
    local ds = sq.memory()[dev].current.saved - s0
    y:backward(gy:to(dev))
    return y, st, ds, wd:grad(), bd:grad()
  end
  local yc, sc, dsc, dwc, dbc = run("cpu")
  local yg, sg, dsg, dwg, dbg = run("cuda")
  T.eq(yg:device(), "cuda")
  T.eq(dwg:device(), "cuda")
  T.check(rel(yg, yc) <= 1e-5, "y rel " .. rel(yg, yc))
  T.check(rel(dwg, dwc) <= 2e-5, "dW rel " .. rel(dwg, dwc))
  T.check(rel(dbg, dbc) <= 1e-5, "db rel " .. rel(dbg, dbc))
  for _, k in ipairs { "kept_blocks", "total_blocks", "saved_bytes", "value_bytes", "dense_bytes", "dw_flops" } do
    T.eq(sg[k], sc[k], k)
  end
  T.check(sg.pruned and sg.compress_s >= 0)
  T.eq(sg.compress_timed, 1)
  T.eq(dsg, dsc, "SAVED bytes added by the forward")
  -- time_compress = false: nothing drains the stream, compress_s is 0, the
  -- results are the same bits
  local opts_t = opts
  opts = { block = 16, keep = 0.3, time_compress = false }
  local yn, sn, dsn, dwn, dbn = run("cuda")
  opts = opts_t
  T.eq(sn.compress_timed, 0)
  T.eq(sn.compress_s, 0)
  T.eq(dsn, dsg, "SAVED bytes untimed")
  T.eq(rel(yn, yg), 0, "y untimed")
  T.eq(rel(dwn, dwg), 0, "dW untimed")
  T.eq(rel(dbn, dbg), 0, "db untimed")
  print(("     kept %d/%d blocks, saved %d B (dense %d B), SAVED +%d B on both"):format(sg.kept_blocks,
    sg.total_blocks, sg.saved_bytes, sg.dense_bytes, dsg))
end)

T.test("the controls' criteria run on the GPU; float64 is a clear error", function()
  sq.manual_seed(33)
  local x, w, gy = sq.randn(3, 41, 70), sq.randn(45, 70), sq.randn(3, 41, 45)
  local function run(dev, o)
    local wd = w:detach():to(dev):requires_grad(true)
    local y, st = sq.linear_pruned(x:to(dev), wd, nil, o)
    y:backward(gy:to(dev))
    return y, st, wd:grad()
  end
  -- topk_unstructured keeps the CPU's entries: everything matches the CPU
  for _, scope in ipairs { "tensor", "row" } do
    local o = { block = 16, keep = 0.3, criterion = "topk_unstructured", scope = scope }
    local yc, sc, dwc = run("cpu", o)
    local yg, sg, dwg = run("cuda", o)
    T.eq(dwg:device(), "cuda")
    T.check(rel(yg, yc) <= 1e-5, "y rel " .. rel(yg, yc))
    T.check(rel(dwg, dwc) <= 2e-5, scope .. ": dW rel " .. rel(dwg, dwc))
    for _, k in ipairs { "kept_blocks", "total_blocks", "saved_bytes", "value_bytes", "dw_flops" } do
      T.eq(sg[k], sc[k], k)
    end
  end
  -- random: the GPU's own Philox stream (other blocks than the CPU), the
  -- same counts, reproducible from sq.manual_seed, and exact at keep 1
  local o = { block = 16, keep = 0.5, criterion = "random" }
  local _, sc = run("cpu", o)
  sq.manual_seed(5)
  local _, sg, dw1 = run("cuda", o)
  local _, _, dw2 = run("cuda", o)
  sq.manual_seed(5)
  local _, _, dw3 = run("cuda", o)
  for _, k in ipairs { "kept_blocks", "total_blocks", "saved_bytes", "value_bytes" } do T.eq(sg[k], sc[k], k) end
  T.eq(rel(dw3, dw1), 0, "same seed, same dW")
  T.check(rel(dw2, dw1) > 1e-3, "next draw, other blocks: " .. rel(dw2, dw1))
  local _, _, dwd = run("cuda", { block = 16, keep = 1, criterion = "random" })
  local _, _, dwl = run("cuda", { block = 16, keep = 1 })
  T.check(rel(dwd, dwl) <= 1e-6, "keep 1: random = l2 " .. rel(dwd, dwl))
  local xc, wc = sq.randn(40, 24, { device = "cuda" }), sq.randn(8, 24, { device = "cuda" }):requires_grad(true)
  T.raises(function() sq.linear_pruned(xc:to("float64"), wc:detach():to("float64"), nil, {}) end,
    "the pruning kernels take float32, got float64")
end)

T.test("core.actprune_dw_error on the GPU agrees with the CPU", function()
  sq.manual_seed(32)
  local x, dy = sq.randn(300, 96), sq.randn(300, 40)
  for _, keep in ipairs { 1, 0.5, 0.1 } do
    local o = { block = 32, keep = keep }
    local ec = sq.actprune_dw_error(x, dy, o)
    local eg = sq.actprune_dw_error(x:cuda(), dy:cuda(), o)
    T.check(math.abs(eg - ec) <= 1e-4, ("keep %g: cuda %g cpu %g"):format(keep, eg, ec))
    if keep == 1 then T.check(eg <= 1e-5, "keep 1 error " .. eg) end
  end
end)

-- n AdamW steps of model on one fixed batch; the losses
local function train(model, x, y, n)
  local opt = optim.AdamW(model:parameters(), { lr = 3e-3, weight_decay = 0.05 })
  local losses = {}
  for i = 1, n do
    opt:zero_grad()
    local loss = nn.cross_entropy(model:forward(x), y)
    loss:backward()
    opt:step()
    losses[i] = loss:item()
  end
  return losses
end

T.test("a pruned ResMLP trains on the GPU as on the CPU", function()
  local function make(dev)
    sq.manual_seed(33)
    local m = nn.ResMLP { image = 28, patch = 7, dim = 64, depth = 2, expansion = 4 }
    if dev == "cuda" then m:cuda() end
    actprune.apply(m, { block = 16, keep = 0.5 })
    return m
  end
  sq.manual_seed(34)
  local x, y = sq.randn(32, 784), labels(32)
  local mc, mg = make("cpu"), make("cuda")
  local lc = train(mc, x, y, 5)
  local lg = train(mg, x:cuda(), y:cuda(), 5)
  local worst = 0
  for i = 1, #lc do worst = math.max(worst, math.abs(lg[i] - lc[i]) / math.max(1, math.abs(lc[i]))) end
  print(("     loss cpu %.5f -> %.5f, cuda %.5f -> %.5f, worst step difference %.2e (tol 1e-3)")
    :format(lc[1], lc[#lc], lg[1], lg[#lg], worst))
  T.check(worst <= 1e-3, "loss curves differ by " .. worst)
  T.check(lg[#lg] < lg[1], "the GPU run learns")
  local sc, sg = actprune.stats(mc), actprune.stats(mg)
  T.eq(sg.pruned_calls, sc.pruned_calls)
  T.eq(sg.saved_bytes, sc.saved_bytes, "BSR bytes over the 5 steps")
  T.eq(sg.kept_blocks, sc.kept_blocks)
end)

T.test("the controls train a pruned ResMLP on the GPU (experiments/actprune.lua's criterion axis)", function()
  sq.manual_seed(36)
  local x, y = sq.randn(32, 784), labels(32)
  for _, crit in ipairs { "topk_unstructured", "random" } do
    local function make(dev)
      sq.manual_seed(37)
      local m = nn.ResMLP { image = 28, patch = 7, dim = 64, depth = 2, expansion = 4 }
      if dev == "cuda" then m:cuda() end
      actprune.apply(m, { block = 8, keep = 0.3, criterion = crit, scope = "tensor" })
      return m
    end
    local mc, mg = make("cpu"), make("cuda")
    local lc = train(mc, x, y, 4)
    local lg = train(mg, x:cuda(), y:cuda(), 4)
    for i, l in ipairs(lg) do T.check(l == l and l < 1e3, crit .. ": loss " .. i .. " finite: " .. l) end
    T.check(lg[#lg] < lg[1], ("%s: the GPU run learns, loss %.4f -> %.4f"):format(crit, lg[1], lg[#lg]))
    local sc, sg = actprune.stats(mc), actprune.stats(mg)
    T.eq(sg.pruned_calls, sc.pruned_calls, crit .. " pruned calls")
    T.eq(sg.kept_blocks, sc.kept_blocks, crit .. " kept")
    T.eq(sg.saved_bytes, sc.saved_bytes, crit .. " saved bytes")
    if crit == "topk_unstructured" then -- the CPU's entries: the same curve up to rounding
      local worst = 0
      for i = 1, #lc do worst = math.max(worst, math.abs(lg[i] - lc[i]) / math.max(1, math.abs(lc[i]))) end
      T.check(worst <= 1e-3, "topk_unstructured loss curves differ by " .. worst)
    end
    local errs = actprune.dw_errors(mg, function()
      mg:zero_grad()
      nn.cross_entropy(mg:forward(x:cuda()), y:cuda()):backward()
    end)
    local n = 0
    for name, e in pairs(errs) do
      n = n + 1
      T.check(e > 0 and e < 1.5, ("%s: dw_err %s = %g"):format(crit, name, e))
    end
    T.eq(n, 6, crit .. ": a dW error per pruned layer")
    print(("     %s: loss %.4f -> %.4f on cuda (cpu %.4f -> %.4f)"):format(crit, lg[1], lg[#lg], lc[1], lc[#lc]))
  end
end)

T.test("experiments/actprune.lua's full-size model trains on the GPU (a few steps)", function()
  sq.manual_seed(35)
  -- SIZES.full of the experiment: ResMLP-S12 block shapes
  local model = nn.ResMLP { image = 28, patch = 2, dim = 384, depth = 12, expansion = 4 }
  model:cuda()
  local _, report = actprune.apply(model, { block = 32, keep = 0.5, criterion = "l2", scope = "tensor",
                                            layers = { "token_mix", "fc1", "fc2" } })
  T.eq(#report, 36, "3 linears in each of 12 blocks")
  local x, y = sq.randn(32, 784):cuda(), labels(32):cuda()
  local t0 = sq.clock()
  local losses = train(model, x, y, 6)
  sq.cuda.synchronize()
  local dt = sq.clock() - t0
  for i, l in ipairs(losses) do T.check(l == l and l < 1e3, "loss " .. i .. " finite: " .. l) end
  T.check(losses[#losses] < losses[1], ("loss %.4f -> %.4f"):format(losses[1], losses[#losses]))
  local st = actprune.stats(model)
  T.eq(st.pruned_calls, 36 * 6)
  T.check(st.kept_fraction > 0.45 and st.kept_fraction < 0.55, "kept fraction " .. st.kept_fraction)
  -- the experiment's memory probe: SAVED when backward starts, pruning on and off
  local function probe(on)
    actprune.set_enabled(model, on)
    actprune.reset_stats(model)
    local saved
    local peak = actprune.measure_step(model, function()
      model:zero_grad()
      local loss = nn.cross_entropy(model:forward(x), y)
      saved = sq.memory().cuda.current.saved
      loss:backward()
    end, "cuda")
    return saved, peak, actprune.stats(model)
  end
  local dsaved, dpeak = probe(false)
  local psaved, ppeak, sp = probe(true)
  T.eq(dsaved - psaved, sp.dense_bytes - sp.saved_bytes, "SAVED drop = counted dense - BSR bytes")
  T.check(ppeak.saved < dpeak.saved and ppeak.total < dpeak.total, "peaks drop")
  print(("     6 steps in %.2f s, loss %.4f -> %.4f; SAVED at backward %.1f MiB pruned vs %.1f MiB dense (-%.1f%%), "
         .. "peak %.1f vs %.1f MiB"):format(dt, losses[1], losses[#losses], psaved / 2 ^ 20, dsaved / 2 ^ 20,
    100 * (1 - psaved / dsaved), ppeak.total / 2 ^ 20, dpeak.total / 2 ^ 20))
  model:zero_grad()
  model = nil
  collectgarbage()
end)

T.finish()
