-- lrd_staircase.lua — the squeeze side of the low-rank GPU benchmark
-- (lrd_staircase.sh; PyTorch side: lrd_staircase_torch.py, same shapes).
-- Sections (methods.md §2; issue 6):
--   a  latency staircase of the decomposed linear dim -> r -> dim (rows x dim input,
--      bias on the second factor) over `ranks`, forward and forward+backward, and the
--      dense dim x dim layer;
--   b  forward+backward with the first factor frozen (its dW GEMM never runs) vs none,
--      at `franks`;
--   c  training step (zero_grad + forward + backward + AdamW) of the decomposed layer
--      at r = `crank` (2x parameter compression for 4096) vs dense, also with the first
--      factor frozen;
--   d  3x3 conv cin -> cout (cbatch x cin x chw x chw, stride 1, pad 1) dense vs
--      Tucker-2 at 2x compression (core.tucker2_rank_for, raw and quantum 8), fwd+bwd;
--   e  lowrank.search on this device for the dim x dim layer at ratio 2, q in `qs`
--      (rows-row input), as shipped; and the same candidates through
--      core.lowrank_search with a run that waits for the GPU ("synced").
-- Every timed iteration: the input requires a gradient (as inside a network), the
-- upstream gradient dy is a fixed random tensor (y:backward(dy): no loss kernel),
-- gradients are released between iterations.  CUDA events around forward and
-- backward of each iteration; `warmup` untimed iterations first, then the median of
-- `reps`; iterations are queued back to back (the GPU time of the work, not the
-- host's).  Prints "RESULT side=squeeze sec=... k=v ..." lines.
--
--   squeeze run experiments/bench/lrd_staircase.lua [sections=a,b,c,d,e] [precisions=fp32,tf32]
--       [rows=32768] [dim=4096] [ranks=504,505,...] [franks=512,1024] [crank=1024]
--       [reps=20] [warmup=3] [limit=150] [climit=60] [elimit=120] [qs=1,8,64]
--       [cbatch=32] [cin=256] [cout=256] [chw=56] [device=cuda]
-- limit: seconds for section a (all precisions; the ranks left are skipped and said
-- so); climit: seconds for each of b, c, d; elimit (2 climit) for e.  device=cpu runs the same code on
-- the CPU at whatever sizes are given (a smoke test; host clock instead of events).
local sq = require "squeeze"
local optim = sq.optim
local lowrank = sq.lowrank
local core = sq.core

local args = ... or {}
local function list(s, def)
  local out = {}
  for w in tostring(s or def):gmatch("[^,]+") do out[#out + 1] = tonumber(w) or w end
  return out
end
local function default_ranks()
  local seen, r = {}, {}
  local function add(v) if not seen[v] then seen[v] = true; r[#r + 1] = v end end
  for _, m in ipairs { 512, 1024 } do for d = -8, 8 do add(m + d) end end
  for v = 256, 2048, 64 do add(v) end
  table.sort(r)
  return r
end

local sections = {}
for _, s in ipairs(list(args.sections, "a,b,c,d,e")) do sections[s] = true end
local precisions = list(args.precisions, "fp32,tf32")
local ROWS, DIM = tonumber(args.rows or 32768), tonumber(args.dim or 4096)
local ranks = args.ranks and list(args.ranks) or default_ranks()
local franks = list(args.franks, "512,1024")
local CRANK = tonumber(args.crank or 1024)
local REPS, WARMUP = tonumber(args.reps or 20), tonumber(args.warmup or 3)
local LIMIT, CLIMIT = tonumber(args.limit or 150), tonumber(args.climit or 60)
local ELIMIT = tonumber(args.elimit or 2 * CLIMIT)
local qs = list(args.qs, "1,8,64")
local CB, CIN, COUT, CHW = tonumber(args.cbatch or 32), tonumber(args.cin or 256), tonumber(args.cout or 256),
  tonumber(args.chw or 56)
local DEV = args.device or "cuda"
local GPU = DEV == "cuda"

if GPU and not sq.cuda.available() then error("lrd_staircase.lua: no usable GPU", 0) end
print("# squeeze " .. sq.version .. " on " .. (GPU and sq.cuda.init() or "cpu"))
sq.manual_seed(0)

local function median(t)
  local s = {}
  for i, v in ipairs(t) do s[i] = v end
  table.sort(s)
  local n = #s
  if n == 0 then return 0 / 0 end
  return n % 2 == 1 and s[(n + 1) // 2] or (s[n // 2] + s[n // 2 + 1]) / 2
end

local function sync() if GPU then sq.cuda.synchronize() end end
local function set_prec(p) if GPU then sq.cuda.set_tf32(p == "tf32") end end

-- marks: up to 4 per iteration; events on the GPU (made once, reused), clock on the CPU
local pool = {}
local function marks_for(i)
  if not GPU then return { t = {} } end
  if not pool[i] then pool[i] = { sq.cuda.event(), sq.cuda.event(), sq.cuda.event(), sq.cuda.event() } end
  return { ev = pool[i] }
end
local function mark(m, j)
  if not m then return end
  if m.ev then m.ev[j]:record() else sync(); m.t[j] = sq.clock() * 1e3 end
end
local function span(m, a, b)
  if m.ev then return m.ev[a]:elapsed_ms(m.ev[b]) end
  return m.t[b] - m.t[a]
end

-- iter(m) records marks 1..n; returns the median ms of each span (1->2, 2->3, ..., 1->n)
local function bench(iter, n)
  for _ = 1, WARMUP do iter(nil) end
  sync()
  local ms = {}
  for i = 1, REPS do
    ms[i] = marks_for(i)
    iter(ms[i])
  end
  sync()
  local out = {}
  for j = 1, n - 1 do
    local v = {}
    for i = 1, REPS do v[i] = span(ms[i], j, j + 1) end
    out[j] = median(v)
  end
  local tot = {}
  for i = 1, REPS do tot[i] = span(ms[i], 1, n) end
  out.total = median(tot)
  collectgarbage()
  collectgarbage()
  return out
end

local function result(fields)
  local parts = { "RESULT side=squeeze" }
  for _, kv in ipairs(fields) do
    local v = kv[2]
    if type(v) == "number" and math.type(v) == "float" then v = ("%.4f"):format(v) end
    parts[#parts + 1] = kv[1] .. "=" .. tostring(v)
  end
  print(table.concat(parts, " "))
  io.stdout:flush()
end

local function randn(shape, grad, std)
  return sq.randn(shape, { device = DEV, requires_grad = grad or false, std = std or 1.0 })
end

local function release(...)
  for _, t in ipairs { ... } do t:zero_grad() end
end

local x, dy -- the layer's input (rows, dim) and upstream gradient, shared by a, b, c, e
local function linear_inputs()
  if not x then
    x = randn({ ROWS, DIM }, true)
    dy = randn({ ROWS, DIM }, false)
  end
end

-- fwd+bwd of the decomposed layer: marks 1 | forward | 2 | backward | 3
local function lowrank_iter(B, A, bias)
  return function(m)
    mark(m, 1)
    local y = x:linear(B):linear(A, bias)
    mark(m, 2)
    y:backward(dy)
    mark(m, 3)
    release(x, B, A, bias)
  end
end

local function dense_iter(W, bias)
  return function(m)
    mark(m, 1)
    local y = x:linear(W, bias)
    mark(m, 2)
    y:backward(dy)
    mark(m, 3)
    release(x, W, bias)
  end
end

local function factors(r, frozen_first)
  local B = randn({ r, DIM }, not frozen_first, 0.02)
  local A = randn({ DIM, r }, true, 0.02)
  local bias = randn({ DIM }, true, 0.02)
  return B, A, bias
end

-- ---- a: staircase ---------------------------------------------------------------------
if sections.a then
  linear_inputs()
  local t0 = sq.clock()
  for _, p in ipairs(precisions) do
    set_prec(p)
    do
      local W, bias = randn({ DIM, DIM }, true, 0.02), randn({ DIM }, true, 0.02)
      local t = bench(dense_iter(W, bias), 3)
      result { { "sec", "a" }, { "prec", p }, { "kind", "dense" }, { "rows", ROWS }, { "dim", DIM },
               { "fwd_ms", t[1] }, { "fb_ms", t.total } }
    end
    for i, r in ipairs(ranks) do
      if sq.clock() - t0 > LIMIT then
        print(("# section a: %s time limit (%d s) reached; ranks from %d on skipped"):format(p, LIMIT, r))
        break
      end
      local B, A, bias = factors(r)
      local t = bench(lowrank_iter(B, A, bias), 3)
      result { { "sec", "a" }, { "prec", p }, { "kind", "lowrank" }, { "r", r }, { "fwd_ms", t[1] },
               { "fb_ms", t.total } }
    end
  end
end

-- ---- b: freezing ------------------------------------------------------------------------
if sections.b then
  linear_inputs()
  local t0 = sq.clock()
  for _, p in ipairs(precisions) do
    set_prec(p)
    for _, r in ipairs(franks) do
      for _, fz in ipairs { "none", "first" } do
        if sq.clock() - t0 > CLIMIT then print("# section b: time limit reached"); goto b_done end
        local B, A, bias = factors(r, fz == "first")
        local t = bench(lowrank_iter(B, A, bias), 3)
        result { { "sec", "b" }, { "prec", p }, { "r", r }, { "freeze", fz }, { "fwd_ms", t[1] },
                 { "bwd_ms", t[2] }, { "fb_ms", t.total } }
      end
    end
  end
  ::b_done::
end

-- ---- c: training step vs dense -------------------------------------------------------------
if sections.c then
  linear_inputs()
  local t0 = sq.clock()
  for _, p in ipairs(precisions) do
    set_prec(p)
    for _, kind in ipairs { "dense", "lowrank", "lowrank_frozen_first" } do
      if sq.clock() - t0 > CLIMIT then print("# section c: time limit reached"); goto c_done end
      local params, fwd
      if kind == "dense" then
        local W, bias = randn({ DIM, DIM }, true, 0.02), randn({ DIM }, true, 0.02)
        params = { W, bias }
        fwd = function() return x:linear(W, bias) end
      else
        local B, A, bias = factors(CRANK, kind == "lowrank_frozen_first")
        params = { B, A, bias }
        fwd = function() return x:linear(B):linear(A, bias) end
      end
      local opt = optim.AdamW(params, { lr = 1e-4, weight_decay = 0.01 })
      local t = bench(function(m)
        mark(m, 1)
        opt:zero_grad()
        x:zero_grad()
        local y = fwd()
        mark(m, 2)
        y:backward(dy)
        mark(m, 3)
        opt:step()
        mark(m, 4)
      end, 4)
      local np = 0
      for _, q in ipairs(params) do np = np + q:numel() end
      result { { "sec", "c" }, { "prec", p }, { "kind", kind }, { "r", kind == "dense" and 0 or CRANK },
               { "params", np }, { "fwd_ms", t[1] }, { "bwd_ms", t[2] }, { "opt_ms", t[3] },
               { "step_ms", t.total } }
    end
  end
  ::c_done::
end

-- ---- d: 3x3 conv, dense vs Tucker-2 ------------------------------------------------------------
if sections.d then
  local t0 = sq.clock()
  local xc = randn({ CB, CIN, CHW, CHW }, true)
  local dyc = randn({ CB, COUT, CHW, CHW }, false)
  local variants = { { kind = "dense" } }
  for _, q in ipairs { 1, 8 } do
    local ro, ri = core.tucker2_rank_for(COUT, CIN, 3, 3, { ratio = 2, quantum = q })
    variants[#variants + 1] = { kind = "tucker2", ro = ro, ri = ri, q = q }
  end
  for _, p in ipairs(precisions) do
    set_prec(p)
    for _, v in ipairs(variants) do
      if sq.clock() - t0 > CLIMIT then print("# section d: time limit reached"); goto d_done end
      local iter, np
      if v.kind == "dense" then
        local w, b = randn({ COUT, CIN, 3, 3 }, true, 0.02), randn({ COUT }, true, 0.02)
        np = w:numel()
        iter = function(m)
          mark(m, 1)
          local y = xc:conv2d(w, b, { stride = 1, pad = 1 })
          mark(m, 2)
          y:backward(dyc)
          mark(m, 3)
          release(xc, w, b)
        end
      else
        local f = randn({ v.ri, CIN, 1, 1 }, true, 0.02)
        local g = randn({ v.ro, v.ri, 3, 3 }, true, 0.02)
        local l = randn({ COUT, v.ro, 1, 1 }, true, 0.02)
        local b = randn({ COUT }, true, 0.02)
        np = f:numel() + g:numel() + l:numel()
        iter = function(m)
          mark(m, 1)
          local y = xc:conv2d(f):conv2d(g, nil, { stride = 1, pad = 1 }):conv2d(l, b)
          mark(m, 2)
          y:backward(dyc)
          mark(m, 3)
          release(xc, f, g, l, b)
        end
      end
      local t = bench(iter, 3)
      result { { "sec", "d" }, { "prec", p }, { "kind", v.kind }, { "q", v.q or 0 }, { "r_in", v.ri or CIN },
               { "r_out", v.ro or COUT }, { "params", np }, { "fwd_ms", t[1] }, { "fb_ms", t.total } }
    end
  end
  ::d_done::
  xc, dyc = nil, nil
  collectgarbage()
  collectgarbage()
end

-- ---- e: rank search on the device ---------------------------------------------------------------
if sections.e then
  linear_inputs()
  local t0 = sq.clock()
  local layer = sq.nn.Linear(DIM, DIM)
  local eprec = {}
  for i = #precisions, 1, -1 do eprec[#eprec + 1] = precisions[i] end -- tf32 first: its staircase is the steep one
  for _, p in ipairs(eprec) do
    set_prec(p)
    for _, q in ipairs(qs) do
      if sq.clock() - t0 > ELIMIT then print("# section e: time limit reached"); goto e_done end
      -- as shipped: lowrank.search times each candidate with the host clock
      local res = lowrank.search(layer, { ratio = 2, quantum = q, window = 2, batch = ROWS, repeats = 5,
                                          warmup = 1, dense = false, device = DEV })
      sync()
      local tr = {}
      local tmin = math.huge
      for _, t in ipairs(res.trials) do
        if t.seconds then
          tr[#tr + 1] = ("%d:%.3f"):format(t.rank, t.seconds * 1e3)
          if t.within_budget and t.seconds < tmin then tmin = t.seconds end
        end
      end
      local tolpick = res.best -- decompose's rule: the largest rank within 5% of the fastest
      for _, t in ipairs(res.trials) do
        if t.within_budget and t.seconds and t.seconds <= 1.05 * tmin and t.rank > tolpick then tolpick = t.rank end
      end
      result { { "sec", "e" }, { "prec", p }, { "q", q }, { "method", "search" }, { "r0", res.r0 },
               { "best", res.best }, { "tol_pick", tolpick }, { "trials_ms", table.concat(tr, ",") } }
      -- the same candidates, each run waited for (the time of the GPU work)
      local best, trials = core.lowrank_search(DIM, DIM, { ratio = 2, quantum = q, window = 2,
        max_params = DIM * DIM // 2, repeats = 5, warmup = 1 }, function(r)
        local B, A, bias = factors(r)
        local run = lowrank_iter(B, A, bias)
        return function() run(nil); sync() end
      end)
      tr = {}
      tmin = math.huge
      for _, t in ipairs(trials) do
        if t.seconds then
          tr[#tr + 1] = ("%d:%.3f"):format(t.rank, t.seconds * 1e3)
          if t.within_budget and t.seconds < tmin then tmin = t.seconds end
        end
      end
      tolpick = best
      for _, t in ipairs(trials) do
        if t.within_budget and t.seconds and t.seconds <= 1.05 * tmin and t.rank > tolpick then tolpick = t.rank end
      end
      result { { "sec", "e" }, { "prec", p }, { "q", q }, { "method", "synced" }, { "r0", res.r0 },
               { "best", best }, { "tol_pick", tolpick }, { "trials_ms", table.concat(tr, ",") } }
    end
  end
  ::e_done::
end
print("# done")
