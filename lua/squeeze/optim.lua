-- squeeze.optim — optimizers over a model's parameters and learning-rate
-- schedules.
--
--   local opt = optim.SGD(model, {lr = 0.1, momentum = 0.9, nesterov = true, weight_decay = 5e-4})
--   local opt = optim.AdamW(model:parameters(), {lr = 3e-4, betas = {0.9, 0.95}, weight_decay = 0.1,
--                                                schedule = optim.warmup_cosine{...}})
--   opt:zero_grad(); loss:backward(); opt:step()
--
-- params may be a module (anything with :parameters()), an array of tensors,
-- or the {name =, param =} records of Module:named_parameters().  The update
-- itself runs in C (core.sgd / core.adamw, PyTorch semantics); a parameter
-- whose requires_grad is false is skipped, state and step count untouched,
-- so freezing after construction works.  zero_grad releases the gradients
-- (PyTorch's set_to_none).
--
-- A schedule is a function step -> lr, with step the 1-based number of the
-- update about to be made; with cfg.schedule set, opt:step() sets the lr
-- from it before updating.
local core = require "squeeze.core"

local optim = {}

local Optimizer = {}
Optimizer.__index = Optimizer
Optimizer.__name = "squeeze.optim.Optimizer"

-- Normalises params to an array of tensors (+ names when known).
local function param_list(params, fname)
  if type(params) == "table" and type(params.parameters) == "function" and type(params.named_parameters) == "function" then
    params = params:named_parameters()
  end
  if type(params) ~= "table" then
    error(("bad argument #1 to '%s' (module, array of tensors or named parameters expected, got %s)")
      :format(fname, type(params)), 3)
  end
  local tensors, names = {}, {}
  for i, p in ipairs(params) do
    if type(p) == "table" and p.param ~= nil then
      tensors[i], names[i] = p.param, p.name
    else
      tensors[i] = p
    end
    if not core.is_tensor(tensors[i]) then
      error(("bad argument #1 to '%s' (entry %d is a %s, not a tensor)"):format(fname, i, type(tensors[i])), 3)
    end
  end
  if #tensors == 0 then error(("bad argument #1 to '%s' (no parameters)"):format(fname), 3) end
  return tensors, names
end

local function make(kind, params, cfg)
  local fname = kind == "sgd" and "optim.SGD" or "optim.AdamW"
  cfg = cfg or {}
  if type(cfg) ~= "table" then error(("bad argument #2 to '%s' (table expected, got %s)"):format(fname, type(cfg)), 3) end
  local tensors, names = param_list(params, fname)
  local schedule = cfg.schedule
  if schedule ~= nil and type(schedule) ~= "function" then
    error(("bad argument #2 to '%s' (schedule must be a function step -> lr)"):format(fname), 3)
  end
  local ccfg = {}
  for k, v in pairs(cfg) do if k ~= "schedule" then ccfg[k] = v end end
  if schedule and ccfg.lr == nil then ccfg.lr = schedule(1) end
  local ok, o = pcall(kind == "sgd" and core.sgd or core.adamw, tensors, ccfg)
  if not ok then error((tostring(o):gsub("to '[^']*'", "to '" .. fname .. "'", 1)), 3) end
  return setmetatable({ core = o, kind = kind, params = tensors, names = names, schedule = schedule, t = 0 }, Optimizer)
end

function optim.SGD(params, cfg) return make("sgd", params, cfg) end
function optim.AdamW(params, cfg) return make("adamw", params, cfg) end

function Optimizer:step()
  local n = self.t + 1
  if self.schedule then self.core:lr(self.schedule(n)) end
  self.core:step()
  self.t = n
  return self
end

function Optimizer:zero_grad() self.core:zero_grad(); return self end
-- lr([new]) -> current lr
function Optimizer:lr(v) return self.core:lr(v) end
-- steps() -> step() calls; steps(i) -> updates parameter i received
function Optimizer:steps(i) return self.core:steps(i) end
function Optimizer:state_bytes() return self.core:state_bytes() end
function Optimizer:close() self.core:close() end
Optimizer.__close = function(self) self.core:close() end
Optimizer.__tostring = function(self) return tostring(self.core) end

-- ---- schedules -----------------------------------------------------------------

local function need_number(v, what, lo)
  if type(v) ~= "number" or v ~= v or (lo and v < lo) then
    error(("%s must be a number%s, got %s"):format(what, lo and (" >= " .. lo) or "", tostring(v)), 3)
  end
  return v
end

-- constant(lr) -> function(step) return lr end
function optim.constant(lr)
  if type(lr) == "table" then lr = lr.lr end
  need_number(lr, "optim.constant: lr", 0)
  return function() return lr end
end

-- warmup_cosine{base_lr=, warmup=, total=, min_lr=0} -> function(step) -> lr
--   step <= warmup:          base_lr * step / warmup        (linear, step 1 is the first update)
--   warmup < step <= total:  min_lr + (base_lr - min_lr) * (1 + cos(pi * (step - warmup) / (total - warmup))) / 2
--   step > total:            min_lr
-- so lr = base_lr exactly at step = warmup and min_lr at step = total.
function optim.warmup_cosine(cfg)
  if type(cfg) ~= "table" then error("optim.warmup_cosine: table {base_lr=, warmup=, total=, min_lr=} expected", 2) end
  local base = need_number(cfg.base_lr, "optim.warmup_cosine: base_lr", 0)
  local warm = cfg.warmup or 0
  local total = cfg.total
  local min_lr = cfg.min_lr or 0
  if math.type(warm) ~= "integer" or warm < 0 then error("optim.warmup_cosine: warmup must be an integer >= 0", 2) end
  if math.type(total) ~= "integer" or total <= warm then
    error(("optim.warmup_cosine: total must be an integer > warmup (%d), got %s"):format(warm, tostring(total)), 2)
  end
  need_number(min_lr, "optim.warmup_cosine: min_lr", 0)
  if min_lr > base then error("optim.warmup_cosine: min_lr must be <= base_lr", 2) end
  for k in pairs(cfg) do
    if k ~= "base_lr" and k ~= "warmup" and k ~= "total" and k ~= "min_lr" then
      error("optim.warmup_cosine: unknown option '" .. tostring(k) .. "'", 2)
    end
  end
  return function(step)
    if math.type(step) ~= "integer" or step < 1 then
      error("warmup_cosine schedule: step must be an integer >= 1, got " .. tostring(step), 2)
    end
    if step <= warm then return base * step / warm end -- warm > 0 here since step >= 1
    if step >= total then return min_lr end
    local p = (step - warm) / (total - warm)
    return min_lr + (base - min_lr) * 0.5 * (1 + math.cos(math.pi * p))
  end
end

return optim
