-- squeeze.lowrank — low-rank decomposition of a model's layers, sequential
-- freezing of the factors, and an on-device rank search (methods.md §2).
--
--   local lowrank = require "squeeze.lowrank"
--   local model, report = lowrank.decompose(model, {ratio = 2, quantum = 8})
--   local fz = lowrank.freezer(model, {mode = "alternate_epoch", period = 1})
--   for epoch = 1, E do fz:on_epoch(epoch) ... end
--   local res = lowrank.search(layer, {ratio = 2, quantum = 16, window = 2})
--
-- Decomposed modules:
--   LowRankLinear  nn.Linear (M,K)    -> first  Linear K->r (no bias), second Linear r->M (bias)
--   LowRankConv    nn.Conv2d 1x1      -> first  Conv 1x1 C->r (stride, pad), second Conv 1x1 r->O (bias)
--   Tucker2Conv    nn.Conv2d kxk      -> first  Conv 1x1 C->r_in, core Conv kxk r_in->r_out
--                                        (stride, pad), last Conv 1x1 r_out->O (bias)
-- The factors are ordinary nn.Linear / nn.Conv2d children, so the model's
-- parameter list stays valid ("layers.1.first.weight", ...).  The original
-- bias tensor moves to the output-side factor.  Build optimizers after
-- decomposing: an optimizer made before holds the replaced weights.
--
-- Freezing groups (which parameters "first" and "second" name):
--   linear and 1x1: first = {first.weight}; second = {second.weight, second.bias}
--   Tucker-2 (open; option conv_groups):
--     "ends_core" (default): first = the two 1x1 factors (and the bias), second = the core;
--       the factor matrices and the core alternate, as in alternating Tucker fits,
--       and the two groups' weight-gradient work is of the same order;
--     "in_out": first = {first, core}, second = {last (and the bias)}.
-- A frozen parameter has requires_grad false: autograd records no edge for
-- it, so its weight-gradient GEMM never runs, and the optimizer skips it
-- (its state stays as it was).
local core = require "squeeze.core"
local nn = require "squeeze.nn"

local lowrank = {}

local function opts_of(o, level)
  if o == nil then return {} end
  if type(o) ~= "table" then error("options table expected, got " .. type(o), (level or 2) + 1) end
  return o
end

local function shape_str(t) return table.concat(t:shape(), "x") end

-- ---- factor modules -------------------------------------------------------------

-- nn.Linear / nn.Conv2d built around given tensors (no random init).
local function linear_from(w, b)
  local m = nn.Module.new(nn.Linear)
  local s = w:shape()
  m.in_features, m.out_features = s[2], s[1]
  m:add_param("weight", w)
  if b then m:add_param("bias", b) end
  return m
end

local function conv_from(w, b, stride, pad)
  local m = nn.Module.new(nn.Conv2d)
  local s = w:shape()
  m.out_channels, m.in_channels, m.k = s[1], s[2], s[3]
  m.stride, m.pad = stride or 1, pad or 0
  m:add_param("weight", w)
  if b then m:add_param("bias", b) end
  return m
end

