-- test_nn.lua — squeeze.nn: modules, parameter naming and bookkeeping,
-- training by hand, state dicts, freezing, and every model's forward and
-- backward.
local T = dofile("tests/lua/testlib.lua")
local sq = require "squeeze"
local nn = sq.nn

local function shape(t) return table.concat(t:shape(), "x") end
local function mem() collectgarbage(); collectgarbage(); return sq.memory().cpu.current end

sq.manual_seed(1234)

local function names(m)
  local out = {}
  for i, e in ipairs(m:named_parameters()) do out[i] = e.name end
  return table.concat(out, " ")
end

-- Every parameter that requires a gradient received one.
local function all_have_grads(m)
  for _, e in ipairs(m:named_parameters()) do
    if e.param:requires_grad() and not e.param:grad() then return false, e.name end
  end
  return true
end

T.test("Linear: parameters, init, forward", function()
  local base = mem().param
  local l = nn.Linear(5, 3)
  T.eq(names(l), "weight bias")
  T.eq(shape(l.weight), "3x5")
  T.eq(shape(l.bias), "3")
  T.eq(l.weight:category(), "param")
  T.check(l.weight:requires_grad() and l.bias:requires_grad(), "parameters require grad")
  T.eq(mem().param - base, (15 + 3) * 4, "parameters are charged to param")
  T.eq(l:num_params(), 18)
  local bound = 1 / math.sqrt(5)
  T.check(l.weight:abs():max():item() <= bound and l.bias:abs():max():item() <= bound, "Kaiming-uniform bound")
  local nb = nn.Linear(5, 3, { bias = false })
  T.eq(names(nb), "weight")
  T.eq(names(nn.Linear(2, 2, false)), "weight")
  local x = sq.randn(4, 5)
  T.allnear(l(x), sq.linear(x, l.weight, l.bias))
  T.eq(shape(l(sq.randn(2, 7, 5))), "2x7x3")
  T.raises(function() nn.Linear(0, 3) end, "Linear: in_features must be an integer >= 1")
  T.raises(function() nn.Linear(2.5, 3) end, "in_features must be an integer")
  T.raises(function() l(sq.randn(4, 6)) end, "input 4x6 does not match weight 3x5")
  T.eq(tostring(l), "Linear(5 -> 3)")
end)

T.test("Linear gradients match a hand computation", function()
  local l = nn.Linear(3, 4, { dtype = "float64" })
  local x = sq.randn({ 2, 3 }, "float64"):requires_grad(true)
  local c = sq.randn({ 2, 4 }, "float64")
  local loss = (l(x) * c):sum()
  loss:backward()
  local X, C, W = x:tolist(), c:tolist(), l.weight:tolist()
  local gW, gb, gx = l.weight:grad():tolist(), l.bias:grad():tolist(), x:grad():tolist()
  for i = 1, 4 do
    local db = 0
    for n = 1, 2 do db = db + C[n][i] end
    T.near(gb[i], db, 1e-12)
    for j = 1, 3 do
      local dw = 0
      for n = 1, 2 do dw = dw + C[n][i] * X[n][j] end
      T.near(gW[i][j], dw, 1e-12)
    end
  end
  for n = 1, 2 do
    for j = 1, 3 do
      local dx = 0
      for i = 1, 4 do dx = dx + C[n][i] * W[i][j] end
      T.near(gx[n][j], dx, 1e-12)
    end
  end
end)

