-- test_actprune_model.lua — squeeze.actprune on a ResMLP: at keep 1 the
-- parameter gradients are the dense model's (dx exact, so every gradient but
-- the pruned weights' is bit-identical); names and an optimizer made before
-- apply stay valid; at keep < 1 the peak SAVED bytes drop by exactly what the
-- stats count; the dW error probe; layer selection; option errors.
local T = dofile("tests/lua/testlib.lua")
local sq = require "squeeze"
local nn = require "squeeze.nn"
local optim = require "squeeze.optim"
local actprune = require "squeeze.actprune"

local function maxabs(t) return t:abs():max():item() end

local function model_of(seed, dtype)
  sq.manual_seed(seed)
  return nn.ResMLP { image = 28, patch = 7, dim = 32, depth = 2, expansion = 4, dtype = dtype }
end

local function batch(seed, n, dtype)
  sq.manual_seed(seed)
  local x = sq.randn({ n, 784 }, { dtype = dtype })
  local y = sq.tensor((function()
    local t = {}
    for i = 1, n do t[i] = (i * 7) % 10 end
    return t
  end)(), "int64")
  return x, y
end

local function names(model)
  local out = {}
  for _, e in ipairs(model:named_parameters()) do out[#out + 1] = e.name end
  return table.concat(out, " ")
end

local function grads(model)
  local g = {}
  for _, e in ipairs(model:named_parameters()) do g[e.name] = e.param:grad():clone() end
  return g
end

local function step(model, x, y)
  model:zero_grad()
  local loss = nn.cross_entropy(model:forward(x), y)
  loss:backward()
  return loss:item()
end

T.test("keep 1: gradients equal the dense model's; names and optimizer stay valid", function()
  for _, dtype in ipairs { "float32", "float64" } do
    local dense, pruned = model_of(11, dtype), model_of(11, dtype)
    local before = names(pruned)
    local opt_d = optim.AdamW(dense:parameters(), { lr = 1e-2 })
    local opt_p = optim.AdamW(pruned:parameters(), { lr = 1e-2 }) -- made before apply
    local _, report = actprune.apply(pruned, { block = 8, keep = 1 })
    T.eq(#report, 6, "token_mix, fc1, fc2 in 2 blocks")
    T.eq(report[1].name, "blocks.1.token_mix")
    T.eq(report[1].shape, "16x16")
    T.eq(names(pruned), before, "parameter names unchanged")
    T.check(actprune.is_pruned(pruned.blocks[2].fc2))
    local x, y = batch(3, 24, dtype)
    local ld, lp = step(dense, x, y), step(pruned, x, y)
    T.eq(lp, ld, "loss (forward exact)")
    local gd, gp = grads(dense), grads(pruned)
    local tol = dtype == "float32" and 1e-5 or 1e-12
    for name, g in pairs(gd) do
      local d = maxabs(gp[name] - g)
      if name:match("token_mix%.weight$") or name:match("fc[12]%.weight$") then
        T.check(d <= tol * maxabs(g), ("%s %s: dW differs by %g"):format(dtype, name, d))
      else
        T.eq(d, 0, dtype .. " " .. name .. " bit-identical")
      end
    end
    opt_d:step(); opt_p:step()
    for _, e in ipairs(pruned:named_parameters()) do
      local ref = dense:named_parameters()
      for _, r in ipairs(ref) do
        if r.name == e.name then
          T.check(maxabs(e.param - r.param) <= 1e-4, e.name .. " after an AdamW step")
        end
      end
    end
    local st = actprune.stats(pruned)
    T.eq(st.calls, 6); T.eq(st.pruned_calls, 6)
    T.eq(st.kept_blocks, st.total_blocks)
    T.eq(st.kept_fraction, 1)
  end
end)

T.test("keep < 1: SAVED drops by exactly the counted bytes; peaks drop too", function()
  local model = model_of(12)
  actprune.apply(model, { block = 16, keep = 0.3 })
  local x, y = batch(4, 32)
  -- saved: SAVED bytes held when backward starts (every activation saved);
  -- peak: the step's high-water marks (measure_step)
  local function measure(on)
    actprune.set_enabled(model, on)
    actprune.reset_stats(model)
    local saved
    local peak = actprune.measure_step(model, function()
      model:zero_grad()
      local loss = nn.cross_entropy(model:forward(x), y)
      saved = sq.memory().cpu.current.saved
      loss:backward()
    end)
    return saved, peak, actprune.stats(model)
  end
  local dsaved, dense, sd = measure(false)
  local psaved, pruned, sp = measure(true)
  T.eq(sd.pruned_calls, 0, "disabled layers run dense")
  T.eq(sp.pruned_calls, 6)
  T.eq(dsaved - psaved, sp.dense_bytes - sp.saved_bytes, "allocator vs stats")
  T.check(pruned.saved < dense.saved, ("peak saved %d !< %d"):format(pruned.saved, dense.saved))
  -- the SAVED high-water mark also holds, for a moment, the dense input of
  -- the layer being packed (the node saves x, packs it, then lets go)
  T.check(pruned.saved <= psaved + 32 * 16 * 128 * 4, "peak saved within one dense fc2 input")
  T.check(pruned.total < dense.total, ("peak total %d !< %d"):format(pruned.total, dense.total))
  T.check(sp.kept_fraction > 0.25 and sp.kept_fraction < 0.4, "kept fraction " .. sp.kept_fraction)
  local per = sp.layers["blocks.1.fc1"]
  T.eq(per.pruned_calls, 1)
  T.eq(per.dense_bytes, 32 * 16 * 32 * 4, "fc1 input (N*P, dim) float32")
  T.check(sp.compress_s > 0)
  -- keep 1 saves the dense bytes plus the BSR index
  actprune.apply(model, { block = 16, keep = 1 })
  local fsaved, _, sf = measure(true)
  T.eq(fsaved - dsaved, sf.saved_bytes - sf.dense_bytes)
  T.check(sf.saved_bytes > sf.dense_bytes)
end)

T.test("no_grad and frozen weights: exact forward, nothing compressed", function()
  local model = model_of(13)
  local x = batch(5, 8)
  local ref = sq.no_grad(function() return model:forward(x) end)
  actprune.apply(model, { block = 32, keep = 0.1, criterion = "random" })
  local y = sq.no_grad(function() return model:forward(x) end)
  T.eq(maxabs(y - ref), 0)
  T.eq(actprune.stats(model).pruned_calls, 0)
  model:freeze("blocks.1.fc1")
  actprune.reset_stats(model)
  model:forward(x):sum():backward()
  T.eq(actprune.stats(model).pruned_calls, 5, "the frozen layer saves no x")
end)

T.test("dw_errors: 0 at keep 1, positive below, for every pruned layer", function()
  local model = model_of(14)
  local x, y = batch(6, 32)
  actprune.apply(model, { block = 8, keep = 1 })
  local e1 = actprune.dw_errors(model, function() step(model, x, y) end)
  local n = 0
  for name, e in pairs(e1) do
    n = n + 1
    T.check(e < 1e-5, name .. " keep 1 error " .. e)
  end
  T.eq(n, 6)
  actprune.apply(model, { block = 8, keep = 0.3, criterion = "l2" })
  local e2 = actprune.dw_errors(model, function() step(model, x, y) end)
  -- ‖dW − dŴ‖/‖dW‖ can pass 1 where the rows of dyᵀx cancel (token_mix)
  for name, e in pairs(e2) do T.check(e > 0 and e < 2, name .. " keep 0.3 error " .. e) end
  T.check(e2["blocks.1.fc1"] < 1 and e2["blocks.1.fc2"] < 1)
  actprune.apply(model, { block = 8, keep = 0.3, criterion = "random" })
  sq.manual_seed(0)
  local e3 = actprune.dw_errors(model, function() step(model, x, y) end)
  T.check(e3["blocks.1.fc2"] > e2["blocks.1.fc2"], "random keeps less gradient than l2")
  -- the probe left no capture state behind: training goes on pruned
  actprune.reset_stats(model)
  step(model, x, y)
  T.eq(actprune.stats(model).pruned_calls, 6)
end)

T.test("layer selection: short names, dotted names, other linears", function()
  local m1 = model_of(15)
  local _, r1 = actprune.apply(m1, { layers = { "fc2" } })
  T.eq(#r1, 2)
  T.check(actprune.is_pruned(m1.blocks[1].fc2) and not actprune.is_pruned(m1.blocks[1].fc1))
  local m2 = model_of(15)
  local _, r2 = actprune.apply(m2, { layers = { "blocks.2.fc1", "head" }, keep = 0.75 })
  T.eq(#r2, 2)
  T.check(actprune.is_pruned(m2.head) and actprune.is_pruned(m2.blocks[2].fc1))
  T.check(not actprune.is_pruned(m2.blocks[1].fc1))
  T.eq(m2.head.cfg.keep, 0.75)
  -- re-applying reconfigures in place
  actprune.apply(m2, { layers = "head", keep = 0.5, block = 64 })
  T.eq(m2.head.cfg.keep, 0.5); T.eq(m2.head.cfg.block, 64)
  T.check(tostring(m2):find("ActPruneLinear(32 -> 10, block 64, keep 0.5, l2, scope tensor)", 1, true))
end)

T.test("bad options raise clear errors", function()
  local m = model_of(16)
  T.raises(function() actprune.apply(m, { keep = 1.5 }) end, "actprune.apply: keep 1.5 must be in (0,1]")
  T.raises(function() actprune.apply(m, { keep = 0 }) end, "actprune.apply: keep 0 must be in (0,1]")
  T.raises(function() actprune.apply(m, { block = 12 }) end, "actprune.apply: block 12 is not one of 8, 16, 32, 64")
  T.raises(function() actprune.apply(m, { criterion = "l1" }) end,
    "actprune.apply: unknown criterion 'l1' (l2, random, topk_unstructured)")
  T.raises(function() actprune.apply(m, { scope = "whole" }) end, "actprune.apply: unknown scope 'whole' (tensor, row)")
  T.raises(function() actprune.apply(m, { blocks = 8 }) end, "actprune.apply: unknown option 'blocks'")
  T.raises(function() actprune.apply(m, { layers = { "fc3" } }) end,
    "actprune.apply: layer 'fc3' matches no linear layer of the model")
  T.raises(function() actprune.apply(m, { layers = {} }) end, "layers must be a non-empty list")
  T.raises(function() actprune.apply(m, 5) end, "actprune.apply: options table expected")
  T.raises(function() actprune.apply({}, {}) end, "actprune.apply: a squeeze.nn module expected")
  T.raises(function() actprune.apply(nn.MLP { sizes = { 4, 3, 2 } }, {}) end,
    "layer 'token_mix' matches no linear layer of the model (the model has no nn.ResMLPBlock)")
  -- nothing was replaced by the failed calls
  T.eq(#actprune.layers(m), 0)
  T.raises(function() actprune.ActPruneLinear.new(nn.ReLU()) end, "ActPruneLinear: nn.Linear expected")
  T.raises(function() actprune.dw_errors(m, function() end) end, "the model has no pruned layers")
  actprune.apply(m, { layers = "fc1" })
  T.raises(function() actprune.dw_errors(m, function() end) end, "did not run in step()")
end)

T.finish()
