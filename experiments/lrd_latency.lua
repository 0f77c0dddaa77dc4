-- lrd_latency.lua — latency of one decomposed layer against its rank, at
-- every rank in a range (quantum 1), to see whether this device has the
-- rank "staircase" that rank quantization exploits (methods.md §2 step 3;
-- on an H100 a rank off a multiple of 8 ran 2.4–6x slower).  Companion of
-- experiments/lrd.lua, same layer shapes as its CPU setting.
--
--   squeeze sweep experiments/lrd_latency.lua --results /tmp/lrd-results
--   squeeze plot --results /tmp/lrd-results --sweep lrd_latency --metric latency_min_ms --group layer
--
-- Each point times forward + backward of the factored layer (random factors
-- of each rank: the time does not depend on the values; input requires a
-- gradient, as inside a network) with lowrank.search's timer, and logs per
-- rank (the step): latency_ms (median of the repeats) and latency_min_ms (the
-- fastest repeat: on a shared machine the minimum is the least disturbed
-- figure); the dense layer's as dense_latency_ms / dense_latency_min_ms.
local sq = require "squeeze"
local experiment = require "squeeze.experiment"
local lowrank = require "squeeze.lowrank"
local nn = sq.nn

-- the layers of lrd.lua's CPU setting, with the input they see there
local LAYERS = {
  ["mlp.layers.1"] = { make = function() return nn.Linear(784, 512) end, batch = 128, lo = 8, hi = 320 },
  ["mlp.layers.2"] = { make = function() return nn.Linear(512, 512) end, batch = 128, lo = 8, hi = 320 },
  -- ResNet blocks.3.conv2: 64 -> 64, 3x3, on 4x4 maps (14x14 input, two stride-2 stages), batch 64
  ["resnet.blocks.3.conv2"] = { make = function() return nn.Conv2d(64, 64, 3, { pad = 1 }) end,
                                batch = 64, image = { 4, 4 }, lo = 2, hi = 64 },
}

local function run_point(cfg, run)
  local L = LAYERS[cfg.layer]
  if not L then error("lrd_latency: unknown layer " .. tostring(cfg.layer), 0) end
  sq.set_num_threads(cfg.threads)
  local c = (L.lo + L.hi) // 2
  local res = lowrank.search(L.make(), {
    r0 = c, quantum = 1, window = c - L.lo, max_params = 0, time_over_budget = true,
    repeats = cfg.repeats, warmup = 2, batch = L.batch, image = L.image, dense = true })
  local function min_of(xs)
    local m = math.huge
    for _, v in ipairs(xs) do if v < m then m = v end end
    return m
  end
  for _, t in ipairs(res.trials) do
    if t.rank <= L.hi then
      run:log("latency_ms", 1e3 * t.seconds, t.rank)
      run:log("latency_min_ms", 1e3 * min_of(t.samples), t.rank)
    end
  end
  -- the dense layer, timed the same way as lowrank.search times it
  local core = sq.core
  local layer = L.make()
  local w = core.randn(layer.weight:shape(), { std = 0.1, requires_grad = true })
  local bias = core.zeros({ w:size(1) }, { requires_grad = true })
  local x = L.image and core.randn({ L.batch, w:size(2), L.image[1], L.image[2] }, { requires_grad = true })
                    or core.randn({ L.batch, w:size(2) }, { requires_grad = true })
  local step = function()
    local y = L.image and core.conv2d(x, w, bias, { pad = 1 }) or core.linear(x, w, bias)
    y:sum():backward()
    x:zero_grad(); w:zero_grad(); bias:zero_grad()
  end
  local med, samples = core.lowrank_time(step, { repeats = cfg.repeats, warmup = 2 })
  run:summary { dense_latency_ms = 1e3 * med, dense_latency_min_ms = 1e3 * min_of(samples),
                search_dense_latency_ms = 1e3 * res.dense_seconds }
end

return experiment {
  name = "lrd_latency",
  config = { layer = "mlp.layers.1", repeats = 15, threads = 1 },
  sweep = { layer = { "mlp.layers.1", "mlp.layers.2", "resnet.blocks.3.conv2" } },
  run = run_point,
}
