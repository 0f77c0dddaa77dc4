-- gpu_step.lua — the squeeze side of the GPU training-step benchmark (gpu_step.sh).
-- One training step = zero_grad + forward + cross-entropy + backward + AdamW,
-- on random inputs already on the GPU, for:
--   mlp     784-1024-1024-10, batch 256
--   resmlp  ResMLP-S12 shape: 196 patches of 3x16x16 (768 per patch) from 224x224,
--           dim 384, depth 12, expansion 4, 1000 classes, batch 128
--   gpt     6 layers, dim 384, 6 heads, context 256, vocab 256, batch 64
-- Timing: CUDA events around each phase of each step (zero_grad + forward +
-- loss | backward | optimizer), `warmup` steps first, then the median of
-- `steps` steps; each step is waited for before the next (as the PyTorch
-- side does).  "pipelined" times `steps` steps back to back between two
-- events (the host runs ahead of the GPU).  Peak memory: the context's GPU
-- high-water mark (every live tensor and workspace byte) over the timed
-- steps, next to the caching allocator's reservation.
--
--   squeeze run experiments/bench/gpu_step.lua models=mlp,resmlp,gpt precisions=fp32,tf32 [warmup=5 steps=30]
--                                              [profile=gpt]
-- prints one "RESULT side=squeeze ..." line per (model, precision); profile=<model>
-- adds the GPU time per kernel of one fp32 step of that model (squeeze.cuda.profile).
local sq = require "squeeze"
local nn, optim = sq.nn, sq.optim

local args = ... or {}
local function list(s, def)
  local out = {}
  for w in tostring(s or def):gmatch("[^,]+") do out[#out + 1] = w end
  return out
end
local models = list(args.models, "mlp,resmlp,gpt")
local precisions = list(args.precisions, "fp32,tf32")
local warmup = args.warmup or 5
local steps = args.steps or 30

if not sq.cuda.available() then error("gpu_step.lua: no usable GPU", 0) end
print("# squeeze " .. sq.version .. " on " .. sq.cuda.init())

-- deterministic integers in [0, n) as an int64 tensor of `shape` on the GPU
local function classes(shape, n, seed)
  local total = 1
  for _, s in ipairs(shape) do total = total * s end
  local flat, x = {}, seed
  for i = 1, total do
    x = (x * 1103515245 + 12345) % 2147483648
    flat[i] = x % n
  end
  return sq.tensor(flat, "int64"):reshape(shape):cuda()
end

local function build(which)
  sq.manual_seed(0)
  if which == "mlp" then
    local m = nn.MLP { sizes = { 784, 1024, 1024, 10 } }
    return m, sq.randn(256, 784, { device = "cuda" }), classes({ 256 }, 10, 1)
  elseif which == "resmlp" then
    local m = nn.ResMLP { image = 224, patch = 16, channels = 3, dim = 384, depth = 12, classes = 1000 }
    return m, sq.randn(128, 3, 224, 224, { device = "cuda" }), classes({ 128 }, 1000, 2)
  elseif which == "gpt" then
    local m = nn.GPT { vocab = 256, context = 256, dim = 384, heads = 6, layers = 6 }
    return m, classes({ 64, 256 }, 256, 3), classes({ 64, 256 }, 256, 4)
  end
  error("gpu_step.lua: unknown model " .. tostring(which), 0)
end

local function median(t)
  local s = {}
  for i, v in ipairs(t) do s[i] = v end
  table.sort(s)
  local n = #s
  return n % 2 == 1 and s[(n + 1) // 2] or (s[n // 2] + s[n // 2 + 1]) / 2
end

local ev = { sq.cuda.event(), sq.cuda.event(), sq.cuda.event(), sq.cuda.event() }

for _, which in ipairs(models) do
  for _, prec in ipairs(precisions) do
    sq.cuda.set_tf32(prec == "tf32")
    local model, x, y = build(which)
    model:cuda()
    local opt = optim.AdamW(model, { lr = 1e-3, weight_decay = 0.01 })
    local loss
    local function step(timed)
      if timed then ev[1]:record() end
      opt:zero_grad()
      loss = nn.cross_entropy(model(x), y)
      if timed then ev[2]:record() end
      loss:backward()
      if timed then ev[3]:record() end
      opt:step()
      if timed then ev[4]:record() end
    end
    for _ = 1, warmup do step(false) end
    sq.cuda.synchronize()
    collectgarbage()
    collectgarbage()
    sq.cuda.reset_peak()
    local tot, fwd, bwd, upd = {}, {}, {}, {}
    for i = 1, steps do
      step(true)
      tot[i] = ev[1]:elapsed_ms(ev[4])
      fwd[i] = ev[1]:elapsed_ms(ev[2])
      bwd[i] = ev[2]:elapsed_ms(ev[3])
      upd[i] = ev[3]:elapsed_ms(ev[4])
    end
    local mem = sq.cuda.memory()
    local p0, p1 = sq.cuda.event(), sq.cuda.event()
    p0:record()
    for _ = 1, steps do step(false) end
    p1:record()
    local pipe = p0:elapsed_ms(p1) / steps
    local l = loss:item()
    if ("," .. tostring(args.profile) .. ","):find("," .. which .. ",", 1, true) and prec == "fp32" then -- where one step's GPU time goes, per kernel
      local report = sq.cuda.profile(step, false)
      print(("PROFILE side=squeeze model=%s precision=%s (one step)\n%s"):format(which, prec, report))
    end
    print(("RESULT side=squeeze model=%s precision=%s step_ms=%.3f fwd_ms=%.3f bwd_ms=%.3f opt_ms=%.3f "
      .. "pipelined_ms=%.3f peak_mib=%.1f reserved_mib=%.1f params=%d loss=%.4f")
      :format(which, prec, median(tot), median(fwd), median(bwd), median(upd), pipe,
        mem.peak.total / 1048576, mem.allocator.peak_reserved / 1048576, model:num_params(), l))
    io.stdout:flush()
    model, opt, x, y, loss = nil, nil, nil, nil, nil
    collectgarbage()
    collectgarbage()
    sq.cuda.empty_cache()
  end
end
