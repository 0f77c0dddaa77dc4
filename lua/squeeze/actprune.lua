-- squeeze.actprune — structured activation pruning of the backward pass on a
-- model (methods.md §1, Barley & Fröning): chosen nn.Linear modules become
-- ActPruneLinear modules whose forward is exact (core.linear_pruned) and whose
-- saved input is kept only as a BSR copy of its highest-scoring blocks.
--
--   local actprune = require "squeeze.actprune"
--   local model, report = actprune.apply(model, {block = 32, keep = 0.5, criterion = "l2",
--                                                scope = "tensor", layers = {"token_mix", "fc1", "fc2"}})
--   ... train; actprune.stats(model) -> totals and per-layer stats of the calls so far
--   actprune.set_enabled(model, false)     -- the same layers, dense (core.linear)
--   local errs = actprune.dw_errors(model, function() <forward, loss, backward> end)
--
-- The replacement module takes over the nn.Linear's own weight and bias
-- tensors, so parameter names ("blocks.1.fc1.weight") and an optimizer built
-- before apply stay valid.
--
-- What the pruning frees (ResMLP block: affine1 -> token_mix -> scale1,
-- affine2 -> fc1 -> GELU -> fc2 -> scale2; methods.md step 6): the dense
-- input of a pruned linear is freed only when no other backward consumer
-- keeps it.  Affine saves its *input* (the residual stream), GELU its *input*
-- (fc1's output); neither keeps the tensor that feeds token_mix (affine1's
-- output, transposed), fc1 (affine2's output) or fc2 (GELU's output), so all
-- three pruned inputs are freed.  What stays dense per block: the residual
-- stream twice (affine1, affine2), the inputs of scale1 and scale2, and fc1's
-- output (4·dim wide, kept by GELU) — 8 of the 14 dim-wide units of a block
-- with expansion 4; the three pruned inputs are the other 6.
--
-- The allocator's SAVED category drops exactly at forward time (the node lets
-- go of the dense x).  The bytes themselves return only when the Lua
-- reference to x dies: a temporary is garbage until Lua's collector runs.
-- actprune.measure_step runs a step with garbage collected after every
-- module's forward so that peak totals are comparable between settings.
local core = require "squeeze.core"
local nn = require "squeeze.nn"

local actprune = {}

local fmt = string.format

-- The three linears of an nn.ResMLPBlock (the default selection).
actprune.RESMLP_LAYERS = { "token_mix", "fc1", "fc2" }
local RESMLP_SET = { token_mix = true, fc1 = true, fc2 = true }

local OPT_KEYS = { block = true, keep = true, criterion = true, scope = true, transpose_at_pack = true,
                   time_compress = true }
local APPLY_KEYS = { block = true, keep = true, criterion = true, scope = true, transpose_at_pack = true,
                     time_compress = true, layers = true }

-- Checks a layer config with the binding's own checks (one source of truth
-- for the accepted values) and returns a fresh copy with the defaults filled
-- in.  fname prefixes the message; level is the error level for the caller.
local function check_cfg(o, fname, level)
  local cfg = {}
  for k, v in pairs(o) do
    if OPT_KEYS[k] then cfg[k] = v end
  end
  cfg.block = cfg.block == nil and 32 or cfg.block
  cfg.keep = cfg.keep == nil and 0.5 or cfg.keep
  cfg.criterion = cfg.criterion == nil and "l2" or cfg.criterion
  cfg.scope = cfg.scope == nil and "tensor" or cfg.scope
  cfg.transpose_at_pack = cfg.transpose_at_pack and true or false
  if cfg.time_compress == nil then cfg.time_compress = true end
  cfg.time_compress = cfg.time_compress and true or false
  -- a 1x1 input and a weight that needs no gradient: only the options are checked
  local ok, err = pcall(core.linear_pruned, core.zeros({ 1, 1 }), core.zeros({ 1, 1 }), nil, cfg)
  if not ok then
    local why = tostring(err):match("linear_pruned' %((.*)%)$") or tostring(err)
    error(fmt("%s: %s", fname, why), level + 1)
  end
  return cfg
