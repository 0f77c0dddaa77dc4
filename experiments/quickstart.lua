-- quickstart.lua — train an MLP on Fashion-MNIST on the CPU and report test accuracy.
--
--   squeeze run experiments/quickstart.lua [epochs=8 hidden=256 lr=2e-3 batch=128 seed=0]
local sq = require "squeeze"
local nn, optim, data = sq.nn, sq.optim, sq.data

local args = ... or {}
local cfg = { epochs = 8, hidden = 256, lr = 2e-3, batch = 128, seed = 0, weight_decay = 0.01 }
for k, v in pairs(args) do
  if cfg[k] == nil then error(("quickstart: unknown option '%s' (known: epochs hidden lr batch seed weight_decay)"):format(k), 0) end
  cfg[k] = v
end

sq.manual_seed(cfg.seed)
local train = data.fashion_mnist { split = "train" }
local test = data.fashion_mnist { split = "test" }
local model = nn.MLP { sizes = { 784, cfg.hidden, cfg.hidden, 10 } }
local steps_per_epoch = (train.n + cfg.batch - 1) // cfg.batch
local total = cfg.epochs * steps_per_epoch
local opt = optim.AdamW(model:parameters(), { lr = cfg.lr, weight_decay = cfg.weight_decay })
local lr_at = optim.warmup_cosine { base_lr = cfg.lr, warmup = steps_per_epoch // 2, total = total }

local function accuracy(ds)
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

print(("quickstart: MLP 784-%d-%d-10 (%d parameters), %d epochs, batch %d, AdamW lr %g"):format(
  cfg.hidden, cfg.hidden, model:num_params(), cfg.epochs, cfg.batch, cfg.lr))
local step, t0 = 0, sq.clock()
for epoch = 1, cfg.epochs do
  local te, loss_sum, seen = sq.clock(), 0, 0
  for xb, yb in data.batches(train, cfg.batch, { shuffle = true }) do
    step = step + 1
    opt:lr(lr_at(step))
    local loss = nn.cross_entropy(model:forward(xb), yb)
    opt:zero_grad()
    loss:backward()
    opt:step()
    loss_sum = loss_sum + loss:item() * xb:size(1)
    seen = seen + xb:size(1)
  end
  local dt = sq.clock() - te
  print(("epoch %2d/%d  loss %.4f  test acc %.2f%%  %.0f examples/s  %.1fs"):format(
    epoch, cfg.epochs, loss_sum / seen, 100 * accuracy(test), seen / dt, sq.clock() - t0))
end
local acc = accuracy(test)
print(("quickstart: test accuracy %.2f%% after %d epochs in %.1fs"):format(100 * acc, cfg.epochs, sq.clock() - t0))
return acc