T.test("MLP: names, parameter order, num_params, memory", function()
  local base = mem().param
  local m = nn.MLP { sizes = { 784, 256, 256, 10 } }
  T.eq(names(m), "layers.1.weight layers.1.bias layers.2.weight layers.2.bias layers.3.weight layers.3.bias")
  local n = 784 * 256 + 256 + 256 * 256 + 256 + 256 * 10 + 10
  T.eq(m:num_params(), n)
  T.eq(#m:parameters(), 6)
  T.eq(mem().param - base, n * 4)
  T.eq(shape(m(sq.randn(2, 1, 28, 28))), "2x10") -- images are flattened
  T.raises(function() nn.MLP { sizes = { 3 } } end, "MLP: sizes must list at least 2 widths")
  T.raises(function() nn.MLP { sizes = { 3, 2 }, act = "swish" } end, "unknown activation 'swish'")
  T.check(tostring(m):find("MLP(784-256-256-10, relu", 1, true), "repr")
end)

T.test("a tiny MLP learns: loss falls over 50 SGD steps by hand", function()
  local x = sq.randn(64, 8)
  local teacher = sq.randn(8, 3)
  local y = x:matmul(teacher):argmax(2) -- 0-based class labels
  local m = nn.MLP { sizes = { 8, 32, 3 } }
  local first, last
  for step = 1, 50 do
    local loss = nn.cross_entropy(m(x), y)
    if step == 1 then first = loss:item() end
    last = loss:item()
    m:zero_grad()
    loss:backward()
    T.eq(mem().saved, 0, "backward frees what the forward saved")
    for _, p in ipairs(m:parameters()) do p:add_(p:grad(), -0.5) end
  end
  T.check(last < 0.5 * first, ("loss %.4f -> %.4f"):format(first, last))
end)

T.test("memory: parameters under param, gradients under grad, saved freed by backward", function()
  local m0 = mem()
  local m = nn.MLP { sizes = { 16, 32, 4 } }
  local n = m:num_params()
  local m1 = mem()
  T.eq(m1.param - m0.param, n * 4)
  local loss = nn.cross_entropy(m(sq.randn(8, 16)), sq.tensor({ 0, 1, 2, 3, 0, 1, 2, 3 }, "int64"))
  T.check(mem().saved > 0, "the forward saved activations")
  loss:backward()
  local m2 = mem()
  T.eq(m2.saved, 0)
  T.eq(m2.grad - m0.grad, n * 4)
  m:zero_grad()
  T.eq(mem().grad, m0.grad)
end)

T.test("state_dict roundtrip and load errors", function()
  local a, b = nn.MLP { sizes = { 6, 5, 2 } }, nn.MLP { sizes = { 6, 5, 2 } }
  local x = sq.randn(3, 6)
  T.check((a(x) - b(x)):abs():max():item() > 0, "different inits")
  local sd = a:state_dict()
  T.eq(shape(sd["layers.1.weight"]), "5x6")
  T.check(not sd["layers.1.weight"]:requires_grad(), "state dict entries are detached")
  T.eq(b:load_state_dict(sd), b)
  T.allnear(b(x), a(x), 0)
  T.check(b.layers[1].weight:requires_grad(), "loading keeps parameters trainable")
  local c = nn.MLP { sizes = { 6, 4, 2 } }
  local before = c.layers[2].weight:tolist()
  T.raises(function() c:load_state_dict(sd) end,
    "load_state_dict: 'layers.1.weight' has shape 5x6 in the state dict but 4x6 in the model")
  T.allnear(c.layers[2].weight, before, 0) -- nothing copied by a failed load
  local partial = { ["layers.1.weight"] = sd["layers.1.weight"] }
  T.raises(function() b:load_state_dict(partial) end, "load_state_dict: missing key 'layers.1.bias'")
  b:load_state_dict(partial, false)
  local extra = a:state_dict()
  extra.junk = sq.zeros(1)
  T.raises(function() b:load_state_dict(extra) end, "unexpected key(s) junk")
  extra["layers.1.bias"] = 5
  T.raises(function() b:load_state_dict(extra) end, "'layers.1.bias' is a number, not a tensor")
end)

T.test("freeze makes weight-gradient GEMMs stop", function()
  local m = nn.MLP { sizes = { 8, 16, 16, 4 } }
  local x, y = sq.randn(5, 8), sq.tensor({ 0, 1, 2, 3, 0 }, "int64")
  local function wgemms()
    sq.reset_stats()
    m:zero_grad()
    nn.cross_entropy(m(x), y):backward()
    return sq.stats().weight_grad_gemms
  end
  T.eq(wgemms(), 3)
  m:freeze("layers.1")
  T.check(not m.layers[1].weight:requires_grad() and not m.layers[1].bias:requires_grad())
  T.eq(wgemms(), 2)
  T.eq(m.layers[1].weight:grad(), nil)
  m.layers[2]:freeze()
  T.eq(wgemms(), 1)
  m:unfreeze()
  T.eq(wgemms(), 3)
  m:freeze(m.layers[3].weight)
  T.eq(wgemms(), 2)
  nn.unfreeze(m.layers[3].weight)
  m:freeze("layers.2.weight")
  T.eq(wgemms(), 2)
  m:unfreeze()
  nn.freeze(m)
  T.raises(function() nn.cross_entropy(m(x), y):backward() end, "does not require a gradient")
  T.raises(function() m:freeze("nope") end, "freeze: no parameter or module named 'nope'")
end)

T.test("train/eval and Dropout", function()
  local d = nn.Dropout(0.5)
  local x = sq.ones(1000)
  T.check(d.training)
  T.check(d(x):sum():item() ~= 1000, "dropout active in training")
  d:eval()
  T.eq(d(x):sum():item(), 1000)
  local m = nn.MLP { sizes = { 4, 8, 2 }, dropout = 0.5 }
  m:eval()
  local xi = sq.randn(3, 4)
  T.allnear(m(xi), m(xi), 0)
  T.check(not m.layers[1].training, "eval reaches children")
  m:train()
  T.check(m.layers[1].training)
  T.raises(function() nn.Dropout(1) end, "Dropout: p must be in [0, 1)")
end)

T.test("layers: Conv2d LayerNorm Affine ChannelAffine activations Flatten pools Embedding", function()
  local c = nn.Conv2d(3, 8, 3, { pad = 1 })
  T.eq(names(c), "weight bias")
  local x = sq.randn(2, 3, 10, 10)
  T.eq(shape(c(x)), "2x8x10x10")
  T.eq(shape(nn.Conv2d(3, 4, 3, { stride = 2, bias = false })(x)), "2x4x4x4")
  local ln = nn.LayerNorm(10)
  T.eq(names(ln), "weight bias")
  T.allnear(ln(x):mean(-1), sq.zeros(2, 3, 10), 1e-5)
  local af = nn.Affine(10, { init = 2 })
  T.eq(names(af), "alpha beta")
  T.allnear(af(x), x * 2, 1e-6)
  local ca = nn.ChannelAffine(3, { init = 3 })
  T.allnear(ca(x), x * 3, 1e-6)
  T.allnear(nn.ReLU()(x), x:relu(), 0)
  T.allnear(nn.GELU()(x), x:gelu(), 0)
  T.allnear(nn.Sigmoid()(x), x:sigmoid(), 0)
  T.allnear(nn.Tanh()(x), x:tanh(), 0)
  T.eq(shape(nn.Flatten()(x)), "2x300")
  T.eq(shape(nn.MaxPool2d(2)(x)), "2x3x5x5")
  T.eq(shape(nn.AvgPool2d(2, 1)(x)), "2x3x9x9")
  local e = nn.Embedding(7, 4)
  T.eq(shape(e(sq.tensor({ { 0, 6, 3 } }, "int64"))), "1x3x4")
  T.raises(function() e(sq.tensor({ 7 }, "int64")) end, "embedding")
end)

T.test("containers: Sequential, Residual, ModuleList", function()
  local s = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
  T.eq(names(s), "1.weight 1.bias 3.weight 3.bias")
  T.eq(#s, 3)
  T.eq(shape(s(sq.randn(5, 4))), "5x2")
  local s2 = nn.Sequential { nn.Linear(4, 4), nn.Tanh() }
  T.eq(#s2, 2)
  local r = nn.Residual(nn.Linear(4, 4))
  T.eq(names(r), "fn.weight fn.bias")
  local x = sq.randn(3, 4)
  T.allnear(r(x), x + r.fn(x), 1e-6)
  local outer = nn.Sequential(r, s)
  T.eq(names(outer), "1.fn.weight 1.fn.bias 2.1.weight 2.1.bias 2.3.weight 2.3.bias")
  local shared = nn.Sequential(r, r)
  T.eq(#shared:parameters(), 2, "a shared module's parameters are listed once")
end)

T.test("MultiHeadSelfAttention is causal and differentiable", function()
  local att = nn.MultiHeadSelfAttention(8, 2)
  T.eq(names(att), "q.weight q.bias k.weight k.bias v.weight v.bias out.weight out.bias")
  local x = sq.randn(2, 5, 8)
  local y = att(x)
  T.eq(shape(y), "2x5x8")
  local x2 = x:clone()
  x2:narrow(2, 5, 1):fill_(100) -- change only the last position
  local y2 = att(x2)
  T.allnear(y:narrow(2, 1, 4), y2:narrow(2, 1, 4), 1e-5)
  T.check((y:narrow(2, 5, 1) - y2:narrow(2, 5, 1)):abs():max():item() > 1e-3, "the last position sees itself")
  T.eq(shape(att(sq.randn(5, 8))), "5x8")
  T.eq(nn.MultiHeadSelfAttention { dim = 8, heads = 4 }.heads, 4)
  att(x):sum():backward()
  T.check(all_have_grads(att))
  T.raises(function() nn.MultiHeadSelfAttention(10, 3) end, "dim 10 is not divisible by 3 heads")
end)

T.test("ResNet forward shape and backward", function()
  local m = nn.ResNet { channels = 1, classes = 10, widths = { 4, 8 }, blocks = 1 }
  local x = sq.randn(2, 1, 28, 28)
  local out = m(x)
  T.eq(shape(out), "2x10")
  T.eq(shape(m(sq.randn(2, 784))), "2x10")
  nn.cross_entropy(out, sq.tensor({ 3, 7 }, "int64")):backward()
  T.check(all_have_grads(m))
  T.check(names(m):find("blocks.2.shortcut.weight", 1, true), "downsampling block has a shortcut")
  T.eq(mem().saved, 0)
end)

T.test("ResMLP forward shape, named linears, backward", function()
  local m = nn.ResMLP { image = 28, patch = 7, channels = 1, dim = 16, depth = 2, classes = 10 }
  local n = names(m)
  for _, k in ipairs { "blocks.1.token_mix.weight", "blocks.1.fc1.weight", "blocks.2.fc2.weight" } do
    T.check(n:find(k, 1, true), "has " .. k)
  end
  T.eq(shape(m.blocks[1].token_mix.weight), "16x16") -- 4x4 patches mix
  local out = m(sq.randn(3, 1, 28, 28))
  T.eq(shape(out), "3x10")
  nn.cross_entropy(out, sq.tensor({ 1, 2, 3 }, "int64")):backward()
  T.check(all_have_grads(m))
  T.eq(shape(nn.ResMLP { patch = 4, dim = 8, depth = 1 }(sq.randn(2, 784))), "2x10")
  T.raises(function() nn.ResMLP { image = 28, patch = 5 } end, "ResMLP: patch 5 does not divide image 28")
end)

T.test("GPT forward shape, loss and backward", function()
  local m = nn.GPT { vocab = 32, context = 8, dim = 16, heads = 2, layers = 2, ffn = 32 }
  local idx = sq.tensor({ { 1, 2, 3, 4, 5, 6 }, { 7, 8, 9, 10, 11, 12 } }, "int64")
  local logits = m(idx)
  T.eq(shape(logits), "2x6x32")
  T.eq(shape(m(sq.tensor({ 1, 2, 3 }, "int64"))), "3x32")
  local tgt = sq.tensor({ { 2, 3, 4, 5, 6, 7 }, { 8, 9, 10, 11, 12, 13 } }, "int64")
  local loss = nn.cross_entropy(logits, tgt)
  T.near(loss:item(), math.log(32), 0.3) -- near-uniform at init
  loss:backward()
  T.check(all_have_grads(m))
  T.eq(mem().saved, 0)
  T.check(names(m):find("blocks.2.attn.q.weight", 1, true))
  T.raises(function() m(sq.zeros({ 1, 9 }, "int64")) end, "GPT: sequence length 9 exceeds the context 8")
end)

T.test("losses", function()
  local a, b = sq.tensor { 1, 2, 3 }, sq.tensor { 1, 0, 0 }
  T.near(nn.mse_loss(a, b):item(), (0 + 4 + 9) / 3, 1e-6)
  local l1 = nn.cross_entropy(sq.zeros(2, 4), { 1, 3 })
  T.near(l1:item(), math.log(4), 1e-6)
end)

return T.finish()
