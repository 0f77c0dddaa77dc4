-- quickstart.lua — an MLP on Fashion-MNIST, on the CPU, as a squeeze experiment.
--
--   squeeze run   experiments/quickstart.lua [epochs=8 hidden=256 lr=2e-3 ...]   one run (the base config)
--   squeeze sweep experiments/quickstart.lua -j 2                                 the sweep below
--   squeeze table --sweep quickstart --rows hidden --metric test_acc
--
-- Every run is recorded in results/squeeze.db (params, per-epoch metrics,
-- provenance) with its curves in an HDF5 file.
local sq = require "squeeze"
local experiment = require "squeeze.experiment"
local sweep = require "squeeze.sweep"
local nn, optim, data = sq.nn, sq.optim, sq.data

local function accuracy(model, ds)
  return sq.no_grad(function()
    model:eval()
    local correct = 0
    for xb, yb in data.batches(ds, 1000) do
      local pred, truth = model:forward(xb):argmax(-1):tolist(), yb:tolist()
      for i = 1, #pred do
        if pred[i] == truth[i] then correct = correct + 1 end
      end
    end
    model:train()
    return correct / ds.n
  end)
end

local function train(cfg, run)
  sq.set_num_threads(cfg.threads)
  local tr = data.fashion_mnist { split = "train" }
  local te = data.fashion_mnist { split = "test" }
  local model = nn.MLP { sizes = { 784, cfg.hidden, cfg.hidden, 10 } }
  local steps_per_epoch = (tr.n + cfg.batch - 1) // cfg.batch
  local opt = optim.AdamW(model:parameters(), { lr = cfg.lr, weight_decay = cfg.weight_decay })
  local lr_at = optim.warmup_cosine { base_lr = cfg.lr, warmup = steps_per_epoch // 2,
                                      total = cfg.epochs * steps_per_epoch }
  print(("quickstart: MLP 784-%d-%d-10 (%d parameters), %d epochs, batch %d, AdamW lr %g, seed %d"):format(
    cfg.hidden, cfg.hidden, model:num_params(), cfg.epochs, cfg.batch, cfg.lr, cfg.seed))
  local step, t0, acc = 0, sq.clock(), 0
  for epoch = 1, cfg.epochs do
    local te0, loss_sum, seen = sq.clock(), 0, 0
    for xb, yb in data.batches(tr, cfg.batch, { shuffle = true }) do
      step = step + 1
      opt:lr(lr_at(step))
      local loss = nn.cross_entropy(model:forward(xb), yb)
      opt:zero_grad()
      loss:backward()
      opt:step()
      loss_sum = loss_sum + loss:item() * xb:size(1)
      seen = seen + xb:size(1)
    end
    local rate = seen / (sq.clock() - te0)
    acc = accuracy(model, te)
    run:log { train_loss = loss_sum / seen, test_acc = acc, examples_per_s = rate }
    print(("epoch %2d/%d  loss %.4f  test acc %.2f%%  %.0f examples/s  %.1fs"):format(
      epoch, cfg.epochs, loss_sum / seen, 100 * acc, rate, sq.clock() - t0))
  end
  local mem = sq.memory().cpu.peak
  run:summary { test_acc = acc, train_seconds = sq.clock() - t0, peak_bytes = mem.total,
                peak_saved_bytes = mem.saved, params = model:num_params() }
  print(("quickstart: test accuracy %.2f%% after %d epoch(s) in %.1fs"):format(100 * acc, cfg.epochs, sq.clock() - t0))
end

return experiment {
  name = "quickstart",
  config = { epochs = 8, hidden = 256, lr = 2e-3, batch = 128, weight_decay = 0.01, seed = 0, threads = 1 },
  -- the README's main job: two widths x two seeds, about 16 s on two cores
  sweep = sweep.grid { hidden = { 128, 256 }, seed = { 0, 1 } },
  run = train,
}