end

-- ---- the module ------------------------------------------------------------------

local ActPruneLinear = nn.class("ActPruneLinear")
actprune.ActPruneLinear = ActPruneLinear

local STAT_KEYS = { "kept_blocks", "total_blocks", "saved_bytes", "value_bytes", "dense_bytes", "compress_s",
                    "compress_timed", "dw_flops", "dense_dw_flops" }

-- ActPruneLinear(linear, cfg): takes over linear.weight / linear.bias (the
-- same tensors, registered under the same names).  cfg: block, keep,
-- criterion, scope, transpose_at_pack (see core.linear_pruned).
function ActPruneLinear.new(linear, cfg)
  if getmetatable(linear) ~= nn.Linear then error("ActPruneLinear: nn.Linear expected", 2) end
  local self = nn.Module.new(ActPruneLinear)
  self.in_features, self.out_features = linear.in_features, linear.out_features
  self:add_param("weight", linear.weight)
  if linear.bias then self:add_param("bias", linear.bias) end
  self.cfg = check_cfg(cfg or {}, "ActPruneLinear", 2)
  self.enabled = true
  self:reset_stats()
  return self
end

function ActPruneLinear:reset_stats()
  local s = { calls = 0, pruned_calls = 0 }
  for _, k in ipairs(STAT_KEYS) do s[k] = 0 end
  self.stats, self.last = s, nil
  return self
end

-- x (..., K) -> (..., M).  Pruned when enabled and W needs a gradient (the
-- engine compresses only what autograd saves); the stats of a pruned call
-- are added to self.stats and kept as self.last.
function ActPruneLinear:forward(x)
  local cap = self._capture
  if cap then return self:_capture_forward(x, cap) end
  if not self.enabled then return core.linear(x, self.weight, self.bias) end
  local y, st = core.linear_pruned(x, self.weight, self.bias, self.cfg)
  local s = self.stats
  s.calls = s.calls + 1
  if st.pruned then
    s.pruned_calls = s.pruned_calls + 1
    for _, k in ipairs(STAT_KEYS) do s[k] = s[k] + st[k] end
    self.last = st
  end
  return y
end

-- Capture mode (dw_errors): a dense forward that keeps x and routes y
-- through y + z, z a zero leaf, so that z's gradient after backward is dy.
function ActPruneLinear:_capture_forward(x, cap)
  local y = core.linear(x, self.weight, self.bias)
  local z = core.zeros_like(y):requires_grad(true) -- on y's device and of its dtype
  cap.x, cap.z = x:detach(), z
  return y + z
end

function ActPruneLinear:extra_repr()
  local c = self.cfg
  return fmt("%d -> %d%s, block %d, keep %g, %s, scope %s%s", self.in_features, self.out_features,
    self.bias and "" or ", no bias", c.block, c.keep, c.criterion, c.scope, self.enabled and "" or ", disabled")
end

function actprune.is_pruned(m) return getmetatable(m) == ActPruneLinear end

-- ---- model surgery -------------------------------------------------------------

local function replace_child(parent, cname, new)
  for _, c in ipairs(parent._children) do
    if c.name == cname then c.module = new end
  end
  parent[cname] = new
  local i = math.tointeger(tonumber(cname))
  if i and rawget(parent, i) ~= nil then parent[i] = new end -- ModuleList / Sequential index
end

