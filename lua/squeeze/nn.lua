-- squeeze.nn — neural-network modules with explicit, named parameters.
--
-- A module owns its parameters (float tensors that require a gradient and
-- are charged to the "param" memory category) and its child modules, both
-- in registration order, so parameter names are stable: "layers.1.weight",
-- "blocks.2.fc1.bias".  Calling a module runs :forward.  Dims follow the
-- tensor bindings: 1-based, negative from the end.
local core = require "squeeze.core"

local nn = {}

local is_tensor = core.is_tensor

local function shape_str(t)
  local s = t:shape()
  return #s == 0 and "scalar" or table.concat(s, "x")
end

local function check_int(v, what, lo, level)
  if math.type(v) ~= "integer" or v < (lo or 1) then
    error(("%s must be an integer >= %d, got %s"):format(what, lo or 1, tostring(v)), (level or 2) + 1)
  end
  return v
end

local function opts_of(o)
  if o == nil then return {} end
  if type(o) ~= "table" then error("options table expected, got " .. type(o), 3) end
  return o
end

-- ---- Module base --------------------------------------------------------------

local Module = {}
Module.__index = Module
nn.Module = Module

-- Creates a class; its instances use it as metatable (metamethods must be
-- raw fields of the metatable, hence copied into every class).
local function class(name, parent)
  parent = parent or Module
  -- nn.Linear(4, 2) is nn.Linear.new(4, 2) (a tail call: errors point at the caller)
  local c = setmetatable({}, { __index = parent, __call = function(cls, ...) return cls.new(...) end })
  c.__index = c
  c.__name = name
  c.__call = function(self, ...) return self:forward(...) end
  c.__tostring = function(self) return self:repr() end
  c._class = name
  return c
end
nn.class = class

function Module.new(cls)
  return setmetatable({ training = true, _params = {}, _children = {} }, cls)
end

