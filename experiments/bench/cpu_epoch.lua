-- cpu_epoch.lua — the squeeze side of the CPU epoch benchmark (see cpu_epoch.sh).
-- One epoch = 60 000 Fashion-MNIST samples, shuffled, batch 256, forward +
-- cross-entropy + backward + AdamW; median of `repeat` epochs after one warm-up.
--   squeeze run experiments/bench/cpu_epoch.lua sizes=784,256,256,10 threads=1
local sq = require "squeeze"
local nn, optim, data = sq.nn, sq.optim, sq.data

local args = ... or {}
local sizes = {}
for s in tostring(args.sizes or "784,256,256,10"):gmatch("[^,]+") do sizes[#sizes + 1] = math.tointeger(tonumber(s)) end
local threads = args.threads or 1
local batch = args.batch or 256
local rep = args["repeat"] or 3
sq.set_num_threads(threads)
sq.manual_seed(0)

local train = data.fashion_mnist { split = "train" }
local model = nn.MLP { sizes = sizes }
local opt = optim.AdamW(model:parameters(), { lr = 1e-3, weight_decay = 0.01 })

-- model FLOPs per sample: 2*in*out per linear forward, the same again for dW
-- and for dx -- except the first layer, whose input needs no gradient
local flops = -2 * sizes[1] * sizes[2]
for i = 1, #sizes - 1 do flops = flops + 6 * sizes[i] * sizes[i + 1] end

local times = {}
for ep = 0, rep do
  local t0 = sq.clock()
  for xb, yb in data.batches(train, batch, { shuffle = true, reuse = true }) do
    local loss = nn.cross_entropy(model:forward(xb), yb)
    opt:zero_grad()
    loss:backward()
    opt:step()
  end
  if ep > 0 then times[#times + 1] = sq.clock() - t0 end
end
table.sort(times)
local med = times[(#times + 1) // 2]
print(("squeeze sizes=%s threads=%d epoch_s=%.3f samples_per_s=%.0f gflops=%.1f"):format(
  table.concat(sizes, ","), threads, med, train.n / med, flops * train.n / med / 1e9))