-- actprune.apply(model, opts) -> model, report
-- opts: block (32) | keep (0.5) | criterion ("l2") | scope ("tensor") |
--       transpose_at_pack (false) — the layer config, checked up front;
--       layers: list of names (default {"token_mix", "fc1", "fc2"}): a short
--       name selects that linear in every nn.ResMLPBlock, a dotted name
--       ("blocks.2.fc1", "head") one nn.Linear anywhere in the model.  A name
--       that selects nothing is an error.  A selected layer that is already
--       an ActPruneLinear gets the new config.
-- report: list of {name =, shape = "MxK"} of the layers now pruned, in model order.
function actprune.apply(model, opts)
  if type(model) ~= "table" or getmetatable(model) == nil or type(model.named_modules) ~= "function" then
    error("actprune.apply: a squeeze.nn module expected", 2)
  end
  if opts == nil then opts = {} end
  if type(opts) ~= "table" then error("actprune.apply: options table expected, got " .. type(opts), 2) end
  for k in pairs(opts) do
    if not APPLY_KEYS[k] then
      error(fmt("actprune.apply: unknown option '%s' (block, keep, criterion, scope, transpose_at_pack, time_compress, layers)",
        tostring(k)), 2)
    end
  end
  local cfg = check_cfg(opts, "actprune.apply", 2)
  local layers = opts.layers or actprune.RESMLP_LAYERS
  if type(layers) == "string" then layers = { layers } end
  if type(layers) ~= "table" or #layers == 0 then
    error("actprune.apply: layers must be a non-empty list of layer names", 2)
  end
  local want, used = {}, {}
  for i, n in ipairs(layers) do
    if type(n) ~= "string" then error(fmt("actprune.apply: layers[%d] is a %s, not a name", i, type(n)), 2) end
    want[n] = true
  end
  -- every (parent, child name, full name) of the model
  local jobs = {}
  local function visit(m, name)
    for _, c in ipairs(m._children) do
      local full = name == "" and c.name or name .. "." .. c.name
      local cm = c.module
      local lin = getmetatable(cm) == nn.Linear or actprune.is_pruned(cm)
      local short = getmetatable(m) == nn.ResMLPBlock and RESMLP_SET[c.name] and c.name
      if lin and (want[full] or (short and want[short])) then
        used[full] = true
        if short then used[short] = true end
        jobs[#jobs + 1] = { parent = m, cname = c.name, name = full, module = cm }
      elseif not lin then
        visit(cm, full)
      end
    end
  end
  visit(model, "")
  for _, n in ipairs(layers) do
    if not used[n] then
      local hint = RESMLP_SET[n] and " (the model has no nn.ResMLPBlock)" or
        " (a ResMLP block's token_mix, fc1, fc2, or the dotted name of an nn.Linear)"
      error(fmt("actprune.apply: layer '%s' matches no linear layer of the model%s", n, hint), 2)
    end
  end
  local report = {}
  for _, j in ipairs(jobs) do
    if actprune.is_pruned(j.module) then
      local c = {}
      for k, v in pairs(cfg) do c[k] = v end
      j.module.cfg = c
    else
      replace_child(j.parent, j.cname, ActPruneLinear.new(j.module, cfg))
    end
    report[#report + 1] = { name = j.name, shape = fmt("%dx%d", j.module.out_features, j.module.in_features) }
  end
  return model, report
end

-- Ordered list of {name =, module =} of the model's pruned linears.
function actprune.layers(model)
  local out = {}
  for _, e in ipairs(model:named_modules()) do
    if actprune.is_pruned(e.module) then out[#out + 1] = { name = e.name, module = e.module } end
  end
  return out
end

-- Pruning on (true) or off (false: the same layers run core.linear).
function actprune.set_enabled(model, on)
  for _, e in ipairs(actprune.layers(model)) do e.module.enabled = on and true or false end
  return model
end

-- Whether the pruned layers time their compress step (cfg.time_compress):
-- on the GPU timing drains the stream around every prune-and-pack, so an
-- experiment times a sample of steps and leaves the others undisturbed.
function actprune.set_time_compress(model, on)
  for _, e in ipairs(actprune.layers(model)) do e.module.cfg.time_compress = on and true or false end
  return model
end

function actprune.reset_stats(model)
  for _, e in ipairs(actprune.layers(model)) do e.module:reset_stats() end
  return model
end

-- Totals over the pruned layers since the last reset, and per layer:
-- {calls, pruned_calls, kept_blocks, total_blocks, saved_bytes, value_bytes,
--  dense_bytes, compress_s, compress_timed (calls whose compress_s was measured),
--  dw_flops, dense_dw_flops,
--  kept_fraction = kept_blocks / total_blocks, layers = { [name] = stats }}
function actprune.stats(model)
  local tot = { calls = 0, pruned_calls = 0, layers = {} }
  for _, k in ipairs(STAT_KEYS) do tot[k] = 0 end
  for _, e in ipairs(actprune.layers(model)) do
    local s = e.module.stats
    local copy = {}
    for k, v in pairs(s) do copy[k] = v end
    copy.kept_fraction = s.total_blocks > 0 and s.kept_blocks / s.total_blocks or nil
    tot.layers[e.name] = copy
    tot.calls, tot.pruned_calls = tot.calls + s.calls, tot.pruned_calls + s.pruned_calls
    for _, k in ipairs(STAT_KEYS) do tot[k] = tot[k] + s[k] end
  end
  tot.kept_fraction = tot.total_blocks > 0 and tot.kept_blocks / tot.total_blocks or nil
  return tot
end

-- actprune.dw_errors(model, step) -> { [layer name] = ‖dW − dŴ‖/‖dW‖ }
-- step(): runs one forward and backward (e.g. loss:backward() on a fixed
-- batch).  The pruned layers run dense during it, keeping their input x and
-- the gradient dy of their output; each layer's error is then
-- core.actprune_dw_error(x, dy, layer cfg) — dW at the current weights, exact
-- against the layer's pruned estimate.  Parameter gradients are left as step
-- made them (zero them before training on).
function actprune.dw_errors(model, step)
  local ls = actprune.layers(model)
  if #ls == 0 then error("actprune.dw_errors: the model has no pruned layers", 2) end
  for _, e in ipairs(ls) do e.module._capture = {} end
  local ok, err = pcall(step)
  local caps = {}
  for _, e in ipairs(ls) do caps[e.name], e.module._capture = e.module._capture, nil end
  if not ok then error(err, 0) end
  local out = {}
  for _, e in ipairs(ls) do
    local cap = caps[e.name]
    if not cap.z then error(fmt("actprune.dw_errors: layer '%s' did not run in step()", e.name), 2) end
    local dy = cap.z:grad()
    if not dy then error(fmt("actprune.dw_errors: no gradient reached layer '%s' (did step() call backward?)", e.name), 2) end
    out[e.name] = core.actprune_dw_error(cap.x:contiguous(), dy, e.module.cfg)
  end
  return out
end

-- ---- measuring a step's memory ---------------------------------------------------------

-- actprune.measure_step(model, step [, device = "cpu"]) -> mem, ...
-- Runs step() with Lua's garbage collected after the forward of every
-- module of the model (and once before), after sq.reset_peak(), and returns
-- the device's peaks {total, param, grad, optim, saved, workspace, other}
-- of the step together with step's own results.  Collecting at module boundaries
-- frees dropped temporaries (a pruned layer's dense input among them) as
-- soon as nothing references them, so the peak measures what the step needs,
-- not when Lua's collector happened to run; use the same call for the dense
-- and the pruned model.
function actprune.measure_step(model, step, device)
  local wrapped = {}
  for _, e in ipairs(model:named_modules()) do
    local m = e.module
    if e.name ~= "" and rawget(m, "forward") == nil then
      local cls_forward = m.forward
      m.forward = function(self, x, ...)
        local y = cls_forward(self, x, ...)
        x = nil -- the input may be garbage now: let the collector see it
        collectgarbage()
        return y
      end
      wrapped[#wrapped + 1] = m
    end
  end
  collectgarbage()
  collectgarbage()
  core.reset_peak()
  local res = table.pack(pcall(step))
  for _, m in ipairs(wrapped) do m.forward = nil end
  if not res[1] then error(res[2], 0) end
  local mem = core.memory()[device or "cpu"]
  if not mem then error(("actprune.measure_step: no memory figures for device '%s'"):format(tostring(device)), 2) end
  return mem.peak, table.unpack(res, 2, res.n)
end

return actprune