-- Registers a parameter: it requires a gradient and is charged to "param".
function Module:add_param(name, t)
  if not is_tensor(t) then error("add_param: tensor expected for '" .. tostring(name) .. "'", 2) end
  t:set_category("param")
  t:requires_grad(true)
  self._params[#self._params + 1] = { name = name, param = t }
  self[name] = t
  return t
end

function Module:add_module(name, m)
  if getmetatable(m) == nil or type(m.forward) ~= "function" then
    error("add_module: module expected for '" .. tostring(name) .. "'", 2)
  end
  self._children[#self._children + 1] = { name = name, module = m }
  self[name] = m
  return m
end

function Module:forward()
  error(self._class .. ": forward is not implemented", 2)
end

-- Ordered list of {name = "a.b.weight", param = tensor}; a parameter shared
-- between modules is listed once, under its first name.
function Module:named_parameters()
  local out, seen = {}, {}
  local function walk(m, prefix)
    for _, e in ipairs(m._params) do
      if not seen[e.param] then
        seen[e.param] = true
        out[#out + 1] = { name = prefix .. e.name, param = e.param }
      end
    end
    for _, c in ipairs(m._children) do walk(c.module, prefix .. c.name .. ".") end
  end
  walk(self, "")
  return out
end

function Module:parameters()
  local out = {}
  for i, e in ipairs(self:named_parameters()) do out[i] = e.param end
  return out
end

-- Ordered list of {name = "blocks.1", module = m}, the module itself first (name "").
function Module:named_modules()
  local out = {}
  local function walk(m, name)
    out[#out + 1] = { name = name, module = m }
    for _, c in ipairs(m._children) do walk(c.module, name == "" and c.name or name .. "." .. c.name) end
  end
  walk(self, "")
  return out
end

function Module:children()
  local out = {}
  for i, c in ipairs(self._children) do out[i] = c.module end
  return out
end

function Module:apply(fn)
  for _, e in ipairs(self:named_modules()) do fn(e.module, e.name) end
  return self
end

function Module:train(mode)
  if mode == nil then mode = true end
  return self:apply(function(m) m.training = mode and true or false end)
end

function Module:eval() return self:train(false) end

function Module:num_params()
  local n = 0
  for _, p in ipairs(self:parameters()) do n = n + p:numel() end
  return n
end

function Module:zero_grad()
  for _, p in ipairs(self:parameters()) do p:zero_grad() end
  return self
end

-- Moves every parameter to `device` ("cpu" or "cuda"): each becomes a copy
-- on that device under the same name, in the same memory category ("param")
-- and with the same requires_grad (frozen stays frozen); a parameter shared
-- between modules stays shared.  Gradients are dropped.  Create the
-- optimizer after moving: it holds the tensors it was given.
function Module:to(device)
  if device ~= "cpu" and device ~= "cuda" then
    error(("%s:to: device must be \"cpu\" or \"cuda\", got %s"):format(self._class, tostring(device)), 2)
  end
  local moved = {}
  for _, e in ipairs(self:named_modules()) do
    local m = e.module
    for _, pe in ipairs(m._params) do
      local p = pe.param
      local q = moved[p]
      if not q then
        q = p:to(device)
        moved[p] = q
      end
      pe.param = q
      m[pe.name] = q
    end
  end
  return self
end

function Module:cuda() return self:to("cuda") end
function Module:cpu() return self:to("cpu") end

-- "cpu" or "cuda": where the first parameter lives ("cpu" without parameters)
function Module:device()
  local p = self:parameters()[1]
  return p and p:device() or "cpu"
end

-- name -> tensor sharing the parameter's storage (detached).
function Module:state_dict()
  local sd = {}
  for _, e in ipairs(self:named_parameters()) do sd[e.name] = e.param:detach() end
  return sd
end

-- Copies values from a name -> tensor table.  Every entry is checked before
-- anything is copied, so a failed load leaves the module untouched.
-- strict (default true): missing and unexpected keys are errors.
function Module:load_state_dict(sd, strict)
  if type(sd) ~= "table" then error("load_state_dict: table of tensors expected", 2) end
  if strict == nil then strict = true end
  local named, known = self:named_parameters(), {}
  for _, e in ipairs(named) do
    known[e.name] = true
    local src = sd[e.name]
    if src == nil then
      if strict then error(("load_state_dict: missing key '%s'"):format(e.name), 2) end
    elseif not is_tensor(src) then
      error(("load_state_dict: '%s' is a %s, not a tensor"):format(e.name, type(src)), 2)
    elseif shape_str(src) ~= shape_str(e.param) then
      error(("load_state_dict: '%s' has shape %s in the state dict but %s in the model")
        :format(e.name, shape_str(src), shape_str(e.param)), 2)
    end
  end
  if strict then
    local extra = {}
    for k in pairs(sd) do if not known[k] then extra[#extra + 1] = tostring(k) end end
    if #extra > 0 then
      table.sort(extra)
      error("load_state_dict: unexpected key(s) " .. table.concat(extra, ", "), 2)
    end
  end
  for _, e in ipairs(named) do
    if sd[e.name] ~= nil then e.param:copy_(sd[e.name]) end
  end
  return self
end

-- Selects parameters: nil -> all; a tensor -> itself; a string -> the
-- parameter of that name or every parameter under that module prefix.
local function select_params(self, what, fname)
  if what == nil then return self:parameters() end
  if is_tensor(what) then return { what } end
  if type(what) ~= "string" then
    error(fname .. ": parameter name, tensor or nothing expected, got " .. type(what), 3)
  end
  local out = {}
  for _, e in ipairs(self:named_parameters()) do
    if e.name == what or e.name:sub(1, #what + 1) == what .. "." then out[#out + 1] = e.param end
  end
  if #out == 0 then error(("%s: no parameter or module named '%s'"):format(fname, what), 3) end
  return out
end

-- Frozen parameters stop requiring a gradient: backward skips their weight GEMMs.
function Module:freeze(what)
  for _, p in ipairs(select_params(self, what, "freeze")) do p:requires_grad(false) end
  return self
end

function Module:unfreeze(what)
  for _, p in ipairs(select_params(self, what, "unfreeze")) do p:requires_grad(true) end
  return self
end

function nn.freeze(x)
  if is_tensor(x) then x:requires_grad(false) return x end
  return x:freeze()
end

function nn.unfreeze(x)
  if is_tensor(x) then x:requires_grad(true) return x end
  return x:unfreeze()
end

function Module:extra_repr() return "" end

function Module:repr(indent)
  indent = indent or ""
  local head = self._class .. "(" .. self:extra_repr() .. ")"
  if #self._children == 0 then return head end
  local lines = { self._class .. "(" .. self:extra_repr() }
  for _, c in ipairs(self._children) do
    lines[#lines + 1] = indent .. "  (" .. c.name .. "): " .. c.module:repr(indent .. "  ")
  end
  lines[#lines + 1] = indent .. ")"
  return table.concat(lines, "\n")
end

-- ---- initialisation --------------------------------------------------------------

-- U(-bound, bound); PyTorch's default for Linear/Conv (kaiming_uniform with
-- a = sqrt(5)) gives bound = 1/sqrt(fan_in).
local function uniform(shape, bound, dtype)
  return core.rand(shape, { low = -bound, high = bound, dtype = dtype })
end

-- ---- layers --------------------------------------------------------------------------

local Linear = class("Linear")
nn.Linear = Linear

-- Linear(in, out [, {bias = true, dtype = "float32", init = "torch"|"kaiming"}])
-- init "torch" (default): PyTorch's Kaiming-uniform, bound 1/sqrt(in);
-- "kaiming": He-uniform for ReLU, bound sqrt(6/in).
function Linear.new(nin, nout, opts)
  if type(opts) == "boolean" then opts = { bias = opts } end
  opts = opts_of(opts)
  check_int(nin, "Linear: in_features", 1, 2)
  check_int(nout, "Linear: out_features", 1, 2)
  local self = Module.new(Linear)
  self.in_features, self.out_features = nin, nout
  local bound = 1 / math.sqrt(nin)
  local wb = opts.init == "kaiming" and math.sqrt(6 / nin) or bound
  self:add_param("weight", uniform({ nout, nin }, wb, opts.dtype))
  if opts.bias ~= false then self:add_param("bias", uniform({ nout }, bound, opts.dtype)) end
  return self
end

function Linear:forward(x) return core.linear(x, self.weight, self.bias) end

function Linear:extra_repr()
  return ("%d -> %d%s"):format(self.in_features, self.out_features, self.bias and "" or ", no bias")
end

local Conv2d = class("Conv2d")
nn.Conv2d = Conv2d

-- Conv2d(in, out, k [, {stride = 1, pad = 0, bias = true, dtype, init}])
function Conv2d.new(cin, cout, k, opts)
  opts = opts_of(opts)
  check_int(cin, "Conv2d: in_channels", 1, 2)
  check_int(cout, "Conv2d: out_channels", 1, 2)
  check_int(k, "Conv2d: kernel size", 1, 2)
  local self = Module.new(Conv2d)
  self.in_channels, self.out_channels, self.k = cin, cout, k
  self.stride = check_int(opts.stride or 1, "Conv2d: stride", 1, 2)
  self.pad = check_int(opts.pad or 0, "Conv2d: pad", 0, 2)
  local fan_in = cin * k * k
  local bound = 1 / math.sqrt(fan_in)
  local wb = opts.init == "kaiming" and math.sqrt(6 / fan_in) or bound
  self:add_param("weight", uniform({ cout, cin, k, k }, wb, opts.dtype))
  if opts.bias ~= false then self:add_param("bias", uniform({ cout }, bound, opts.dtype)) end
  return self
end

function Conv2d:forward(x)
  return core.conv2d(x, self.weight, self.bias, { stride = self.stride, pad = self.pad })
end

function Conv2d:extra_repr()
  return ("%d -> %d, k=%d, stride=%d, pad=%d"):format(self.in_channels, self.out_channels, self.k,
    self.stride, self.pad)
end

local LayerNorm = class("LayerNorm")
nn.LayerNorm = LayerNorm

-- LayerNorm(dim [, {eps = 1e-5, affine = true, dtype}]) over the last dim
function LayerNorm.new(dim, opts)
  opts = opts_of(opts)
  check_int(dim, "LayerNorm: dim", 1, 2)
  local self = Module.new(LayerNorm)
  self.dim, self.eps = dim, opts.eps or 1e-5
  if opts.affine ~= false then
    self:add_param("weight", core.ones({ dim }, opts.dtype))
    self:add_param("bias", core.zeros({ dim }, opts.dtype))
  end
  return self
end

function LayerNorm:forward(x) return core.layer_norm(x, self.weight, self.bias, self.eps) end
function LayerNorm:extra_repr() return tostring(self.dim) end

local Affine = class("Affine")
nn.Affine = Affine

-- Affine(dim [, {init = 1, bias = true, dtype}]): y = x*alpha + beta on the
-- last dim (ResMLP's normalisation and layer scale).
function Affine.new(dim, opts)
  opts = opts_of(opts)
  check_int(dim, "Affine: dim", 1, 2)
  local self = Module.new(Affine)
  self.dim = dim
  self:add_param("alpha", core.full({ dim }, opts.init or 1.0, opts.dtype))
  if opts.bias ~= false then self:add_param("beta", core.zeros({ dim }, opts.dtype)) end
  return self
end

function Affine:forward(x) return core.affine(x, self.alpha, self.beta) end
function Affine:extra_repr() return tostring(self.dim) end

local ChannelAffine = class("ChannelAffine")
nn.ChannelAffine = ChannelAffine

-- ChannelAffine(C [, {init = 1, dtype}]): per-channel scale and shift of an
-- NCHW tensor (the normalisation-free stand-in for batch norm in ResNet).
function ChannelAffine.new(c, opts)
  opts = opts_of(opts)
  check_int(c, "ChannelAffine: channels", 1, 2)
  local self = Module.new(ChannelAffine)
  self.channels = c
  self:add_param("weight", core.full({ c }, opts.init or 1.0, opts.dtype))
  self:add_param("bias", core.zeros({ c }, opts.dtype))
  return self
end

function ChannelAffine:forward(x)
  local c = self.channels
  return x * self.weight:reshape(1, c, 1, 1) + self.bias:reshape(1, c, 1, 1)
end

function ChannelAffine:extra_repr() return tostring(self.channels) end

-- Activations and other parameter-free layers.
local function simple(name, fn)
  local c = class(name)
  c.new = function() return Module.new(c) end
  c.forward = function(_, x) return fn(x) end
  nn[name] = c
  return c
end

simple("ReLU", function(x) return x:relu() end)
simple("GELU", function(x) return x:gelu() end)
simple("Sigmoid", function(x) return x:sigmoid() end)
simple("Tanh", function(x) return x:tanh() end)
simple("Identity", function(x) return x end)

local Flatten = class("Flatten")
nn.Flatten = Flatten

-- Flatten([first = 2 [, last = -1]]): (N, C, H, W) -> (N, C*H*W)
function Flatten.new(first, last)
  local self = Module.new(Flatten)
  self.first, self.last = first or 2, last or -1
  return self
end

function Flatten:forward(x) return x:flatten(self.first, self.last) end

local Dropout = class("Dropout")
nn.Dropout = Dropout

function Dropout.new(p)
  p = p or 0.5
  if type(p) ~= "number" or p < 0 or p >= 1 then error("Dropout: p must be in [0, 1)", 2) end
  local self = Module.new(Dropout)
  self.p = p
  return self
end

function Dropout:forward(x)
  if not self.training or self.p == 0 then return x end
  return core.dropout(x, self.p, true)
end

function Dropout:extra_repr() return "p=" .. self.p end

local MaxPool2d = class("MaxPool2d")
nn.MaxPool2d = MaxPool2d

function MaxPool2d.new(k, stride, pad)
  local self = Module.new(MaxPool2d)
  self.k = check_int(k, "MaxPool2d: kernel size", 1, 2)
  self.stride, self.pad = stride or k, pad or 0
  return self
end

function MaxPool2d:forward(x) return core.max_pool2d(x, self.k, self.stride, self.pad) end

local AvgPool2d = class("AvgPool2d")
nn.AvgPool2d = AvgPool2d

function AvgPool2d.new(k, stride, pad)
  local self = Module.new(AvgPool2d)
  self.k = check_int(k, "AvgPool2d: kernel size", 1, 2)
  self.stride, self.pad = stride or k, pad or 0
  return self
end

function AvgPool2d:forward(x) return core.avg_pool2d(x, self.k, self.stride, self.pad) end

local Embedding = class("Embedding")
nn.Embedding = Embedding

-- Embedding(V, D [, {std = 1, dtype}]): rows drawn from N(0, std^2);
-- indices are 0-based int64/int32 (token ids as stored).
function Embedding.new(v, d, opts)
  opts = opts_of(opts)
  check_int(v, "Embedding: vocabulary size", 1, 2)
  check_int(d, "Embedding: dim", 1, 2)
  local self = Module.new(Embedding)
  self.num, self.dim = v, d
  self:add_param("weight", core.randn({ v, d }, { std = opts.std or 1.0, dtype = opts.dtype }))
  return self
end

function Embedding:forward(idx) return core.embedding(idx, self.weight) end
function Embedding:extra_repr() return ("%d, %d"):format(self.num, self.dim) end

-- ---- containers ---------------------------------------------------------------------

local function list_args(...)
  local first = ...
  if select("#", ...) == 1 and type(first) == "table" and getmetatable(first) == nil then return first end
  return { ... }
end

local ModuleList = class("ModuleList")
nn.ModuleList = ModuleList

-- ModuleList{m1, m2, ...}: children named "1", "2", ...; no forward.
function ModuleList.new(...)
  local self = Module.new(ModuleList)
  for _, m in ipairs(list_args(...)) do self:add(m) end
  return self
end

function ModuleList:add(m)
  local i = #self._children + 1
  self:add_module(tostring(i), m)
  self[i] = m
  return self
end

function ModuleList:__len() return #self._children end

local Sequential = class("Sequential", ModuleList)
nn.Sequential = Sequential
Sequential.__len = ModuleList.__len

-- Sequential(m1, m2, ...) or Sequential{m1, m2, ...}
function Sequential.new(...)
  local self = Module.new(Sequential)
  for _, m in ipairs(list_args(...)) do self:add(m) end
  return self
end

function Sequential:forward(x)
  for _, c in ipairs(self._children) do x = c.module:forward(x) end
  return x
end

local Residual = class("Residual")
nn.Residual = Residual

-- Residual(f): x + f(x)
function Residual.new(f)
  local self = Module.new(Residual)
  self:add_module("fn", f)
  return self
end

function Residual:forward(x) return x + self.fn:forward(x) end

-- ---- attention ------------------------------------------------------------------------

local MultiHeadSelfAttention = class("MultiHeadSelfAttention")
nn.MultiHeadSelfAttention = MultiHeadSelfAttention

-- MultiHeadSelfAttention(dim, heads [, {bias = true, causal = true, dtype}])
-- or MultiHeadSelfAttention{dim = ..., heads = ..., bias =, causal =, dtype =}:
-- projections q, k, v and out; x (B,T,dim) or (T,dim) -> same shape.
function MultiHeadSelfAttention.new(dim, heads, opts)
  if type(dim) == "table" then dim, heads, opts = dim.dim, dim.heads, dim end
  opts = opts_of(opts)
  check_int(dim, "MultiHeadSelfAttention: dim", 1, 2)
  check_int(heads, "MultiHeadSelfAttention: heads", 1, 2)
  if dim % heads ~= 0 then
    error(("MultiHeadSelfAttention: dim %d is not divisible by %d heads"):format(dim, heads), 2)
  end
  local self = Module.new(MultiHeadSelfAttention)
  self.dim, self.heads = dim, heads
  self.causal = opts.causal ~= false
  local lo = { bias = opts.bias, dtype = opts.dtype }
  for _, name in ipairs { "q", "k", "v", "out" } do self:add_module(name, Linear.new(dim, dim, lo)) end
  return self
end

function MultiHeadSelfAttention:forward(x)
  local squeeze_batch = x:dim() == 2
  if squeeze_batch then x = x:unsqueeze(1) end
  if x:dim() ~= 3 then error("MultiHeadSelfAttention: input must be (B,T,dim) or (T,dim), got " .. shape_str(x), 2) end
  local s = x:shape()
  local B, T, C, H = s[1], s[2], s[3], self.heads
  local hd = C // H
  local function heads(t) -- (B,T,C) -> (B*H,T,hd)
    return t:reshape(B, T, H, hd):permute(1, 3, 2, 4):reshape(B * H, T, hd)
  end
  local q, k, v = heads(self.q:forward(x)), heads(self.k:forward(x)), heads(self.v:forward(x))
  local att = q:matmul(k:transpose(2, 3), 1 / math.sqrt(hd)) -- (B*H,T,T), the scale inside the GEMM
  att = att:softmax(self.causal)
  local y = att:matmul(v):reshape(B, H, T, hd):permute(1, 3, 2, 4):reshape(B, T, C)
  y = self.out:forward(y)
  if squeeze_batch then y = y:squeeze(1) end
  return y
end

function MultiHeadSelfAttention:extra_repr()
  return ("dim=%d, heads=%d%s"):format(self.dim, self.heads, self.causal and ", causal" or "")
end

-- ---- models ------------------------------------------------------------------------------

local ACTS = { relu = "relu", gelu = "gelu", tanh = "tanh", sigmoid = "sigmoid" }

local MLP = class("MLP")
nn.MLP = MLP

-- MLP{sizes = {784, 256, 256, 10}, act = "relu", dropout = 0, bias = true}:
-- linears layers.1 .. layers.n with the activation (and dropout) between
-- them; inputs with more than 2 dims are flattened to (N, -1).
function MLP.new(cfg)
  cfg = opts_of(cfg)
  local sizes = cfg.sizes
  if type(sizes) ~= "table" or #sizes < 2 then error("MLP: sizes must list at least 2 widths", 2) end
  for i, s in ipairs(sizes) do check_int(s, "MLP: sizes[" .. i .. "]", 1, 2) end
  local act = cfg.act or "relu"
  if not ACTS[act] then error("MLP: unknown activation '" .. tostring(act) .. "'", 2) end
  local self = Module.new(MLP)
  self.sizes, self.act, self.p = sizes, act, cfg.dropout or 0
  if type(self.p) ~= "number" or self.p < 0 or self.p >= 1 then error("MLP: dropout must be in [0, 1)", 2) end
  local layers = ModuleList.new()
  for i = 1, #sizes - 1 do
    layers:add(Linear.new(sizes[i], sizes[i + 1], { bias = cfg.bias, dtype = cfg.dtype }))
  end
  self:add_module("layers", layers)
  return self
end

function MLP:forward(x)
  if x:dim() > 2 then x = x:flatten(2) end
  local n = #self.layers._children
  for i = 1, n do
    x = self.layers[i]:forward(x)
    if i < n then
      x = x[self.act](x)
      if self.p > 0 and self.training then x = core.dropout(x, self.p, true) end
    end
  end
  return x
end

function MLP:extra_repr() return table.concat(self.sizes, "-") .. ", " .. self.act end

-- Basic block without batch norm: conv-affine-relu-conv-affine, plus the
-- shortcut (a strided 1x1 conv when the shape changes), then relu.  The
-- second affine starts small so every block starts close to identity.
local BasicBlock = class("BasicBlock")
nn.BasicBlock = BasicBlock

function BasicBlock.new(cin, cout, stride, opts)
  opts = opts_of(opts)
  local self = Module.new(BasicBlock)
  local dt = opts.dtype
  self:add_module("conv1", Conv2d.new(cin, cout, 3, { stride = stride, pad = 1, bias = false, init = "kaiming", dtype = dt }))
  self:add_module("affine1", ChannelAffine.new(cout, { dtype = dt }))
  self:add_module("conv2", Conv2d.new(cout, cout, 3, { pad = 1, bias = false, init = "kaiming", dtype = dt }))
  self:add_module("affine2", ChannelAffine.new(cout, { init = opts.residual_init or 0.1, dtype = dt }))
  if stride ~= 1 or cin ~= cout then
    self:add_module("shortcut", Conv2d.new(cin, cout, 1, { stride = stride, bias = false, dtype = dt }))
  end
  return self
end

function BasicBlock:forward(x)
  local y = self.affine1:forward(self.conv1:forward(x)):relu()
  y = self.affine2:forward(self.conv2:forward(y))
  local s = self.shortcut and self.shortcut:forward(x) or x
  return (y + s):relu()
end

local ResNet = class("ResNet")
nn.ResNet = ResNet

-- ResNet{channels = 1, image = 28, classes = 10, widths = {16, 32, 64}, blocks = 1}:
-- 3x3 conv stem, `blocks` basic blocks per stage (stages after the first
-- halve the resolution), global average pool, linear head.
function ResNet.new(cfg)
  cfg = opts_of(cfg)
  local self = Module.new(ResNet)
  self.channels = check_int(cfg.channels or 1, "ResNet: channels", 1, 2)
  self.image = check_int(cfg.image or 28, "ResNet: image", 1, 2)
  self.classes = check_int(cfg.classes or 10, "ResNet: classes", 1, 2)
  local widths = cfg.widths or { 16, 32, 64 }
  local nblocks = check_int(cfg.blocks or 1, "ResNet: blocks", 1, 2)
  local dt = cfg.dtype
  self:add_module("stem", Conv2d.new(self.channels, widths[1], 3, { pad = 1, bias = false, init = "kaiming", dtype = dt }))
  self:add_module("stem_affine", ChannelAffine.new(widths[1], { dtype = dt }))
  local blocks, cin = ModuleList.new(), widths[1]
  for s, w in ipairs(widths) do
    for b = 1, nblocks do
      local stride = (s > 1 and b == 1) and 2 or 1
      blocks:add(BasicBlock.new(cin, w, stride, { residual_init = cfg.residual_init, dtype = dt }))
      cin = w
    end
  end
  self:add_module("blocks", blocks)
  self:add_module("head", Linear.new(cin, self.classes, { dtype = dt }))
  return self
end

function ResNet:forward(x)
  if x:dim() == 2 then x = x:reshape(-1, self.channels, self.image, self.image) end
  x = self.stem_affine:forward(self.stem:forward(x)):relu()
  for i = 1, #self.blocks._children do x = self.blocks[i]:forward(x) end
  x = x:mean(4):mean(3) -- global average pool: (N, C)
  return self.head:forward(x)
end

-- ResMLP block: token mixing across patches, then a per-patch MLP, each a
-- residual branch between Affine layers.  Its linears are token_mix, fc1, fc2.
local ResMLPBlock = class("ResMLPBlock")
nn.ResMLPBlock = ResMLPBlock

function ResMLPBlock.new(patches, dim, hidden, opts)
  opts = opts_of(opts)
  local self = Module.new(ResMLPBlock)
  local dt, ls = opts.dtype, opts.layerscale or 0.1
  self:add_module("affine1", Affine.new(dim, { dtype = dt }))
  self:add_module("token_mix", Linear.new(patches, patches, { dtype = dt }))
  self:add_module("scale1", Affine.new(dim, { init = ls, dtype = dt }))
  self:add_module("affine2", Affine.new(dim, { dtype = dt }))
  self:add_module("fc1", Linear.new(dim, hidden, { dtype = dt }))
  self:add_module("fc2", Linear.new(hidden, dim, { dtype = dt }))
  self:add_module("scale2", Affine.new(dim, { init = ls, dtype = dt }))
  return self
end

function ResMLPBlock:forward(x) -- x (N, P, D)
  local y = self.affine1:forward(x):transpose(2, 3)      -- (N, D, P)
  y = self.token_mix:forward(y):transpose(2, 3)          -- (N, P, D)
  x = x + self.scale1:forward(y)
  y = self.fc2:forward(self.fc1:forward(self.affine2:forward(x)):gelu())
  return x + self.scale2:forward(y)
end

local ResMLP = class("ResMLP")
nn.ResMLP = ResMLP

-- ResMLP{image = 28, patch = 7, channels = 1, dim = 128, depth = 4,
--        classes = 10, expansion = 4, layerscale = 0.1}
function ResMLP.new(cfg)
  cfg = opts_of(cfg)
  local self = Module.new(ResMLP)
  self.image = check_int(cfg.image or 28, "ResMLP: image", 1, 2)
  self.patch = check_int(cfg.patch or 7, "ResMLP: patch", 1, 2)
  self.channels = check_int(cfg.channels or 1, "ResMLP: channels", 1, 2)
  self.dim = check_int(cfg.dim or 128, "ResMLP: dim", 1, 2)
  self.depth = check_int(cfg.depth or 4, "ResMLP: depth", 1, 2)
  self.classes = check_int(cfg.classes or 10, "ResMLP: classes", 1, 2)
  if self.image % self.patch ~= 0 then
    error(("ResMLP: patch %d does not divide image %d"):format(self.patch, self.image), 2)
  end
  self.grid = self.image // self.patch
  self.patches = self.grid * self.grid
  local hidden = (cfg.expansion or 4) * self.dim
  local dt = cfg.dtype
  self:add_module("patch_embed", Linear.new(self.channels * self.patch * self.patch, self.dim, { dtype = dt }))
  local blocks = ModuleList.new()
  for _ = 1, self.depth do
    blocks:add(ResMLPBlock.new(self.patches, self.dim, hidden, { layerscale = cfg.layerscale, dtype = dt }))
  end
  self:add_module("blocks", blocks)
  self:add_module("norm", Affine.new(self.dim, { dtype = dt }))
  self:add_module("head", Linear.new(self.dim, self.classes, { dtype = dt }))
  return self
end

-- x (N, C, H, W) or (N, C*H*W) -> logits (N, classes)
function ResMLP:forward(x)
  local C, p, g = self.channels, self.patch, self.grid
  local n = x:size(1)
  x = x:reshape(n, C, g, p, g, p):permute(1, 3, 5, 2, 4, 6):reshape(n, self.patches, C * p * p)
  x = self.patch_embed:forward(x)
  for i = 1, self.depth do x = self.blocks[i]:forward(x) end
  x = self.norm:forward(x):mean(2)
  return self.head:forward(x)
end

-- Pre-LayerNorm transformer block with causal self-attention.
local GPTBlock = class("GPTBlock")
nn.GPTBlock = GPTBlock

function GPTBlock.new(dim, heads, ffn, opts)
  opts = opts_of(opts)
  local self = Module.new(GPTBlock)
  local dt = opts.dtype
  self:add_module("ln1", LayerNorm.new(dim, { dtype = dt }))
  self:add_module("attn", MultiHeadSelfAttention.new(dim, heads, { dtype = dt }))
  self:add_module("ln2", LayerNorm.new(dim, { dtype = dt }))
  self:add_module("fc1", Linear.new(dim, ffn, { dtype = dt }))
  self:add_module("fc2", Linear.new(ffn, dim, { dtype = dt }))
  self.p = opts.dropout or 0
  return self
end

function GPTBlock:forward(x)
  local function drop(t)
    if self.p > 0 and self.training then return core.dropout(t, self.p, true) end
    return t
  end
  x = x + drop(self.attn:forward(self.ln1:forward(x)))
  return x + drop(self.fc2:forward(self.fc1:forward(self.ln2:forward(x)):gelu()))
end

local GPT = class("GPT")
nn.GPT = GPT

-- GPT{vocab = 256, context = 64, dim = 128, heads = 4, layers = 2, ffn = 4*dim, dropout = 0}
-- idx (B,T) or (T) int64 token ids (0-based), T <= context -> logits (B,T,vocab)
function GPT.new(cfg)
  cfg = opts_of(cfg)
  local self = Module.new(GPT)
  self.vocab = check_int(cfg.vocab or 256, "GPT: vocab", 1, 2)
  self.context = check_int(cfg.context or 64, "GPT: context", 1, 2)
  self.dim = check_int(cfg.dim or 128, "GPT: dim", 1, 2)
  self.heads = check_int(cfg.heads or 4, "GPT: heads", 1, 2)
  self.layers = check_int(cfg.layers or 2, "GPT: layers", 1, 2)
  self.ffn = check_int(cfg.ffn or 4 * self.dim, "GPT: ffn", 1, 2)
  if self.dim % self.heads ~= 0 then
    error(("GPT: dim %d is not divisible by %d heads"):format(self.dim, self.heads), 2)
  end
  local dt = cfg.dtype
  self:add_module("tok_emb", Embedding.new(self.vocab, self.dim, { std = 0.02, dtype = dt }))
  self:add_module("pos_emb", Embedding.new(self.context, self.dim, { std = 0.02, dtype = dt }))
  local blocks = ModuleList.new()
  for _ = 1, self.layers do
    blocks:add(GPTBlock.new(self.dim, self.heads, self.ffn, { dropout = cfg.dropout, dtype = dt }))
  end
  self:add_module("blocks", blocks)
  self:add_module("ln_f", LayerNorm.new(self.dim, { dtype = dt }))
  self:add_module("head", Linear.new(self.dim, self.vocab, { bias = false, dtype = dt }))
  self._pos = {}
  return self
end

function GPT:forward(idx)
  local single = idx:dim() == 1
  if single then idx = idx:unsqueeze(1) end
  if idx:dim() ~= 2 then error("GPT: token ids must be (B,T) or (T), got " .. shape_str(idx), 2) end
  local T = idx:size(2)
  if T > self.context then
    error(("GPT: sequence length %d exceeds the context %d"):format(T, self.context), 2)
  end
  local dev = idx:device()
  local key = dev .. ":" .. T
  local pos = self._pos[key]
  if not pos then
    pos = core.arange(T, { device = dev })
    self._pos[key] = pos
  end
  local x = self.tok_emb:forward(idx) + self.pos_emb:forward(pos) -- (B,T,D) + (T,D)
  for i = 1, self.layers do x = self.blocks[i]:forward(x) end
  local logits = self.head:forward(self.ln_f:forward(x))
  if single then logits = logits:squeeze(1) end
  return logits
end

function GPT:extra_repr()
  return ("vocab=%d, context=%d, dim=%d, heads=%d, layers=%d, ffn=%d"):format(self.vocab, self.context,
    self.dim, self.heads, self.layers, self.ffn)
end

-- ---- losses ---------------------------------------------------------------------------------

-- cross_entropy(logits (N,C) or (B,T,C), targets (N) or (B,T) int64 with
-- 0-based classes, or a Lua list of them): mean over all positions.
function nn.cross_entropy(logits, targets)
  if type(targets) == "table" then targets = core.tensor(targets, { dtype = "int64", device = logits:device() }) end
  if logits:dim() > 2 then
    local c = logits:size(-1)
    logits = logits:reshape(-1, c)
    targets = targets:reshape(-1)
  end
  return core.cross_entropy(logits, targets)
end

function nn.mse_loss(a, b)
  local d = a - b
  return (d * d):mean()
end

return nn
