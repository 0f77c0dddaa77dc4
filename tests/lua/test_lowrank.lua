-- test_lowrank.lua — the SVD and decomposition bindings, model surgery with
-- squeeze.lowrank (outputs kept at full rank, parameter list valid),
-- freezing schedules, the frozen-factor GEMM counter, and the rank search.
local T = dofile("tests/lua/testlib.lua")
local squeeze = require "squeeze"
local core = squeeze.core
local nn = require "squeeze.nn"
local lowrank = require "squeeze.lowrank"

squeeze.manual_seed(6)

-- ‖a − b‖ / ‖b‖
local function rel(a, b)
  local d = a - b
  return math.sqrt((d * d):sum():item()) / math.sqrt((b * b):sum():item())
end

local function names(model)
  local out = {}
  for _, e in ipairs(model:named_parameters()) do out[#out + 1] = e.name end
  return table.concat(out, " ")
end

T.test("svd reconstructs; gesvd driver; NaN rejected", function()
  local W = core.randn({ 9, 6 })
  for _, drv in ipairs { "auto", "gesdd", "gesvd" } do
    local U, S, Vt, info = core.svd(W, { driver = drv })
    T.eq(table.concat(U:shape(), "x"), "9x6")
    T.eq(table.concat(Vt:shape(), "x"), "6x6")
    T.eq(info.driver, drv == "auto" and "gesdd" or drv)
    local R = (U * S:reshape(1, 6)):matmul(Vt)
    T.check(rel(R, W) < 1e-5, "reconstruction with " .. drv)
  end
  local U = core.svd(W, { rank = 2 })
  T.eq(U:size(2), 2)
  W:set(2, 3, 0 / 0)
  T.raises(function() core.svd(W) end, "svd: matrix 9x6 has a non-finite entry (NaN at [1,2], 0-based)")
  T.raises(function() core.svd(core.randn({ 4 })) end, "need a non-empty 2-d matrix")
  T.raises(function() core.svd(core.randn({ 3, 3 }), { driver = "qr" }) end,
    "driver must be \"auto\", \"gesdd\" or \"gesvd\"")
end)

T.test("lowrank_linear: full rank reproduces the layer; argument errors", function()
  local W, b, x = core.randn({ 12, 20 }), core.randn({ 12 }), core.randn({ 7, 20 })
  local A, B, info = core.lowrank_linear(W, { rank = 12 })
  T.eq(info.rank, 12)
  T.near(info.energy_kept, 1, 1e-9)
  local y, y2 = core.linear(x, W, b), core.linear(core.linear(x, B), A, b)
  T.check(rel(y2, y) < 1e-5, "full-rank output")
  local _, _, i2 = core.lowrank_linear(W, { rank = 5 })
  T.near(i2.tail_sq + i2.energy_kept * i2.total_sq, i2.total_sq, 1e-9)
  local W2 = core.randn({ 64, 128 })
  local msg = T.raises(function() core.lowrank_linear(W2, { rank = 80 }) end, "(rank 80 > min(64,128))")
  T.check(msg:find("bad argument #2 to '", 1, true) and msg:find("lowrank_linear' (", 1, true), msg)
  T.raises(function() core.lowrank_linear(W2, { rank = 0 }) end, "(rank 0 < 1)")
  T.raises(function() core.lowrank_linear(W2, { ratio = 2, quantum = 0 }) end, "(quantum 0 < 1)")
  T.raises(function() core.lowrank_linear(W2, { energy = 0 }) end, "(energy threshold 0 outside (0,1])")
  T.raises(function() core.lowrank_linear(W2, { energy = 1.5 }) end, "(energy threshold 1.5 outside (0,1])")
  T.raises(function() core.lowrank_linear(W2, { rank = 8, ratio = 2 }) end, "give exactly one of rank, ratio, energy")
  T.raises(function() core.lowrank_linear(W2, { rank = 2.5 }) end, "rank must be an integer")
  local _, _, i3 = core.lowrank_linear(W2, { ratio = 2, quantum = 8 })
  T.eq(i3.rank_raw, 21) -- floor(8192 / 384)
  T.eq(i3.rank, 24)
  local _, _, i4 = core.lowrank_linear(W2, { energy = 1 })
  T.eq(i4.rank, 64)
end)

T.test("rank_for and costs on hand-worked examples", function()
  local r, raw = core.rank_for(768, 3072, { ratio = 4, quantum = 64 })
  T.eq(raw, 153)
  T.eq(r, 128)
  T.eq((core.rank_for(768, 3072, { ratio = 4, quantum = 8 })), 152)
  T.eq((core.rank_for(64, 64, { rank = 12, quantum = 8 })), 16) -- tie rounds up
  T.raises(function() core.rank_for(32, 48, { ratio = 2, quantum = 64 }) end, "quantum 64 > min(32,48)")
  local ro, ri = core.tucker2_rank_for(64, 64, 3, 3, { ratio = 4, quantum = 8 })
  T.eq(ro, 24)
  T.eq(ri, 24)
  local c = core.lowrank_linear_cost(768, 3072, 128, { rows = 10 })
  T.eq(c.params_dense, 768 * 3072 + 768)
  T.eq(c.params_lowrank, 128 * (3072 + 768) + 768)
  T.eq(c.flops_lowrank, 2 * 10 * 128 * (3072 + 768))
end)

T.test("tucker2: full ranks reproduce the conv", function()
  local W, b, x = core.randn({ 6, 4, 3, 3 }), core.randn({ 6 }), core.randn({ 2, 4, 9, 7 })
  local f, g, l, info = core.tucker2(W, { rank_in = 4, rank_out = 6 })
  T.eq(table.concat(f:shape(), "x"), "4x4x1x1")
  T.eq(table.concat(g:shape(), "x"), "6x4x3x3")
  T.eq(table.concat(l:shape(), "x"), "6x6x1x1")
  T.near(info.energy_in, 1, 1e-9)
  local y = core.conv2d(x, W, b, { stride = 2, pad = 1 })
  local y2 = core.conv2d(core.conv2d(core.conv2d(x, f), g, nil, { stride = 2, pad = 1 }), l, b)
  T.check(rel(y2, y) < 1e-5, "conv output")
  T.raises(function() core.tucker2(W, { rank_in = 5, rank_out = 6 }) end, "(rank_in 5 > min(4,54))")
  T.raises(function() core.tucker2(W, { rank_in = 4 }) end, "give rank_in and rank_out, or ratio")
end)

T.test("decompose an MLP: same outputs at full rank, parameter list valid", function()
  local model = nn.MLP { sizes = { 16, 12, 8 } }
  local x = core.randn({ 5, 16 })
  local y0 = model:forward(x):detach()
  local n0 = #model:parameters()
  local m2, report = lowrank.decompose(model, { rank = 8, per_layer = { ["layers.1"] = { rank = 12 } },
                                                keep_larger = true })
  T.check(m2 == model, "the model is changed in place")
  T.eq(#report, 2)
  T.eq(report[1].name, "layers.1")
  T.eq(report[1].rank, 12)
  T.eq(report[2].rank, 8)
  T.check(lowrank.is_decomposed(model.layers[1]) and lowrank.is_decomposed(model.layers["2"]))
  T.eq(names(model), "layers.1.first.weight layers.1.second.weight layers.1.second.bias "
    .. "layers.2.first.weight layers.2.second.weight layers.2.second.bias")
  T.eq(#model:parameters(), n0 + 2)
  T.check(rel(model:forward(x), y0) < 1e-5, "full-rank outputs")
  for _, p in ipairs(model:parameters()) do
    T.check(p:requires_grad(), "factors train")
    T.eq(p:category(), "param")
  end
  -- without keep_larger a layer that would grow stays dense
  local m3 = nn.MLP { sizes = { 16, 12, 8 } }
  local _, rep3 = lowrank.decompose(m3, { rank = 6 })
  T.check(rep3[1].skipped == nil and rep3[2].skipped ~= nil, "12x16 at rank 6 saves, 8x12 at rank 6 does not")
  T.check(lowrank.is_decomposed(m3.layers[1]) and not lowrank.is_decomposed(m3.layers[2]))
  T.raises(function() lowrank.decompose(nn.MLP { sizes = { 16, 12 } }, { rank = 13 }) end,
    "layer 'layers.1'")
end)

T.test("decompose convs: Tucker-2 and 1x1 reproduce the model", function()
  local model = nn.Sequential(nn.Conv2d(4, 6, 3, { stride = 2, pad = 1 }), nn.ReLU(), nn.Conv2d(6, 5, 1))
  local x = core.randn({ 2, 4, 8, 8 })
  local y0 = model:forward(x):detach()
  local _, report = lowrank.decompose(model, {
    keep_larger = true, per_layer = { ["1"] = { rank_in = 4, rank_out = 6 }, ["3"] = { rank = 5 } } })
  T.eq(report[1].kind, "tucker2")
  T.eq(report[2].kind, "conv1x1")
  T.check(rel(model:forward(x), y0) < 1e-5, "full-rank conv outputs")
  T.eq(names(model), "1.first.weight 1.core.weight 1.last.weight 1.last.bias 3.first.weight "
    .. "3.second.weight 3.second.bias")
end)

T.test("freezer schedules flip the factor groups", function()
  local model = nn.MLP { sizes = { 16, 12, 8 } }
  lowrank.decompose(model, { rank = 4 })
  local l1 = model.layers[1]
  local function state() return (l1.first.weight:requires_grad() and "T" or "F") .. (l1.second.weight:requires_grad() and "T" or "F") end
  local fz = lowrank.freezer(model, { mode = "first" })
  T.eq(state(), "FT")
  T.check(l1.second.bias:requires_grad(), "the bias trains with the second factor")
  lowrank.freezer(model, { mode = "second" })
  T.eq(state(), "TF")
  lowrank.freezer(model, { mode = "none" })
  T.eq(state(), "TT")
  fz = lowrank.freezer(model, { mode = "alternate_epoch", period = 2 })
  local seq = {}
  for e = 1, 6 do fz:on_epoch(e) seq[#seq + 1] = state() end
  T.eq(table.concat(seq, " "), "FT FT TF TF FT FT")
  fz:on_iter(3) -- iterations do not move an epoch schedule
  T.eq(state(), "FT")
  fz = lowrank.freezer(model, { mode = "alternate_iter", period = 1, start = "second" })
  seq = {}
  for i = 1, 4 do fz:on_iter(i) seq[#seq + 1] = state() end
  T.eq(table.concat(seq, " "), "TF FT TF FT")
  T.eq(fz:state(), "first")
  T.raises(function() lowrank.freezer(model, { mode = "sometimes" }) end, "freezer: mode must be")
  T.raises(function() lowrank.freezer(model, { mode = "alternate_iter", period = 0 }) end, "period must be an integer >= 1")
  T.raises(function() lowrank.freezer(nn.MLP { sizes = { 4, 2 } }, { mode = "first" }) end, "no decomposed layers")
  -- Tucker-2 groups: ends (1x1 factors) vs core by default
  local conv = nn.Sequential(nn.Conv2d(4, 6, 3, { pad = 1 }))
  lowrank.decompose(conv, { rank_in = 2, rank_out = 3 })
  lowrank.freezer(conv, { mode = "first" })
  local t = conv[1]
  T.check(not t.first.weight:requires_grad() and not t.last.weight:requires_grad() and t.core.weight:requires_grad())
end)

-- One SGD step over the parameters that train (as the optimizers do: a
-- parameter with requires_grad false is skipped, state and all).
local function sgd_step(params, lr)
  for _, p in ipairs(params) do
    if p:requires_grad() and p:grad() then p:add_(p:grad(), -lr) end
  end
end

T.test("frozen first factor: one weight-gradient GEMM per step, not two", function()
  local model = nn.Sequential(nn.Linear(16, 12))
  lowrank.decompose(model, { rank = 4 })
  local x = core.randn({ 5, 16 })
  local first = model[1].first.weight -- parameter 1 in model order
  local optim = squeeze.optim         -- the real optimizer when it is built in
  local opt = optim and optim.AdamW(model, { lr = 1e-2 })
  for _, case in ipairs { { "first", 1 }, { "none", 2 }, { "second", 1 }, { "first", 1 } } do
    lowrank.freezer(model, { mode = case[1] })
    if opt then opt:zero_grad() else model:zero_grad() end
    local value_before, steps_before = first:clone(), opt and opt:steps(1)
    local before = squeeze.stats().weight_grad_gemms
    local loss = model:forward(x):sum()
    loss:backward()
    if opt then opt:step() else sgd_step(model:parameters(), 0.1) end
    T.eq(squeeze.stats().weight_grad_gemms - before, case[2], "mode " .. case[1])
    if case[1] == "first" then
      T.check(first:grad() == nil, "a frozen factor gets no gradient")
      T.eq(rel(first, value_before), 0, "a frozen factor is not updated")
      if opt then T.eq(opt:steps(1), steps_before, "its optimizer state is left alone") end
      T.check(model[1].second.weight:grad() ~= nil)
    elseif opt then
      T.eq(opt:steps(1), steps_before + 1, "a training factor is updated")
    end
  end
end)

T.test("rank search: grid ranks only, fastest within the budget", function()
  -- 48x64 at ratio 2: r0 = floor(3072 / 224) = 13 -> q 8 -> 16; window 1: 8, 16, 24;
  -- budget 3072 / 2 = 1536 parameters: only rank 8 (896) fits
  local res = lowrank.search(nn.Linear(64, 48), { ratio = 2, quantum = 8, window = 1, repeats = 2, batch = 16 })
  T.eq(res.r0, 13)
  T.eq(#res.trials, 3)
  for i, t in ipairs(res.trials) do
    T.eq(t.rank, 8 * i)
    T.eq(t.params, t.rank * 112)
    T.eq(t.within_budget, t.rank == 8)
    T.eq(t.seconds ~= nil, t.rank == 8, "only candidates in budget are timed")
  end
  T.eq(res.best, 8)
  T.check(res.dense_seconds > 0)
  res = lowrank.search(nn.Linear(64, 48), { r0 = 16, quantum = 8, window = 1, max_params = 0,
                                            repeats = 3, time_over_budget = true, dense = false })
  for _, t in ipairs(res.trials) do
    T.check(t.seconds >= 0 and #t.samples == 3 and t.rank % 8 == 0)
  end
  T.check(res.best % 8 == 0)
  -- a 3x3 conv: Tucker-2 candidates with r_in = r_out = r
  local cres = lowrank.search(nn.Conv2d(8, 8, 3, { pad = 1 }), { r0 = 4, quantum = 4, window = 1,
                                                                 image = { 6, 6 }, batch = 2, repeats = 1 })
  T.eq(#cres.trials, 2)
  T.eq(cres.trials[1].params, 4 * 8 + 16 * 9 + 8 * 4)
  T.eq(cres.best, 4)
  -- errors from the caller's code surface as they are
  T.raises(function()
    core.lowrank_search(64, 64, { r0 = 16, quantum = 8 }, function(r) return function() error("bench broke at " .. r) end end)
  end, "bench broke at 8")
  T.raises(function() core.lowrank_search(64, 64, { r0 = 16, quantum = 8, max_params = 10 }, function() return function() end end) end,
    "no rank in 8..32 (step 8) meets the budget of 10 parameters")
  T.raises(function() core.lowrank_search(64, 64, { r0 = 16, quantum = 0 }, function() end) end, "quantum 0 < 1")
end)

T.test("plan: the same ranks, parameters and skips as decompose, without an SVD", function()
  local function key(rep)
    local out = {}
    for _, r in ipairs(rep) do
      out[#out + 1] = ("%s:%s/%s/%s:%s:%s"):format(r.name, tostring(r.rank), tostring(r.rank_in),
        tostring(r.rank_out), tostring(r.params_lowrank), r.skipped and "skip" or "keep")
    end
    return table.concat(out, " ")
  end
  for _, q in ipairs { 1, 8, 16, 32 } do
    local opts = { ratio = 2, quantum = q, no_grid = "dense" }
    local mlp = nn.MLP { sizes = { 40, 24, 10 } }
    local rn = nn.ResNet { widths = { 8, 16 }, image = 8 }
    local p1, p2 = lowrank.plan(mlp, opts), lowrank.plan(rn, opts)
    local _, d1 = lowrank.decompose(mlp, opts)
    local _, d2 = lowrank.decompose(rn, opts)
    T.eq(key(p1), key(d1), "MLP q=" .. q)
    T.eq(key(p2), key(d2), "ResNet q=" .. q)
  end
  T.raises(function() lowrank.plan(nn.MLP { sizes = { 8, 4 } }, { energy = 0.9 }) end, "energy needs the SVD")
  T.raises(function() lowrank.plan(nn.MLP { sizes = { 8, 4 } }, { ratio = 2, no_grid = "skip" }) end,
    "no_grid must be \"error\" or \"dense\"")
end)

T.test("no_grid: a quantum above a layer's dimensions raises, or leaves the layer dense", function()
  local model = nn.MLP { sizes = { 64, 48, 10 } }
  T.raises(function() lowrank.decompose(model, { ratio = 2, quantum = 16 }) end,
    "layer 'layers.2'")
  T.raises(function() lowrank.decompose(model, { ratio = 2, quantum = 16 }) end, "(quantum 16 > min(10,48)")
  T.check(not lowrank.is_decomposed(model.layers[1]), "a failed decompose leaves every layer as it was")
  local _, rep = lowrank.decompose(model, { ratio = 2, quantum = 16, no_grid = "dense" })
  T.eq(rep[1].rank, 16)
  T.eq(rep[2].skipped, "quantum 16 > min(10,48)")
  T.check(lowrank.is_decomposed(model.layers[1]) and not lowrank.is_decomposed(model.layers[2]))
  local conv = nn.Sequential(nn.Conv2d(8, 16, 3, { pad = 1 }))
  local _, crep = lowrank.decompose(conv, { ratio = 2, quantum = 16, no_grid = "dense" })
  T.eq(crep[1].skipped, "quantum 16 > rank limits 16 (out), 8 (in)")
end)

T.test("trace and flops: layer shapes and 2 x multiply-adds, dense and factored", function()
  local mlp = nn.MLP { sizes = { 20, 12, 6 } }
  local x = core.randn({ 5, 20 })
  local tr = lowrank.trace(mlp, x)
  T.eq(table.concat(tr["layers.2"].input, "x"), "5x12")
  local f = lowrank.flops(mlp, x)
  T.eq(f, 2 * 5 * (20 * 12 + 12 * 6))
  lowrank.decompose(mlp, { rank = 4, keep_larger = true })
  local f2, per = lowrank.flops(mlp, x)
  T.eq(f2, 2 * 5 * 4 * (20 + 12) + 2 * 5 * 4 * (12 + 6))
  T.eq(per["layers.1.first"], 2 * 5 * 4 * 20)
  T.check(rawget(mlp.layers[1].first, "forward") == nil, "the tracer leaves no instance override behind")
  -- a strided 3x3 conv and its Tucker-2 factors, against the engine's cost model
  local conv = nn.Sequential(nn.Conv2d(6, 8, 3, { stride = 2, pad = 1 }))
  local xc = core.randn({ 2, 6, 9, 9 })
  T.eq(lowrank.flops(conv, xc), 2 * 2 * 5 * 5 * 8 * 6 * 9)
  lowrank.decompose(conv, { rank_in = 3, rank_out = 4 })
  local c = core.lowrank_conv_cost(8, 6, 3, 3, 4, 3, { N = 2, H = 9, W = 9, stride = 2, pad = 1 })
  T.eq(lowrank.flops(conv, xc), c.flops_lowrank)
end)

T.test("decompose with search: grid ranks within the planned budget, trials reported", function()
  local model = nn.MLP { sizes = { 96, 64, 10 } }
  local x = core.randn({ 32, 96 })
  local plan = lowrank.plan(model, { ratio = 2, quantum = 8, no_grid = "dense", layers = "layers.1" })
  T.eq(plan[1].rank, 16) -- floor(6144 / 320) = 19 -> 16 on the 8-grid
  local _, rep = lowrank.decompose(model, { ratio = 2, quantum = 8, layers = "layers.1",
                                            search = { sample = x, window = 1, repeats = 2 } })
  T.check(rep[1].rank == 8 or rep[1].rank == 16, "rank " .. rep[1].rank)
  T.eq(#rep[1].search.trials, 3)
  for _, t in ipairs(rep[1].search.trials) do
    T.eq(t.within_budget, t.rank <= 16)
  end
  -- window 0: the planned rank is the only candidate
  local m2 = nn.MLP { sizes = { 96, 64, 10 } }
  local _, rep2 = lowrank.decompose(m2, { ratio = 2, quantum = 8, layers = "layers.1", search = { window = 0, repeats = 1 } })
  T.eq(rep2[1].rank, 16)
  -- a conv: r_in = r_out = the searched rank, input shape from the sample
  local rn = nn.Sequential(nn.Conv2d(16, 16, 3, { pad = 1 }))
  local _, crep = lowrank.decompose(rn, { ratio = 2, quantum = 4, search = { sample = core.randn({ 2, 16, 6, 6 }), repeats = 1 } })
  T.eq(crep[1].rank_in, crep[1].rank_out)
  T.check(crep[1].rank_in % 4 == 0)
  T.raises(function() lowrank.decompose(nn.MLP { sizes = { 8, 4 } }, { rank = 2, search = {} }) end,
    "search needs ratio")
end)

T.finish()