local function params_of(...)
  local out = {}
  for _, m in ipairs { ... } do
    for _, p in ipairs(m:parameters()) do out[#out + 1] = p end
  end
  return out
end

local LowRankLinear = nn.class("LowRankLinear")
lowrank.LowRankLinear = LowRankLinear
LowRankLinear._lowrank = true

-- LowRankLinear(A (M,r), B (r,K) [, bias (M)])
function LowRankLinear.new(A, B, bias)
  local self = nn.Module.new(LowRankLinear)
  self.rank = B:size(1)
  self:add_module("first", linear_from(B, nil))
  self:add_module("second", linear_from(A, bias))
  return self
end

function LowRankLinear:forward(x) return self.second:forward(self.first:forward(x)) end

function LowRankLinear:factor_groups()
  return params_of(self.first), params_of(self.second)
end

function LowRankLinear:extra_repr()
  return ("%d -> %d, rank %d"):format(self.first.in_features, self.second.out_features, self.rank)
end

local LowRankConv = nn.class("LowRankConv")
lowrank.LowRankConv = LowRankConv
LowRankConv._lowrank = true

-- LowRankConv(A (O,r), B (r,C), bias, stride, pad): 1x1 conv as two 1x1 convs
function LowRankConv.new(A, B, bias, stride, pad)
  local self = nn.Module.new(LowRankConv)
  local sa, sb = A:shape(), B:shape()
  self.rank = sb[1]
  self:add_module("first", conv_from(B:reshape(sb[1], sb[2], 1, 1), nil, stride, pad))
  self:add_module("second", conv_from(A:reshape(sa[1], sa[2], 1, 1), bias, 1, 0))
  return self
end

function LowRankConv:forward(x) return self.second:forward(self.first:forward(x)) end

function LowRankConv:factor_groups()
  return params_of(self.first), params_of(self.second)
end

function LowRankConv:extra_repr()
  return ("%d -> %d, 1x1, rank %d"):format(self.first.in_channels, self.second.out_channels, self.rank)
end

local Tucker2Conv = nn.class("Tucker2Conv")
lowrank.Tucker2Conv = Tucker2Conv
Tucker2Conv._lowrank = true

-- Tucker2Conv(first (r_in,C,1,1), core (r_out,r_in,k,k), last (O,r_out,1,1), bias, stride, pad
--             [, conv_groups])
function Tucker2Conv.new(first, coret, last, bias, stride, pad, groups)
  local self = nn.Module.new(Tucker2Conv)
  self.rank_in, self.rank_out = first:size(1), last:size(2)
  self.conv_groups = groups or "ends_core"
  self:add_module("first", conv_from(first, nil, 1, 0))
  self:add_module("core", conv_from(coret, nil, stride, pad))
  self:add_module("last", conv_from(last, bias, 1, 0))
  return self
end

function Tucker2Conv:forward(x)
  return self.last:forward(self.core:forward(self.first:forward(x)))
end

function Tucker2Conv:factor_groups()
  if self.conv_groups == "in_out" then
    return params_of(self.first, self.core), params_of(self.last)
  end
  return params_of(self.first, self.last), params_of(self.core)
end

function Tucker2Conv:extra_repr()
  return ("%d -> %d, k=%d, stride=%d, pad=%d, ranks in %d out %d"):format(self.first.in_channels,
    self.last.out_channels, self.core.k, self.core.stride, self.core.pad, self.rank_in, self.rank_out)
end

function lowrank.is_decomposed(m)
  return type(m) == "table" and getmetatable(m) ~= nil and m._lowrank == true
end

-- ---- decomposing single layers ---------------------------------------------------------

local function rank_opts(o)
  return { rank = o.rank, ratio = o.ratio, energy = o.energy, quantum = o.quantum, driver = o.driver }
end

-- Decomposes one nn.Linear; returns the LowRankLinear and the info table of
-- core.lowrank_linear (plus kind, shape).
function lowrank.decompose_linear(layer, opts)
  opts = opts_of(opts)
  local A, B, info = core.lowrank_linear(layer.weight:detach(), rank_opts(opts))
  info.kind, info.shape = "linear", shape_str(layer.weight)
  if layer.bias then info.params_dense, info.params_lowrank = info.params_dense + layer.bias:numel(),
    info.params_lowrank + layer.bias:numel() end
  return LowRankLinear.new(A, B, layer.bias), info
end

-- Decomposes one nn.Conv2d: 1x1 by the SVD split, kxk by Tucker-2 with
-- rank_in/rank_out, or ratio (+ quantum).
function lowrank.decompose_conv(layer, opts)
  opts = opts_of(opts)
  local w = layer.weight:detach()
  local s = w:shape()
  local nb = layer.bias and layer.bias:numel() or 0
  if s[3] == 1 and s[4] == 1 then
    local A, B, info = core.lowrank_linear(w:reshape(s[1], s[2]), rank_opts(opts))
    info.kind, info.shape = "conv1x1", shape_str(w)
    info.params_dense, info.params_lowrank = info.params_dense + nb, info.params_lowrank + nb
    return LowRankConv.new(A, B, layer.bias, layer.stride, layer.pad), info
  end
  if opts.energy ~= nil then
    error("decompose_conv: energy is not supported for a " .. shape_str(w) .. " conv (give ratio or rank_in/rank_out)", 2)
  end
  local t = { driver = opts.driver }
  if opts.rank_in or opts.rank_out or opts.rank then
    t.rank_in, t.rank_out = opts.rank_in or opts.rank, opts.rank_out or opts.rank
  else
    t.ratio, t.quantum = opts.ratio, opts.quantum
  end
  local f, g, l, info = core.tucker2(w, t)
  info.kind, info.shape = "tucker2", shape_str(w)
  info.params_dense, info.params_lowrank = info.params_dense + nb, info.params_lowrank + nb
  return Tucker2Conv.new(f, g, l, layer.bias, layer.stride, layer.pad, opts.conv_groups), info
end

-- ---- decomposing a model -----------------------------------------------------------------

local function is_class(m, cls) return getmetatable(m) == cls end

local function selected(sel, name, m)
  if sel == nil then return true end
  if type(sel) == "function" then return sel(name, m) and true or false end
  if type(sel) == "string" then sel = { sel } end
  for _, s in ipairs(sel) do if s == name then return true end end
  return false
end

local function replace_child(parent, cname, new)
  for _, c in ipairs(parent._children) do
    if c.name == cname then c.module = new end
  end
  parent[cname] = new
  local i = math.tointeger(tonumber(cname))
  if i and rawget(parent, i) ~= nil then parent[i] = new end -- ModuleList / Sequential index
end

-- The Linear / Conv2d layers that opts.layers selects, in model order, each
-- with the options that apply to it (opts, then opts.per_layer[name]).
local function layer_jobs(model, opts)
  local jobs = {}
  local function visit(m, name, parent, cname)
    if lowrank.is_decomposed(m) then return end -- already factored: leave its factors alone
    if (is_class(m, nn.Linear) or is_class(m, nn.Conv2d)) and selected(opts.layers, name, m) then
      local o = {}
      for k, v in pairs(opts) do o[k] = v end
      if opts.per_layer and opts.per_layer[name] then
        for k, v in pairs(opts.per_layer[name]) do o[k] = v end
      end
      o.per_layer, o.layers = nil, nil
      jobs[#jobs + 1] = { name = name, module = m, parent = parent, cname = cname, opts = o }
      return
    end
    for _, c in ipairs(m._children) do
      visit(c.module, name == "" and c.name or name .. "." .. c.name, m, c.name)
    end
  end
  visit(model, "", nil, nil)
  return jobs
end

-- Shape facts of a layer: kind, M/K (linear and 1x1: out, in), O/C/k (conv), bias count.
local function layer_shape(m)
  local s = m.weight:shape()
  local nb = m.bias and m.bias:numel() or 0
  if is_class(m, nn.Linear) then return { kind = "linear", M = s[1], K = s[2], nb = nb, shape = s } end
  if s[3] == 1 and s[4] == 1 then return { kind = "conv1x1", M = s[1], K = s[2], nb = nb, shape = s } end
  return { kind = "tucker2", O = s[1], C = s[2], kh = s[3], kw = s[4], nb = nb, shape = s }
end

-- The reason a layer has no rank on the q-grid (q larger than a dimension
-- the rank is bounded by), or nil.  Only ratio / energy ranks are quantized.
local function no_grid_reason(sh, o)
  local q = o.quantum or 1
  if q <= 1 or o.rank ~= nil or o.rank_in ~= nil or o.rank_out ~= nil then return nil end
  if sh.kind ~= "tucker2" then
    local lim = math.min(sh.M, sh.K)
    if q > lim then return ("quantum %d > min(%d,%d)"):format(q, sh.M, sh.K) end
    return nil
  end
  local lo, li = math.min(sh.O, sh.C * sh.kh * sh.kw), math.min(sh.C, sh.O * sh.kh * sh.kw)
  if q > lo or q > li then return ("quantum %d > rank limits %d (out), %d (in)"):format(q, lo, li) end
  return nil
end

-- Rank and parameter count of one layer without decomposing it (rank or
-- ratio, + quantum; energy needs the SVD and is not planned).
local function plan_layer(sh, o)
  local info = { kind = sh.kind, shape = table.concat(sh.shape, "x") }
  if sh.kind ~= "tucker2" then
    local r, raw
    if o.rank ~= nil then r, raw = o.rank, o.rank
    elseif o.ratio ~= nil then r, raw = core.rank_for(sh.M, sh.K, { ratio = o.ratio, quantum = o.quantum })
    else error("plan: give rank or ratio (energy needs the SVD: use decompose)", 0) end
    if r > math.min(sh.M, sh.K) then error(("rank %d > min(%d,%d)"):format(r, sh.M, sh.K), 0) end
    local c = core.lowrank_linear_cost(sh.M, sh.K, r, { bias = sh.nb > 0 })
    info.rank, info.rank_raw, info.params_dense, info.params_lowrank = r, raw, c.params_dense, c.params_lowrank
  else
    local ro, ri
    if o.rank_in or o.rank_out or o.rank then ri, ro = o.rank_in or o.rank, o.rank_out or o.rank
    elseif o.ratio ~= nil then
      ro, ri = core.tucker2_rank_for(sh.O, sh.C, sh.kh, sh.kw, { ratio = o.ratio, quantum = o.quantum })
    else error("plan: give rank_in / rank_out or ratio for a " .. info.shape .. " conv", 0) end
    local c = core.lowrank_conv_cost(sh.O, sh.C, sh.kh, sh.kw, ro, ri, { bias = sh.nb > 0 })
    info.rank_out, info.rank_in, info.params_dense, info.params_lowrank = ro, ri, c.params_dense, c.params_lowrank
  end
  return info
end

-- Records the input / output shape of every Linear / Conv2d (at any depth)
-- during one forward of x (no gradient, eval mode kept as it is):
-- {[name] = {input = {...}, output = {...}, module = m}}.
function lowrank.trace(model, x)
  local rec, patched = {}, {}
  for _, e in ipairs(model:named_modules()) do
    local m = e.module
    local cls = getmetatable(m)
    if (cls == nn.Linear or cls == nn.Conv2d) and rawget(m, "forward") == nil then
      rawset(m, "forward", function(self, inp)
        local y = cls.forward(self, inp)
        rec[e.name] = { input = inp:shape(), output = y:shape(), module = m }
        return y
      end)
      patched[#patched + 1] = m
    end
  end
  local ok, err = pcall(core.no_grad, function() return model:forward(x) end)
  for _, m in ipairs(patched) do rawset(m, "forward", nil) end
  if not ok then error(err, 2) end
  return rec
end

-- FLOPs (2 x multiply-adds) of the Linear / Conv2d layers in one forward of
-- x, dense or decomposed alike (factors are Linear / Conv2d); elementwise
-- ops, pooling and biases are not counted.  -> total, {[name] = flops}
function lowrank.flops(model, x)
  local total, per = 0, {}
  for name, r in pairs(lowrank.trace(model, x)) do
    local m, f = r.module, 0
    if getmetatable(m) == nn.Linear then
      local rows = 1
      for i = 1, #r.input - 1 do rows = rows * r.input[i] end
      f = 2 * rows * m.in_features * m.out_features
    else
      local o = r.output
      f = 2 * o[1] * o[3] * o[4] * m.out_channels * m.in_channels * m.k * m.k
    end
    per[name], total = f, total + f
  end
  return total, per
end

-- Rank optimization for one layer (methods.md §2 step 3): times the q-grid
-- ranks around the planned rank with lowrank.search on this layer's input
-- shape, within the planned rank's parameter budget, and returns the largest
-- rank whose time is within (1 + tol) of the fastest candidate's.
local function searched_rank(m, sh, planned, o, shapes, name)
  local s = o.search
  local inp = shapes and shapes[name] and shapes[name].input
  local so = { quantum = o.quantum or 1, window = s.window or 1, repeats = s.repeats or 3,
               warmup = s.warmup, dense = false, freeze = s.freeze,
               device = s.device or (s.sample and s.sample:device()) }
  local r0
  if sh.kind == "tucker2" then
    -- lowrank.search times Tucker-2 candidates with r_in = r_out = r
    r0 = math.max(1, math.floor(math.sqrt(planned.rank_in * planned.rank_out) + 0.5))
    so.max_params = core.lowrank_conv_cost(sh.O, sh.C, sh.kh, sh.kw, planned.rank_out, planned.rank_in,
                                           { bias = false }).params_lowrank
    if inp then so.batch, so.image = inp[1], { inp[3], inp[4] } end
  else
    r0 = planned.rank
    so.max_params = planned.rank * (sh.M + sh.K)
    if inp then
      local rows = 1
      for i = 1, #inp - 1 do rows = rows * inp[i] end
      if sh.kind == "conv1x1" then so.batch, so.image = inp[1], { inp[3], inp[4] } else so.batch = rows end
    end
  end
  so.r0 = r0
  local res = lowrank.search(m, so)
  local tmin = math.huge
  for _, t in ipairs(res.trials) do
    if t.within_budget and t.seconds and t.seconds < tmin then tmin = t.seconds end
  end
  local best = res.best
  for _, t in ipairs(res.trials) do
    if t.within_budget and t.seconds and t.seconds <= (1 + (s.tol or 0.05)) * tmin and t.rank > best then
      best = t.rank
    end
  end
  return best, res
end

local function check_common(opts, fname)
  if opts.conv_groups ~= nil and opts.conv_groups ~= "ends_core" and opts.conv_groups ~= "in_out" then
    error(fname .. ": conv_groups must be \"ends_core\" or \"in_out\", got " .. tostring(opts.conv_groups), 3)
  end
  if opts.no_grid ~= nil and opts.no_grid ~= "error" and opts.no_grid ~= "dense" then
    error(fname .. ": no_grid must be \"error\" or \"dense\", got " .. tostring(opts.no_grid), 3)
  end
end

-- lowrank.plan(model, opts) -> report
-- What decompose(model, opts) would do, without an SVD and without changing
-- the model: the same report (rank / rank_raw or rank_in / rank_out,
-- params_dense, params_lowrank, skipped) for rank or ratio (+ quantum)
-- options.  Cheap enough for a sweep's filter.
function lowrank.plan(model, opts)
  opts = opts_of(opts)
  check_common(opts, "plan")
  local report = {}
  for _, j in ipairs(layer_jobs(model, opts)) do
    local sh = layer_shape(j.module)
    local why = no_grid_reason(sh, j.opts)
    local info
    if why and j.opts.no_grid == "dense" then
      info = { kind = sh.kind, shape = table.concat(sh.shape, "x"), skipped = why }
    else
      local ok, res = pcall(plan_layer, sh, j.opts)
      if not ok then error(("plan: layer '%s': %s"):format(j.name, tostring(res)), 2) end
      info = res
      if not j.opts.keep_larger and info.params_lowrank >= info.params_dense then
        info.skipped = ("no saving: %d factor parameters >= %d dense"):format(info.params_lowrank, info.params_dense)
      end
    end
    info.name = j.name
    report[#report + 1] = info
  end
  return report
end

-- lowrank.decompose(model, opts) -> model, report
-- opts: rank | ratio | energy, quantum (linear and 1x1 layers);
--       rank_in / rank_out, or ratio (+ quantum) for kxk convs;
--       layers = nil (every Linear / Conv2d) | name | {names} | function(name, module) -> bool;
--       per_layer = { [name] = {options overriding the above} };
--       keep_larger = false: a layer whose factors hold at least as many
--         parameters as the dense layer is left dense (reported as skipped);
--       no_grid = "error" | "dense": a layer with no rank on the q-grid
--         (quantum larger than the dimension bounding its rank, e.g. q = 64
--         for a 512x10 head) raises, or is left dense and reported skipped;
--       search = nil | {sample = x, window = 1, tol = 0.05, repeats = 3, warmup, freeze, device}:
--         rank optimization with ratio: each layer's rank is chosen by timing
--         the q-grid ranks around the planned (quantized) rank on this device
--         (lowrank.search, forward + backward, the layer's input shape traced
--         from one forward of `sample`), within the planned rank's parameter
--         budget; the largest rank within (1 + tol) of the fastest is taken.
--         Candidates are timed on `device` (default: the sample's, else the layer's).
--         kxk convs get r_in = r_out = the searched rank.  report.search
--         holds the trials;
--       conv_groups = "ends_core" | "in_out" (freezing groups of Tucker-2); driver.
-- report: list of {name, kind, shape, rank / rank_in, rank_out, energy_kept,
--         params_dense, params_lowrank, skipped = reason or nil}, in model order.
-- A failure on any layer raises before any layer is replaced.
function lowrank.decompose(model, opts)
  opts = opts_of(opts)
  check_common(opts, "decompose")
  local search = opts.search
  if search ~= nil then
    if type(search) ~= "table" then error("decompose: search must be a table of options", 2) end
    if opts.ratio == nil then error("decompose: search needs ratio (the parameter budget)", 2) end
  end
  local jobs = layer_jobs(model, opts)
  local shapes = search and search.sample and lowrank.trace(model, search.sample) or nil
  local report = {}
  for _, j in ipairs(jobs) do
    local o = j.opts
    local sh = layer_shape(j.module)
    local why = no_grid_reason(sh, o)
    local new, info
    if why and o.no_grid == "dense" then
      info = { kind = sh.kind, shape = table.concat(sh.shape, "x"), skipped = why }
    else
      local ok, err = pcall(function()
        local trials
        if search then
          local planned = plan_layer(sh, o)
          if o.keep_larger or planned.params_lowrank < planned.params_dense then
            local r
            r, trials = searched_rank(j.module, sh, planned, o, shapes, j.name)
            o.ratio, o.quantum = nil, nil
            if sh.kind == "tucker2" then o.rank_in, o.rank_out = r, r else o.rank = r end
          end
        end
        if is_class(j.module, nn.Linear) then new, info = lowrank.decompose_linear(j.module, o)
        else new, info = lowrank.decompose_conv(j.module, o) end
        info.search = trials
      end)
      if not ok then error(("decompose: layer '%s': %s"):format(j.name, tostring(err)), 2) end
      if not o.keep_larger and info.params_lowrank >= info.params_dense then
        info.skipped = ("no saving: %d factor parameters >= %d dense"):format(info.params_lowrank, info.params_dense)
      end
    end
    info.name = j.name
    if not info.skipped then j.new = new end
    report[#report + 1] = info
  end
  -- every layer is decomposed before any is replaced: a failure leaves the model as it was
  for _, j in ipairs(jobs) do
    if j.new then
      if j.parent then replace_child(j.parent, j.cname, j.new)
      else model = j.new end -- the model itself was a single layer
    end
  end
  return model, report
end

-- ---- sequential freezing -------------------------------------------------------------------

local Freezer = {}
Freezer.__index = Freezer

local MODES = { none = true, first = true, second = true, alternate_epoch = true, alternate_iter = true }

-- lowrank.freezer(model, {mode = "none"|"first"|"second"|"alternate_epoch"|"alternate_iter",
--                         period = 1, start = "first"})
-- "first" / "second": that factor group stays frozen.  alternate_*: the
-- group named by `start` is frozen for the first `period` epochs (or
-- iterations, counted from 1), then the other one, and so on.
function lowrank.freezer(model, opts)
  opts = opts_of(opts)
  local mode = opts.mode or "none"
  if not MODES[mode] then
    error("freezer: mode must be none, first, second, alternate_epoch or alternate_iter, got " .. tostring(mode), 2)
  end
  local period = opts.period or 1
  if math.type(period) ~= "integer" or period < 1 then
    error("freezer: period must be an integer >= 1, got " .. tostring(period), 2)
  end
  local start = opts.start or "first"
  if start ~= "first" and start ~= "second" then
    error("freezer: start must be \"first\" or \"second\", got " .. tostring(start), 2)
  end
  local g1, g2 = {}, {}
  for _, e in ipairs(model:named_modules()) do
    if lowrank.is_decomposed(e.module) then
      local a, b = e.module:factor_groups()
      for _, p in ipairs(a) do g1[#g1 + 1] = p end
      for _, p in ipairs(b) do g2[#g2 + 1] = p end
    end
  end
  if #g1 == 0 then error("freezer: the model has no decomposed layers", 2) end
  local self = setmetatable({ mode = mode, period = period, start = start, first = g1, second = g2 }, Freezer)
  if mode == "first" or mode == "second" then self:set(mode)
  elseif mode == "none" then self:set(nil)
  else self:set(start) end
  return self
end

-- Freezes group `which` ("first" | "second" | nil for none); the other trains.
function Freezer:set(which)
  for _, p in ipairs(self.first) do p:requires_grad(which ~= "first") end
  for _, p in ipairs(self.second) do p:requires_grad(which ~= "second") end
  self.frozen = which
  return self
end

local function phase(self, n, what)
  if math.type(n) ~= "integer" or n < 1 then
    error(("freezer: %s must be an integer >= 1, got %s"):format(what, tostring(n)), 3)
  end
  local other = self.start == "first" and "second" or "first"
  return ((n - 1) // self.period) % 2 == 0 and self.start or other
end

-- Call at the start of epoch e (1-based); returns the frozen group or nil.
function Freezer:on_epoch(e)
  local p = phase(self, e, "epoch")
  if self.mode == "alternate_epoch" then self:set(p) end
  return self.frozen
end

-- Call before iteration i (1-based, counted across epochs).
function Freezer:on_iter(i)
  local p = phase(self, i, "iteration")
  if self.mode == "alternate_iter" then self:set(p) end
  return self.frozen
end

function Freezer:state() return self.frozen or "none" end

-- ---- on-device rank search ------------------------------------------------------------------

-- lowrank.search(layer, opts) -> result
-- Times forward+backward of the decomposed layer at grid ranks around r0
-- (random factors of each candidate rank: the time does not depend on the
-- values) and picks the fastest within the parameter budget.
-- opts: ratio | r0; quantum (1); window (2 grid steps each side);
--       max_params (default: dense parameters / ratio with ratio, else the dense count);
--       batch (64 rows; conv: 8 images); image = {H, W} (conv; default 32x32);
--       repeats (5), warmup (1) per candidate (median of repeats);
--       freeze = nil | "first" | "second": time with that factor frozen;
--       input_grad (true): the input requires a gradient, as inside a network;
--       device (default: the layer's): where the candidates are timed (only the
--         layer's shape and dtype are used, so a CPU layer can be timed on "cuda");
--       time_over_budget (false); dense (true): also time the dense layer.
-- result: {best, r0, trials = {{rank, params, within_budget, seconds, samples}},
--          dense_seconds, dense_params, kind}
function lowrank.search(layer, opts)
  opts = opts_of(opts)
  local is_lin, is_conv = is_class(layer, nn.Linear), is_class(layer, nn.Conv2d)
  if not (is_lin or is_conv) then error("search: nn.Linear or nn.Conv2d expected", 2) end
  if (opts.ratio == nil) == (opts.r0 == nil) then error("search: give exactly one of ratio, r0", 2) end
  local w = layer.weight
  local s = w:shape()
  local dt = w:dtype()
  local dev = opts.device or w:device()
  local M, K = s[1], s[2]
  local k = is_conv and s[3] or 1
  local dense_params = w:numel()
  local freeze = opts.freeze
  if freeze ~= nil and freeze ~= "first" and freeze ~= "second" then
    error("search: freeze must be nil, \"first\" or \"second\"", 2)
  end
  local budget = opts.max_params
  if budget == nil then
    budget = opts.ratio and math.floor(dense_params / opts.ratio) or dense_params
  end
  local input_grad = opts.input_grad ~= false
  local x
  local H, W = 32, 32
  if is_conv then
    if opts.image then H, W = opts.image[1], opts.image[2] end
    x = core.randn({ opts.batch or 8, K, H, W }, { dtype = dt, device = dev, requires_grad = input_grad })
  else
    x = core.randn({ opts.batch or 64, K }, { dtype = dt, device = dev, requires_grad = input_grad })
  end
  local stride, pad = layer.stride or 1, layer.pad or 0
  local function randp(shape, group)
    return core.randn(shape, { dtype = dt, device = dev, std = 0.1, requires_grad = freeze ~= group })
  end
  -- GPU work is asynchronous: a timed step ends when the device is done,
  -- not when the launches return (timing launches picked slow ranks on the H100)
  local sync = (dev ~= "cpu" and core.cuda_synchronize) or nil
  local function step(y, ps)
    y:sum():backward()
    x:zero_grad()
    for _, p in ipairs(ps) do p:zero_grad() end
    if sync then sync() end
  end
  local bias = core.zeros({ M }, { dtype = dt, device = dev, requires_grad = true })
  local function make(r)
    if is_lin then
      local B, A = randp({ r, K }, "first"), randp({ M, r }, "second")
      return function() step(core.linear(core.linear(x, B), A, bias), { A, B, bias }) end
    elseif k == 1 then
      local B, A = randp({ r, K, 1, 1 }, "first"), randp({ M, r, 1, 1 }, "second")
      return function()
        step(core.conv2d(core.conv2d(x, B, nil, { stride = stride, pad = pad }), A, bias), { A, B, bias })
      end
    end
    -- Tucker-2 with r_in = r_out = r; groups as in Tucker2Conv ("ends_core")
    local f, g, l = randp({ r, K, 1, 1 }, "first"), randp({ r, r, k, k }, "second"), randp({ M, r, 1, 1 }, "first")
    return function()
      local h = core.conv2d(core.conv2d(x, f), g, nil, { stride = stride, pad = pad })
      step(core.conv2d(h, l, bias), { f, g, l, bias })
    end
  end
  local sopts = {
    ratio = opts.ratio, r0 = opts.r0, quantum = opts.quantum or 1, window = opts.window or 2,
    max_params = budget, time_over_budget = opts.time_over_budget, repeats = opts.repeats,
    warmup = opts.warmup, kernel = is_conv and { k, k } or nil,
  }
  local best, trials = core.lowrank_search(M, K, sopts, make)
  local res = { best = best, trials = trials, dense_params = dense_params, budget = budget,
                kind = is_lin and "linear" or (k == 1 and "conv1x1" or "tucker2") }
  if opts.ratio then res.r0 = select(2, core.rank_for(M, K, { ratio = opts.ratio })) else res.r0 = opts.r0 end
  if opts.dense ~= false then
    local Wd = core.randn(s, { dtype = dt, device = dev, std = 0.1, requires_grad = true })
    local run
    if is_lin then
      run = function() step(core.linear(x, Wd, bias), { Wd, bias }) end
    else
      run = function() step(core.conv2d(x, Wd, bias, { stride = stride, pad = pad }), { Wd, bias }) end
    end
    res.dense_seconds = core.lowrank_time(run, { repeats = opts.repeats, warmup = opts.warmup })
  end
  return res
end

return lowrank
