-- actprune.lua — structured activation pruning of the backward pass
-- (methods.md §1, Barley & Fröning) on a ResMLP trained on Fashion-MNIST:
-- accuracy, saved-activation bytes, peak memory, step time and dW error
-- against block size, keep ratio and selection criterion.
--
--   squeeze sweep experiments/actprune.lua -j 2 --results /tmp/actprune-results      the CPU sweep (123 points)
--   squeeze run   experiments/actprune.lua block=16 keep=0.5                         one point (the base config)
--   squeeze sweep experiments/actprune.lua size=full -j 1 --name actprune_full       the GPU-size sweep (10 epochs;
--                                     a 1-epoch subset ran on an H100: results/reports/actprune_gpu.md)
--
-- Points: criterion {l2, random, topk_unstructured} x block {8,16,32,64} x
-- keep {1, .75, .5, .3, .1} x seed {0,1,2}, without the redundant ones:
--   * keep = 1 keeps every block whatever the criterion ranks first, so the
--     three criteria train the same model; keep 1 runs with l2 only (one per
--     block: it measures the BSR's index overhead at no pruning);
--   * topk_unstructured keeps single entries (CSR, block 1) and ignores the
--     block size, so it runs at block 8 only;
-- plus a dense baseline (criterion "dense": nn.Linear, no pruning; block 0).
-- Per seed: l2 4 blocks x 5 keeps + random 4 x 4 + topk_unstructured 4 keeps
-- = 40 pruned points, + 1 dense = 41; x 3 seeds = 123 points.
--
-- The size presets (SIZES below) fix the model and the training setting
-- (epochs = 0 takes the preset's number of epochs, epochs = N overrides it);
-- each run records them as tags and summary metrics, and the submission
-- keeps a copy of this script in the results database.
--   small (CPU default): ResMLP patch 7 (16 tokens), dim 64, depth 2,
--     expansion 4 (hidden 256); first 10 000 training images, full 10 000
--     test images (pixels standardised); 2 epochs, batch 64, AdamW lr 3e-3,
--     wd 0.05, warm-up (half an epoch) + cosine; one thread.
--   full (for the GPU; experiments/bench/actprune_gpu.sh): the ResMLP-S12 block shapes — patch 2
--     on 28x28 gives 196 tokens like S12 at 224/16, dim 384, depth 12,
--     expansion 4 (token_mix 196x196, fc1 384->1536, fc2 1536->384); the
--     full 60 000 training images, 10 epochs, batch 128, device cuda.
--
-- Measured per run (names as stored):
--   test_acc (per epoch and final), train_loss (per epoch)
--   memory, on a fixed probe batch after training, the same step measured
--   with pruning on and off (the same layers running core.linear) in this
--   process, garbage collected at module boundaries (actprune.measure_step):
--     saved_bytes / dense_saved_bytes      allocator SAVED bytes when backward starts
--                                          (every saved activation)
--     peak_saved_bytes / dense_peak_saved_bytes   the SAVED high-water mark
--     peak_bytes / dense_peak_bytes        peak total of the step, without the dataset
--                                          (params, grads, AdamW state, activations, temporaries)
--     saved_reduction, peak_saved_reduction, mem_reduction   1 - pruned/dense of the above
--     counted_saved_bytes / counted_dense_bytes   from the layer stats: BSR bytes of the
--                                          pruned inputs vs their dense size (one step)
--   per epoch: epoch_peak_saved_bytes (SAVED high-water mark of the epoch's training steps)
--   t_forward_ms (without compress), t_compress_ms (stats), t_backward_ms, t_optim_ms,
--     t_step_ms: per-step means of each epoch; on the GPU compress is timed on
--     one step in ten (timing drains the stream) and the other phases on the
--     remaining steps, so t_step_ms is the undisturbed step
--   kept_fraction (kept / total blocks), kept_value_fraction (kept values / dense values),
--     dw_flops_fraction (BSR dW FLOPs / dense dW FLOPs)
--   dw_err.<layer> = ‖dW − dŴ‖/‖dW‖ on a fixed batch at the end (core.actprune_dw_error),
--     dw_err.token_mix / .fc1 / .fc2 (mean over blocks), dw_err.mean
local sq = require "squeeze"
local experiment = require "squeeze.experiment"
local sweep = require "squeeze.sweep"
local actprune = require "squeeze.actprune"
local nn, optim, data = sq.nn, sq.optim, sq.data

local SIZES = {
  small = { patch = 7, dim = 64, depth = 2, expansion = 4, train_n = 10000, test_n = 10000, epochs = 2,
            batch = 64, lr = 3e-3, weight_decay = 0.05, device = "cpu", probe_batch = 64, dw_batch = 256,
            eval_batch = 1000 },
  full = { patch = 2, dim = 384, depth = 12, expansion = 4, train_n = 60000, test_n = 10000, epochs = 10,
           batch = 128, lr = 1e-3, weight_decay = 0.05, device = "cuda", probe_batch = 128, dw_batch = 128,
           eval_batch = 250 },
}

-- eval_batch: test images per forward; on the GPU small batches and a full
-- collection before each (a no_grad pass has no backward to trigger the
-- device-pressure collections, and dead temporaries of full-size batches of
-- 1000 ran an H100 out of memory: experiments/bench/actprune_gpu.sh).
local function accuracy(model, ds, dev, eval_batch)
  return sq.no_grad(function()
    model:eval()
    local correct = 0
    for xb, yb in data.batches(ds, eval_batch, { device = dev }) do
      if dev ~= "cpu" then collectgarbage() end
      local pred, truth = model:forward(xb):argmax(-1):cpu():tolist(), yb:cpu():tolist()
      for i = 1, #pred do
        if pred[i] == truth[i] then correct = correct + 1 end
      end
    end
    model:train()
    return correct / ds.n
  end)
end

local function subset(ds, n)
  if n >= ds.n then return ds end
  return { x = ds.x:narrow(1, 1, n), y = ds.y:narrow(1, 1, n), n = n, split = ds.split }
end

local function run(cfg, run)
  local S = {}
  for k, v in pairs(SIZES[cfg.size] or error(("actprune: size must be \"small\" or \"full\", got %q")
    :format(cfg.size))) do S[k] = v end
  if cfg.epochs > 0 then S.epochs = cfg.epochs end
  sq.set_num_threads(cfg.threads)
  local dev = S.device
  -- pixels standardised with the training set's mean and std
  local tr = subset(data.fashion_mnist { split = "train", mean = 0.2860, std = 0.3530 }, S.train_n)
  local te = subset(data.fashion_mnist { split = "test", mean = 0.2860, std = 0.3530 }, S.test_n)
  -- fixed batches for the probes: the first test images (the same for every run), copied out
  -- of the dataset like a training batch — a narrowed view would make cross_entropy's saved
  -- targets hold (and SAVED count) the storage of all 10 000 labels
  local function rows(t, n) return t:narrow(1, 1, n):clone():to(dev) end
  local probe_x, probe_y = rows(te.x, S.probe_batch), rows(te.y, S.probe_batch)
  local dw_x, dw_y = rows(te.x, S.dw_batch), rows(te.y, S.dw_batch)
  collectgarbage()
  collectgarbage()
  local function mem() return sq.memory()[dev] end
  local base_bytes = mem().current.total -- the dataset (on the GPU: the probe batches): left out of the peaks

  local model = nn.ResMLP { image = 28, patch = S.patch, dim = S.dim, depth = S.depth, expansion = S.expansion }
  model:to(dev)
  local pruned = cfg.criterion ~= "dense"
  local report = {}
  if pruned then
    local layers = {}
    for name in cfg.layers:gmatch("[^,%s]+") do layers[#layers + 1] = name end
    local _
    _, report = actprune.apply(model, { block = cfg.block, keep = cfg.keep, criterion = cfg.criterion,
                                        scope = cfg.scope, layers = layers })
  end
  local tokens = (28 // S.patch) ^ 2
  for k, v in pairs(S) do run:tag("size." .. k, v) end
  run:tag("pruned_layers", (function()
    local t = {}
    for i, r in ipairs(report) do t[i] = r.name .. "(" .. r.shape .. ")" end
    return table.concat(t, " ")
  end)())
  print(("actprune: ResMLP patch %d (%d tokens), dim %d, depth %d, expansion %d: %d parameters; %s; "
         .. "%d train / %d test images, %d epoch(s), batch %d, seed %d, %s"):format(S.patch, tokens, S.dim, S.depth,
    S.expansion, model:num_params(), pruned and ("%d layers pruned: block %d, keep %g, %s, scope %s"):format(
      #report, cfg.block, cfg.keep, cfg.criterion, cfg.scope) or "dense", tr.n, te.n, S.epochs, S.batch,
    cfg.seed, dev))

  local steps_per_epoch = (tr.n + S.batch - 1) // S.batch
  local opt = optim.AdamW(model:parameters(), { lr = S.lr, weight_decay = S.weight_decay })
  local lr_at = optim.warmup_cosine { base_lr = S.lr, warmup = steps_per_epoch // 2,
                                      total = S.epochs * steps_per_epoch }
  -- on the GPU each reading waits for the device: phases are GPU times, not launch times.
  -- Timing the compress step there drains the stream around every
  -- prune-and-pack, so it is timed on one step in TIME_EVERY only and the
  -- phase times come from the other steps: forward = their forward wall time
  -- less the sampled mean compress time (on the CPU every step is timed).
  local gpu = dev ~= "cpu"
  local TIME_EVERY = 10
  local clock = gpu and function() sq.cuda.synchronize(); return sq.clock() end or sq.clock
  local step, acc, t_train = 0, 0, clock()
  for epoch = 1, S.epochs do
    local tf, tc, tb, to, nsteps, loss_sum, seen = 0, 0, 0, 0, 0, 0, 0
    local ntimed, nplain = 0, 0 -- steps that timed compress; steps that gave the phase times
    collectgarbage()
    sq.reset_peak()
    for xb, yb in data.batches(tr, S.batch, { shuffle = true, device = dev }) do
      step = step + 1
      opt:lr(lr_at(step))
      local timed = pruned and (not gpu or step % TIME_EVERY == 1)
      if pruned and gpu then actprune.set_time_compress(model, timed) end
      local c0 = pruned and actprune.stats(model).compress_s or 0
      local t0 = clock()
      local loss = nn.cross_entropy(model:forward(xb), yb)
      local t1 = clock()
      opt:zero_grad()
      loss:backward()
      local t2 = clock()
      opt:step()
      local t3 = clock()
      local c = (pruned and actprune.stats(model).compress_s or 0) - c0
      if timed then tc, ntimed = tc + c, ntimed + 1 end
      if not gpu then
        tf, tb, to, nplain = tf + (t1 - t0 - c), tb + (t2 - t1), to + (t3 - t2), nplain + 1
      elseif not timed then
        tf, tb, to, nplain = tf + (t1 - t0), tb + (t2 - t1), to + (t3 - t2), nplain + 1
      end
      nsteps = nsteps + 1
      loss_sum = loss_sum + loss:item() * xb:size(1)
      seen = seen + xb:size(1)
      loss = nil
      collectgarbage() -- dropped activations go now, not when Lua's collector gets to them (same for all points)
    end
    local epoch_peak_saved = mem().peak.saved
    acc = accuracy(model, te, dev, S.eval_batch)
    -- per-step means: compress over the timed steps, the rest over the plain ones
    tc = ntimed > 0 and tc / ntimed or 0
    tf, tb, to = tf / math.max(nplain, 1), tb / math.max(nplain, 1), to / math.max(nplain, 1)
    if gpu then tf = tf - tc end
    local ms = 1000
    run:log({ test_acc = acc, train_loss = loss_sum / seen, epoch_peak_saved_bytes = epoch_peak_saved,
              t_forward_ms = tf * ms, t_compress_ms = tc * ms, t_backward_ms = tb * ms, t_optim_ms = to * ms,
              t_step_ms = (tf + tc + tb + to) * ms }, epoch)
    print(("epoch %d/%d  loss %.4f  test acc %.2f%%  step %.1f ms (forward %.1f, compress %.1f, backward %.1f, "
           .. "optim %.1f)  %.0fs"):format(epoch, S.epochs, loss_sum / seen, 100 * acc, (tf + tc + tb + to) * ms,
      tf * ms, tc * ms, tb * ms, to * ms, clock() - t_train))
  end
  local train_s = clock() - t_train
  if pruned then actprune.set_time_compress(model, true) end

  -- memory: one step on the probe batch, pruning on, then off
  local function probe()
    if pruned then actprune.reset_stats(model) end
    local saved
    local peak = actprune.measure_step(model, function()
      opt:zero_grad()
      local loss = nn.cross_entropy(model:forward(probe_x), probe_y)
      saved = mem().current.saved
      loss:backward()
    end, dev)
    opt:zero_grad()
    return { saved = saved, peak_saved = peak.saved, peak = peak.total - base_bytes },
           pruned and actprune.stats(model) or nil
  end
  local p, st = probe()
  local d = p
  if pruned then
    actprune.set_enabled(model, false)
    d = probe()
    actprune.set_enabled(model, true)
  end
  local function red(a, b) return b > 0 and 1 - a / b or 0 end
  local final = {
    test_acc = acc, train_seconds = train_s, params = model:num_params(), tokens = tokens,
    dim = S.dim, depth = S.depth, train_images = tr.n, epochs = S.epochs, batch = S.batch,
    saved_bytes = p.saved, dense_saved_bytes = d.saved, saved_reduction = red(p.saved, d.saved),
    peak_saved_bytes = p.peak_saved, dense_peak_saved_bytes = d.peak_saved,
    peak_saved_reduction = red(p.peak_saved, d.peak_saved),
    peak_bytes = p.peak, dense_peak_bytes = d.peak, mem_reduction = red(p.peak, d.peak),
    pruned_layers = #report,
  }
  if pruned then
    final.counted_saved_bytes, final.counted_dense_bytes = st.saved_bytes, st.dense_bytes
    final.counted_reduction = red(st.saved_bytes, st.dense_bytes)
    final.kept_fraction = st.kept_fraction
    final.kept_value_fraction = st.value_bytes / st.dense_bytes
    final.dw_flops_fraction = st.dw_flops / st.dense_dw_flops
    -- dW error of every pruned layer on a fixed batch, at the trained weights
    local errs = actprune.dw_errors(model, function()
      opt:zero_grad()
      nn.cross_entropy(model:forward(dw_x), dw_y):backward()
    end)
    opt:zero_grad()
    local by_kind, n_kind, sum, n = {}, {}, 0, 0
    for name, e in pairs(errs) do
      final["dw_err." .. name] = e
      local kind = name:match("([%w_]+)$")
      by_kind[kind], n_kind[kind] = (by_kind[kind] or 0) + e, (n_kind[kind] or 0) + 1
      sum, n = sum + e, n + 1
    end
    for kind, s in pairs(by_kind) do final["dw_err." .. kind] = s / n_kind[kind] end
    final["dw_err.mean"] = sum / n
  end
  run:summary(final)
  print(("actprune: test acc %.2f%%; saved %.0f kB vs dense %.0f kB (-%.1f%%); peak %.0f kB vs %.0f kB (-%.1f%%)%s; %.0fs")
    :format(100 * acc, p.saved / 1024, d.saved / 1024, 100 * final.saved_reduction, p.peak / 1024, d.peak / 1024,
      100 * final.mem_reduction, pruned and (", dW err mean %.3f"):format(final["dw_err.mean"]) or "", train_s))
end

local KEEPS = { 1, 0.75, 0.5, 0.3, 0.1 }

return experiment {
  name = "actprune",
  config = { size = "small", block = 32, keep = 0.5, criterion = "l2", scope = "tensor",
             layers = "token_mix,fc1,fc2", epochs = 0, seed = 0, threads = 1 },
  sweep = sweep.concat {
    sweep.grid { criterion = { "l2", "random", "topk_unstructured" }, block = { 8, 16, 32, 64 }, keep = KEEPS,
                 seed = { 0, 1, 2 } },
    sweep.grid { criterion = { "dense" }, block = { 0 }, keep = { 1 }, seed = { 0, 1, 2 } },
  },
  -- false, reason: the harness names the reason when it drops every point
  -- (e.g. a `squeeze run` of a combination this experiment leaves out)
  filter = function(cfg)
    if cfg.criterion == "dense" then return true end
    if cfg.keep == 1 and cfg.criterion ~= "l2" then
      return false, "keep 1 keeps every block whatever the criterion, so it runs with criterion=l2 only"
    end
    if cfg.criterion == "topk_unstructured" and cfg.block ~= 8 then
      return false, "topk_unstructured keeps single entries (the block only rounds its entry budget), " ..
        "so it runs at block=8 only"
    end
    return true
  end,
  run = run,
}
