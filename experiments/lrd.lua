-- lrd.lua — low-rank decomposition with rank quantization and sequential
-- freezing (methods.md §2, Hajimolahoseini et al. 2309.03824; issue 6,
-- items 5 and 6) on Fashion-MNIST, as a squeeze experiment.
--
--   squeeze sweep experiments/lrd.lua -j 2 --results /tmp/lrd-results            CPU sweep (size=cpu)
--   squeeze sweep experiments/lrd.lua size=full --results results                 GPU sweep (size=full)
--   squeeze run   experiments/lrd.lua model=resnet R=4 q=8 freezing=alternate_epoch  one point
--
-- One point: take the trained dense model of (model, seed) — trained once and
-- cached in HDF5 under <results>/sweeps/<sweep>/dense/, keyed by model, seed
-- and a hash of everything the dense training depends on; the file is
-- written to a per-process temporary name and renamed (core.h5_save), so two
-- workers that train the same dense model at once only waste time — then
-- decompose it at compression R with rank quantum q, fine-tune it under a
-- freezing schedule, and record:
--   dense_acc; test_acc at step 0 (right after decomposition) and after each
--   fine-tune epoch; epochs_to_dense (first epoch within 0.5 percentage
--   points of dense_acc; logged only when reached) and reached_dense (1/0);
--   params / flops, dense and decomposed (Linear / Conv2d multiply-adds x 2,
--   one sample); training samples/s of the dense and the decomposed model
--   (dense_train_sps, train_sps: the fine-tune's loop, batch and optimizer,
--   the decomposed model under its freezing schedule, rounds of the two
--   interleaved so that a change in the machine's load hits both) and
--   their ratio train_speedup; the whole fine-tune's samples/s
--   (ft_train_sps, per epoch ft_epoch_sps) and ft_train_sps / dense_train_sps;
--   inference samples/s at batch 1 / 64 / 256 for both models (interleaved,
--   median of rounds) and the ratios infer_speedup_b<B>; the rank chosen per
--   layer (rank.<layer>, or rank_in.<layer> / rank_out.<layer> for Tucker-2;
--   tag "ranks"); weight-gradient GEMMs per fine-tune step (the frozen
--   factors' skipped dW GEMMs).
--
-- Which layers are decomposed: every Linear / Conv2d except the MLP's
-- classifier (512 -> 10) and the ResNet's stem (1 input channel) and head
-- (64 -> 10), whose factors cannot be cheaper.  Ranks: r0 from R, moved to
-- the q-grid by the engine's quantizer (nearest multiple, ties up).
-- q larger than a layer's dimensions: that layer has no rank on the q-grid
-- and is left dense (decompose's no_grid = "dense", reported as skipped with
-- the reason); a layer whose quantized factors would not be smaller than the
-- dense layer is left dense as well.  Points where no layer at all would be
-- decomposed (every selected layer skipped: for the CPU ResNet, q = 64) are
-- dropped by the sweep's filter, which plans the decomposition from the
-- layer shapes alone (lowrank.plan, no training, no SVD).
--
-- rank_select = "search" replaces plain quantization by the on-device rank
-- optimization (decompose's search option: time the q-grid ranks around the
-- quantized rank on this device, within its parameter budget, keep the
-- largest rank within 5% of the fastest).  On a busy 2-core CPU the timings
-- are noisy, so the CPU sweep keeps "quantize" (the same ranks for every
-- seed and freezing mode); latency_ms.<layer> curves (step = rank) of every
-- q-grid rank around r0 are recorded at seed 0, freezing none, to show the
-- CPU's latency-vs-rank curve.
--
-- Sizes (`size=`): every setting of a size lives in SIZES below and is stored
-- with each run (tag "setting", canonical JSON).
--   cpu  (default) — sized for the whole sweep to run on a 2-core CPU in
--        about 40 minutes with -j 2 (one OpenBLAS thread per worker):
--        MLP 784-512-512-10, dense 4 epochs on all 60k training images,
--        fine-tune 3 epochs on the first 30k, test accuracy on all 10k test
--        images; ResNet widths 16-32-64 (one basic block per stage, no batch
--        norm) on Fashion-MNIST average-pooled 2x2 to 14x14, dense 6 epochs
--        on the first 10k training images, fine-tune 3 epochs on the first
--        2.5k, test accuracy on the first 2k test images.  One point takes
--        about 7 s (MLP) / 13 s (ResNet) with two workers on two cores.
--   full — for the GPU (device = "cuda"; not run on the CPU): MLP
--        784-2048-2048-10 and ResNet widths 64-128-256 x 2 blocks at 28x28,
--        all training images, dense 10 epochs, fine-tune 5, all test images.
local sq = require "squeeze"
local experiment = require "squeeze.experiment"
local sweep = require "squeeze.sweep"
local json = require "squeeze.json"
local store = require "squeeze.store"
local lowrank = require "squeeze.lowrank"
local nn, optim, data = sq.nn, sq.optim, sq.data
local core = sq.core

local SIZES = {
  cpu = {
    device = "cpu",
    mlp = {
      arch = { sizes = { 784, 512, 512, 10 } }, pool = 1,
      dense = { epochs = 4, lr = 2e-3, batch = 128, train_n = 60000, weight_decay = 0.01 },
      ft = { epochs = 3, lr = 3e-4, batch = 128, train_n = 30000, weight_decay = 0.01 },
      test_n = 10000, eval_batch = 1000, skip = { ["layers.3"] = true }, bench_steps = 20,
    },
    resnet = {
      arch = { widths = { 16, 32, 64 }, blocks = 1, image = 14 }, pool = 2,
      dense = { epochs = 6, lr = 3e-3, batch = 64, train_n = 10000, weight_decay = 0.01 },
      ft = { epochs = 3, lr = 5e-4, batch = 64, train_n = 2500, weight_decay = 0.01 },
      test_n = 2000, eval_batch = 250, skip = { stem = true, head = true }, bench_steps = 8,
    },
    bench = { warmup = 2, train_rounds = 2, infer_batches = { 1, 64, 256 }, infer_rounds = 3,
              infer_min_s = 0.05 },
    search = { window = 1, repeats = 3, tol = 0.05 },
    record_latency = { window = 4, repeats = 7 },
  },
  full = {
    device = "cuda",
    mlp = {
      arch = { sizes = { 784, 2048, 2048, 10 } }, pool = 1,
      dense = { epochs = 10, lr = 1e-3, batch = 256, train_n = 60000, weight_decay = 0.01 },
      ft = { epochs = 5, lr = 2e-4, batch = 256, train_n = 60000, weight_decay = 0.01 },
      test_n = 10000, eval_batch = 1000, skip = { ["layers.3"] = true }, bench_steps = 100,
    },
    resnet = {
      arch = { widths = { 64, 128, 256 }, blocks = 2, image = 28 }, pool = 1,
      dense = { epochs = 10, lr = 2e-3, batch = 128, train_n = 60000, weight_decay = 0.01 },
      ft = { epochs = 5, lr = 3e-4, batch = 128, train_n = 60000, weight_decay = 0.01 },
      test_n = 10000, eval_batch = 500, skip = { stem = true, head = true }, bench_steps = 100,
    },
    bench = { warmup = 10, train_rounds = 4, infer_batches = { 1, 64, 256 }, infer_rounds = 5,
              infer_min_s = 0.2 },
    search = { window = 2, repeats = 10, tol = 0.03 },
    record_latency = { window = 8, repeats = 10 },
  },
}

local function setting_of(cfg)
  local s = SIZES[cfg.size]
  if not s then error(("lrd: size must be cpu or full, got '%s'"):format(tostring(cfg.size)), 0) end
  local m = s[cfg.model]
  if not m then error(("lrd: model must be mlp or resnet, got '%s'"):format(tostring(cfg.model)), 0) end
  return s, m
end

local function build(model, m)
  if model == "mlp" then return nn.MLP { sizes = m.arch.sizes } end
  return nn.ResNet { widths = m.arch.widths, blocks = m.arch.blocks, image = m.arch.image }
end

local function lr_opts(cfg, m)
  return { ratio = cfg.R, quantum = cfg.q, no_grid = "dense",
           layers = function(name) return not m.skip[name] end }
end

-- ---- data ------------------------------------------------------------------------

-- First n rows of a split, images average-pooled by `pool` (flattened rows).
local function load(split, n, pool)
  local ds = data.fashion_mnist { split = split }
  local x, y = ds.x:narrow(1, 1, n), ds.y:narrow(1, 1, n)
  if pool > 1 then
    local side = 28 // pool
    x = sq.no_grad(function() return x:reshape(n, 1, 28, 28):avg_pool2d(pool):reshape(n, side * side) end)
  end
  return { x = x:contiguous(), y = y:contiguous(), n = n }
end

local function to_dev(t, device) if device == "cpu" then return t end return t:to(device) end
local function from_dev(t, device) if device == "cpu" then return t end return t:to("cpu") end

local function accuracy(model, ds, bs, device)
  return sq.no_grad(function()
    model:eval()
    local correct = 0
    for xb, yb in data.batches(ds, bs) do
      local pred, truth = from_dev(model:forward(to_dev(xb, device)):argmax(-1), device):tolist(), yb:tolist()
      for i = 1, #pred do
        if pred[i] == truth[i] then correct = correct + 1 end
      end
      collectgarbage("step")
    end
    model:train()
    return correct / ds.n
  end)
end

-- ---- training ----------------------------------------------------------------------

-- Trains for at most max_steps steps (nil: one pass) over shuffled batches of
-- ds; calls on_iter(i) before each step (i counts across calls through it).
-- Returns samples, seconds (training loop only), mean loss.
local function train_pass(model, opt, ds, batch, device, it, max_steps, on_iter)
  local seen, loss_sum, steps = 0, 0, 0
  local t0 = sq.clock()
  for xb, yb in data.batches(ds, batch, { shuffle = true, drop_last = true }) do
    if max_steps and steps >= max_steps then break end
    it.i = it.i + 1
    if on_iter then on_iter(it.i) end
    local loss = nn.cross_entropy(model:forward(to_dev(xb, device)), to_dev(yb, device))
    opt:zero_grad()
    loss:backward()
    opt:step()
    loss_sum = loss_sum + loss:item() * xb:size(1)
    seen, steps = seen + xb:size(1), steps + 1
    -- the collector cannot see the engine memory behind a tensor handle: without
    -- a step per iteration dead activations pile up (GBs over a ResNet epoch)
    collectgarbage("step")
  end
  return seen, sq.clock() - t0, loss_sum / math.max(seen, 1)
end

local function make_opt(model, t, total_steps)
  return optim.AdamW(model:parameters(), {
    lr = t.lr, weight_decay = t.weight_decay,
    schedule = optim.warmup_cosine { base_lr = t.lr, warmup = 0, total = total_steps } })
end

-- The dense model of (model, seed): from the cache or trained and cached.
local function dense_model(cfg, run, s, m, train, test)
  local key = json.encode { model = cfg.model, arch = m.arch, pool = m.pool, dense = m.dense,
                            seed = cfg.seed, dtype = "float32" }
  local dir = run.results .. "/sweeps/" .. run.sweep .. "/dense"
  store.mkdir(dir)
  local path = ("%s/%s-s%d-%s.h5"):format(dir, cfg.model, cfg.seed, json.fnv1a64(key):sub(1, 12))
  local model = build(cfg.model, m)
  local f = io.open(path, "rb")
  if f then
    f:close()
    local sd, meta = core.h5_load(path)
    if meta.key ~= key then error("lrd: dense cache " .. path .. " was written for another config", 0) end
    model:load_state_dict(sd)
    print("lrd: dense model from cache " .. path)
    return model, true, path
  end
  if s.device ~= "cpu" then model:to(s.device) end
  local d = m.dense
  local spe = d.train_n // d.batch
  local opt = make_opt(model, d, d.epochs * spe)
  local it, t0 = { i = 0 }, sq.clock()
  local ds = { x = train.x:narrow(1, 1, d.train_n), y = train.y:narrow(1, 1, d.train_n), n = d.train_n }
  for e = 1, d.epochs do
    local _, _, loss = train_pass(model, opt, ds, d.batch, s.device, it)
    print(("lrd: dense %s epoch %d/%d loss %.4f (%.0fs)"):format(cfg.model, e, d.epochs, loss, sq.clock() - t0))
  end
  local acc = accuracy(model, test, m.eval_batch, s.device)
  local named = {}
  for _, e in ipairs(model:named_parameters()) do named[#named + 1] = { name = e.name, tensor = from_dev(e.param:detach(), s.device) } end
  core.h5_save(path, named, { key = key, test_acc = acc, train_seconds = sq.clock() - t0 })
  return model, false, path
end

-- ---- throughput -------------------------------------------------------------------

-- Training samples/s of the dense and the decomposed model with the
-- fine-tune's loop, batch and optimizer: s.bench.train_rounds rounds of
-- m.bench_steps steps each, dense and decomposed interleaved, after
-- s.bench.warmup steps each; the decomposed model runs under a freezer of
-- the point's mode (alternate_epoch: the frozen group alternates by round).
-- Both models are trained here: pass copies, or restore them afterwards.
local function train_sps(dense, model, cfg, ds, m, s)
  local t, steps, rounds = m.ft, m.bench_steps, s.bench.train_rounds
  local total = s.bench.warmup + rounds * steps
  local od, om = make_opt(dense, t, total), make_opt(model, t, total)
  local fz = lowrank.freezer(model, { mode = cfg.freezing, period = cfg.period })
  local itd, itm = { i = 0 }, { i = 0 }
  local on_iter = function(i) fz:on_iter(i) end
  fz:on_epoch(1)
  train_pass(dense, od, ds, t.batch, s.device, itd, s.bench.warmup)
  train_pass(model, om, ds, t.batch, s.device, itm, s.bench.warmup, on_iter)
  local nd, sd, nm, sm = 0, 0, 0, 0
  for r = 1, rounds do
    fz:on_epoch(r)
    local n, sec = train_pass(dense, od, ds, t.batch, s.device, itd, steps)
    nd, sd = nd + n, sd + sec
    n, sec = train_pass(model, om, ds, t.batch, s.device, itm, steps, on_iter)
    nm, sm = nm + n, sm + sec
  end
  fz:set(nil)
  return nd / sd, nm / sm
end

-- Inference samples/s at each batch size for several models, interleaved
-- (a, b, a, b, ...) so that drift in the machine's speed hits both alike;
-- each round runs a model for at least infer_min_s; median over rounds.
local function infer_sps(models, test, s)
  local b = s.bench
  local out = {}
  for _, bs in ipairs(b.infer_batches) do
    local x = to_dev(test.x:narrow(1, 1, bs):contiguous(), s.device)
    local samples = {}
    for k = 1, #models do
      models[k]:eval()
      samples[k] = {}
      sq.no_grad(function() models[k]:forward(x) end) -- warm-up
    end
    for _ = 1, b.infer_rounds do
      for k, mdl in ipairs(models) do
        local n, t0 = 0, sq.clock()
        repeat
          sq.no_grad(function() return mdl:forward(x):sum():item() end) -- item(): waits for the device
          n = n + 1
        until sq.clock() - t0 >= b.infer_min_s
        samples[k][#samples[k] + 1] = n * bs / (sq.clock() - t0)
        collectgarbage()
      end
    end
    for k = 1, #models do
      table.sort(samples[k])
      out[k] = out[k] or {}
      out[k][bs] = samples[k][(#samples[k] + 1) // 2]
      models[k]:train()
    end
  end
  return out
end

-- ---- one point ---------------------------------------------------------------------

local function run_point(cfg, run)
  local s, m = setting_of(cfg)
  sq.set_num_threads(cfg.threads)
  -- wall seconds per phase (time_s.<phase>), to see where a point's time goes
  local times, tp = {}, sq.clock()
  local function phase(name)
    local now = sq.clock()
    times["time_s." .. name] = now - tp
    tp = now
  end
  run:tag("setting", json.encode { size = cfg.size, device = s.device, model = m, bench = s.bench,
                                   search = cfg.rank_select == "search" and s.search or nil })
  local nmax = math.max(m.dense.train_n, m.ft.train_n)
  local train, test = load("train", nmax, m.pool), load("test", m.test_n, m.pool)
  phase("data")

  local dense, cached, path = dense_model(cfg, run, s, m, train, test)
  run:tag("dense_cache", path)
  run:tag("dense_cached", tostring(cached))
  if s.device ~= "cpu" then dense:to(s.device) end
  -- the same seeded stream from here on whether or not the dense model came from the cache
  sq.manual_seed(1000003 * cfg.seed + 17)
  local dense_acc = accuracy(dense, test, m.eval_batch, s.device)
  local ft = { x = train.x:narrow(1, 1, m.ft.train_n), y = train.y:narrow(1, 1, m.ft.train_n), n = m.ft.train_n }
  local one = to_dev(test.x:narrow(1, 1, 1):contiguous(), s.device)
  local dense_flops = lowrank.flops(dense, one)
  local dense_params = dense:num_params()
  phase("dense")

  -- decompose a copy on the CPU (the SVD runs there), then move it to the
  -- device; the dense model stays for the inference comparison.  Rank
  -- timings (search, latency record) run on the device.
  local model = build(cfg.model, m)
  model:load_state_dict(dense:state_dict())
  local sample = test.x:narrow(1, 1, m.ft.batch):contiguous()
  local opts = lr_opts(cfg, m)
  if cfg.rank_select == "search" then
    opts.search = { sample = sample, device = s.device,
                    window = s.search.window, repeats = s.search.repeats, tol = s.search.tol }
  elseif cfg.rank_select ~= "quantize" then
    error("lrd: rank_select must be quantize or search, got " .. tostring(cfg.rank_select), 0)
  end
  if cfg.seed == 0 and cfg.freezing == "none" and cfg.rank_select == "quantize" then
    -- latency vs rank of every decomposed layer: the q-grid around r0, all timed
    local shapes = lowrank.trace(model, sample)
    for _, info in ipairs(lowrank.plan(model, opts)) do
      if not info.skipped then
        local inp = shapes[info.name].input
        local lo = { quantum = cfg.q, window = s.record_latency.window, repeats = s.record_latency.repeats,
                     max_params = 0, time_over_budget = true, dense = true, device = s.device }
        if info.kind == "tucker2" then
          lo.r0 = math.floor(math.sqrt(info.rank_in * info.rank_out) + 0.5)
          lo.batch, lo.image = inp[1], { inp[3], inp[4] }
        elseif info.kind == "conv1x1" then
          lo.r0, lo.batch, lo.image = info.rank, inp[1], { inp[3], inp[4] }
        else
          lo.r0, lo.batch = info.rank, inp[1]
        end
        local layer
        for _, e in ipairs(model:named_modules()) do if e.name == info.name then layer = e.module end end
        local res = lowrank.search(layer, lo)
        for _, t in ipairs(res.trials) do run:log("latency_ms." .. info.name, 1e3 * t.seconds, t.rank) end
        run:summary { ["dense_latency_ms." .. info.name] = 1e3 * res.dense_seconds }
      end
    end
  end
  phase("latency_record")
  local report
  model, report = lowrank.decompose(model, opts)
  if s.device ~= "cpu" then model:to(s.device) end
  phase("decompose")
  local ranks, n_dec = {}, 0
  for _, info in ipairs(report) do
    local n = info.name
    if info.skipped then
      ranks[#ranks + 1] = n .. "=dense"
      run:tag("skipped." .. n, info.skipped)
    elseif info.kind == "tucker2" then
      n_dec = n_dec + 1
      ranks[#ranks + 1] = ("%s=%d/%d"):format(n, info.rank_in, info.rank_out)
      run:summary { ["rank_in." .. n] = info.rank_in, ["rank_out." .. n] = info.rank_out }
    else
      n_dec = n_dec + 1
      ranks[#ranks + 1] = ("%s=%d"):format(n, info.rank)
      run:summary { ["rank." .. n] = info.rank }
    end
  end
  run:tag("ranks", table.concat(ranks, " "))
  if n_dec == 0 then error("lrd: no layer was decomposed (the sweep's filter should have dropped this point)", 0) end
  local params, flops = model:num_params(), lowrank.flops(model, one)
  run:summary { dense_acc = dense_acc, dense_params = dense_params, params = params,
                param_ratio = params / dense_params, dense_flops = dense_flops, flops = flops,
                flop_ratio = flops / dense_flops, decomposed_layers = n_dec }

  -- fine-tune
  local acc0 = accuracy(model, test, m.eval_batch, s.device)
  run:log("test_acc", acc0, 0)
  phase("eval0")

  -- training throughput, dense (a throwaway copy) against decomposed (its
  -- weights restored afterwards, so the fine-tune starts from the decomposition)
  local scratch = build(cfg.model, m)
  scratch:load_state_dict(dense:state_dict())
  if s.device ~= "cpu" then scratch:to(s.device) end
  local saved = {}
  for k, v in pairs(model:state_dict()) do saved[k] = v:clone() end
  local dense_train, lr_train = train_sps(scratch, model, cfg, ft, m, s)
  model:load_state_dict(saved)
  scratch, saved = nil, nil
  collectgarbage()
  phase("train_bench")
  run:summary { dense_train_sps = dense_train, train_sps = lr_train, train_speedup = lr_train / dense_train }
  print(("lrd: %s R=%g q=%d %s seed %d: dense %.2f%%, decomposed %.2f%% (%s), %d -> %d params"):format(
    cfg.model, cfg.R, cfg.q, cfg.freezing, cfg.seed, 100 * dense_acc, 100 * acc0, table.concat(ranks, " "),
    dense_params, params))
  local target = dense_acc - 0.005
  local reached = acc0 >= target and 0 or nil
  local fz = lowrank.freezer(model, { mode = cfg.freezing, period = cfg.period })
  local spe = m.ft.train_n // m.ft.batch
  local opt = make_opt(model, m.ft, m.ft.epochs * spe)
  local it, n_all, t_all = { i = 0 }, 0, 0
  local gemm0 = sq.stats().weight_grad_gemms
  local on_iter = function(i) fz:on_iter(i) end
  local acc = acc0
  for e = 1, m.ft.epochs do
    fz:on_epoch(e)
    local n, sec, loss = train_pass(model, opt, ft, m.ft.batch, s.device, it, nil, on_iter)
    n_all, t_all = n_all + n, t_all + sec
    acc = accuracy(model, test, m.eval_batch, s.device)
    run:log({ test_acc = acc, train_loss = loss, ft_epoch_sps = n / sec }, e)
    if reached == nil and acc >= target then reached = e end
    print(("lrd:   epoch %d/%d  loss %.4f  test acc %.2f%%  %.0f samples/s (frozen: %s)"):format(
      e, m.ft.epochs, loss, 100 * acc, n / sec, fz:state()))
  end
  local gemms = (sq.stats().weight_grad_gemms - gemm0) / it.i
  phase("finetune")
  local ft_sps = n_all / t_all
  local sum = { final_acc = acc, acc_after_decomp = acc0, acc_drop = dense_acc - acc,
                reached_dense = reached ~= nil, ft_train_sps = ft_sps, ft_train_speedup = ft_sps / dense_train,
                wgrad_gemms_per_step = gemms }
  if reached then sum.epochs_to_dense = reached end

  local inf = infer_sps({ dense, model }, test, s)
  for _, bs in ipairs(s.bench.infer_batches) do
    sum["dense_infer_sps_b" .. bs] = inf[1][bs]
    sum["infer_sps_b" .. bs] = inf[2][bs]
    sum["infer_speedup_b" .. bs] = inf[2][bs] / inf[1][bs]
  end
  phase("infer_bench")
  run:summary(sum)
  run:summary(times)
  print(("lrd:   train x%.2f, inference x%.2f / x%.2f / x%.2f (batch 1/64/256), reached dense: %s"):format(
    lr_train / dense_train, sum.infer_speedup_b1 or 0 / 0, sum.infer_speedup_b64 or 0 / 0,
    sum.infer_speedup_b256 or 0 / 0, tostring(reached or "not reached")))
end

-- Keeps a point when at least one layer would be decomposed (from shapes only).
local function any_decomposed(cfg)
  local _, m = setting_of(cfg)
  local model = build(cfg.model, m)
  for _, info in ipairs(lowrank.plan(model, lr_opts(cfg, m))) do
    if not info.skipped then return true end
  end
  return false
end

return experiment {
  name = "lrd",
  config = { size = "cpu", model = "mlp", R = 2, q = 8, freezing = "none", period = 1,
             rank_select = "quantize", seed = 0, threads = 1 },
  sweep = sweep.grid {
    model = { "mlp", "resnet" },
    R = { 2, 4, 8 },
    q = { 1, 8, 16, 32, 64 },
    freezing = { "none", "first", "second", "alternate_epoch", "alternate_iter" },
    seed = { 0, 1, 2 },
  },
  filter = any_decomposed,
  run = run_point,
}
