-- test_actprune.lua — structured activation pruning through Lua: the pruned
-- linear layer against the dense one, SAVED bytes equal to the BSR's, the
-- prune-and-pack inspection call, the dW error metric and argument errors.
local T = dofile("tests/lua/testlib.lua")
local sq = require "squeeze"

local function mem() collectgarbage(); collectgarbage(); return sq.memory().cpu.current end
local function maxabs(t) return t:abs():max():item() end

-- one layer: fresh leaves, forward (pruned when opts), backward with g
local function run(x0, w0, b0, g, opts)
  local x = x0:clone():requires_grad(true)
  local w = w0:clone():set_category("param"):requires_grad(true)
  local b = b0:clone():set_category("param"):requires_grad(true)
  local s0 = mem().saved
  local y, st
  if opts then y, st = sq.linear_pruned(x, w, b, opts) else y = sq.linear(x, w, b) end
  local saved = mem().saved - s0
  y:backward(g)
  return { y = y, dx = x:grad(), dw = w:grad(), db = b:grad(), stats = st, saved = saved }
end

local function layer(dtype)
  local x = sq.randn({ 3, 23, 40 }, { dtype = dtype })
  local w = sq.randn({ 24, 40 }, { dtype = dtype, std = 0.2 })
  local b = sq.randn({ 24 }, { dtype = dtype })
  local g = sq.randn({ 3, 23, 24 }, { dtype = dtype })
  return x, w, b, g
end

T.test("keep 1 equals the dense layer", function()
  sq.manual_seed(1)
  for _, dtype in ipairs { "float32", "float64" } do
    local x, w, b, g = layer(dtype)
    local d = run(x, w, b, g)
    for _, blk in ipairs { 8, 16, 32, 64 } do
      local p = run(x, w, b, g, { block = blk, keep = 1 })
      T.eq(maxabs(p.y - d.y), 0, "y")
      T.eq(maxabs(p.dx - d.dx), 0, "dx")
      T.eq(maxabs(p.db - d.db), 0, "db")
      local rel = maxabs(p.dw - d.dw) / maxabs(d.dw)
      T.check(rel < (dtype == "float32" and 1e-5 or 1e-12), dtype .. " dW relative error " .. rel)
      T.eq(p.stats.kept_blocks, p.stats.total_blocks)
    end
  end
end)

T.test("keep < 1: exact y, dx, db; SAVED bytes are the BSR's", function()
  sq.manual_seed(2)
  local x, w, b, g = layer("float32")
  local d = run(x, w, b, g)
  T.eq(d.saved, 69 * 40 * 4, "sq.linear saves x densely")
  for _, crit in ipairs { "l2", "random", "topk_unstructured" } do
    for _, scope in ipairs { "tensor", "row" } do
      local p = run(x, w, b, g, { block = 8, keep = 0.3, criterion = crit, scope = scope })
      T.eq(maxabs(p.y - d.y), 0)
      T.eq(maxabs(p.dx - d.dx), 0)
      T.eq(maxabs(p.db - d.db), 0)
      T.check(p.stats.pruned)
      T.eq(p.stats.compress_timed, 1, "the CPU always times compress")
      T.eq(p.saved, p.stats.saved_bytes, crit .. "/" .. scope .. " SAVED")
      T.eq(p.stats.dense_bytes, 69 * 40 * 4)
      if crit ~= "topk_unstructured" then
        local k = p.stats.kept_blocks
        -- values + row pointers (nbr + 1 int64) + one int32 column index per block
        T.eq(p.stats.saved_bytes, k * 64 * 4 + 10 * 8 + k * 4)
        if scope == "tensor" then T.eq(k, math.ceil(0.3 * 45 - 1e-9)) else T.eq(k, 9 * 2) end
      end
    end
  end
end)

T.test("dropping x frees its dense bytes; backward frees the BSR", function()
  sq.manual_seed(3)
  local w = sq.randn(128, 512):set_category("param"):requires_grad(true)
  local base = mem()
  local x = sq.randn(256, 512)
  local y, st = sq.linear_pruned(x, w, nil, { block = 16, keep = 0.25 })
  T.eq(mem().saved - base.saved, st.saved_bytes)
  T.eq(st.kept_blocks, 128)
  T.eq(st.saved_bytes, 128 * 16 * 16 * 4 + 17 * 8 + 128 * 4)
  local before = mem().total
  x:close()
  T.eq(before - mem().total, 256 * 512 * 4, "dense x freed although the graph lives")
  y:sum():backward()
  T.eq(mem().saved, base.saved, "BSR freed by backward")
  T.check(w:grad() ~= nil)
  w:zero_grad()
  y = nil
  T.eq(mem().total, base.total)
end)

T.test("bsr_prune_pack keeps the top blocks and round-trips", function()
  sq.manual_seed(4)
  local x = sq.randn(13, 29, "float64")
  local full = sq.bsr_prune_pack(x, { block = 4, keep = 1 })
  T.eq(full.nbr, 4); T.eq(full.nbc, 8); T.eq(full.nnzb, 32)
  T.eq(maxabs(full.dense - x), 0, "keep 1 round-trips exactly")
  T.eq(full.bytes, 32 * 16 * 8 + 5 * 8 + 32 * 4)
  local m = sq.bsr_prune_pack(x, { block = 4, keep = 0.5 })
  T.eq(m.nnzb, 16)
  T.eq(m.values:shape()[1], 16)
  T.eq(m.row_ptr:dtype(), "int64"); T.eq(m.col_idx:dtype(), "int32")
  -- the kept blocks are the 16 of largest norm: compare with a sort here
  local sc = {}
  local xs = x:tolist()
  for i = 0, 3 do
    for j = 0, 7 do
      local s = 0
      for r = i * 4 + 1, math.min(i * 4 + 4, 13) do
        for c = j * 4 + 1, math.min(j * 4 + 4, 29) do s = s + xs[r][c] ^ 2 end
      end
      sc[#sc + 1] = { s = s, id = i * 8 + j }
    end
  end
  table.sort(sc, function(a, b) return a.s > b.s end)
  local want = {}
  for k = 1, 16 do want[sc[k].id] = true end
  local rp, ci = m.row_ptr:tolist(), m.col_idx:tolist()
  for i = 0, 3 do
    for p = rp[i + 1] + 1, rp[i + 2] do T.check(want[i * 8 + ci[p]], "unexpected block") end
  end
  -- dropped entries are zero in the dense copy, kept ones exact
  local d = m.dense:tolist()
  for r = 1, 13 do
    for c = 1, 29 do
      local id = ((r - 1) // 4) * 8 + (c - 1) // 4
      T.eq(d[r][c], want[id] and xs[r][c] or 0)
    end
  end
  -- random is seeded
  sq.manual_seed(9); local r1 = sq.bsr_prune_pack(x, { block = 4, keep = 0.3, criterion = "random" })
  sq.manual_seed(9); local r2 = sq.bsr_prune_pack(x, { block = 4, keep = 0.3, criterion = "random" })
  T.eq(maxabs(r1.dense - r2.dense), 0)
  local u = sq.bsr_prune_pack(x, { block = 4, keep = 0.25, criterion = "topk_unstructured" })
  T.eq(u.block, 1); T.eq(u.nnzb, 8 * 16)
end)

T.test("per-row scope and the dW error metric", function()
  sq.manual_seed(5)
  local x = sq.randn(40, 64, "float64")
  local m = sq.bsr_prune_pack(x, { block = 8, keep = 0.3, scope = "row" })
  local rp = m.row_ptr:tolist()
  for i = 1, 5 do T.eq(rp[i + 1] - rp[i], 3, "ceil(0.3 * 8) blocks in each block row") end
  local dy = sq.randn(40, 16, "float64")
  T.near(sq.actprune_dw_error(x, dy, { block = 8, keep = 1 }), 0, 1e-12)
  local e = sq.actprune_dw_error(x, dy, { block = 8, keep = 0.5 })
  T.check(e > 0 and e < 1, "error " .. e)
end)

T.test("argument errors", function()
  local x, w = sq.randn(8, 6), sq.randn(4, 7):requires_grad(true)
  local w6 = sq.randn(4, 6):requires_grad(true)
  T.raises(function() sq.linear_pruned(x, w6, nil, { block = 0 }) end,
           "bad argument #4 to 'linear_pruned' (block 0 is not one of 8, 16, 32, 64)")
  T.raises(function() sq.linear_pruned(x, w6, nil, { keep = 0 }) end, "keep 0 must be in (0,1]")
  T.raises(function() sq.linear_pruned(x, w6, nil, { keep = 1.5 }) end, "keep 1.5 must be in (0,1]")
  T.raises(function() sq.linear_pruned(x, w6, nil, { criterion = "l1" }) end,
           "unknown criterion 'l1' (l2, random, topk_unstructured)")
  T.raises(function() sq.linear_pruned(x, w6, nil, { scope = "col" }) end, "unknown scope 'col'")
  T.raises(function() sq.linear_pruned(x, w6, nil, { blocks = 8 }) end, "unknown option 'blocks'")
  T.raises(function() sq.linear_pruned(x, w6, nil, 5) end, "table expected")
  T.raises(function() sq.linear_pruned(x, w, nil, { block = 8 }) end,
           "bad argument #2 to 'linear_pruned' (input 8x6 does not match weight 4x7")
  T.raises(function() sq.linear_pruned(x, "w") end, "bad argument #2 to 'linear_pruned' (tensor expected")
  T.raises(function() sq.bsr_prune_pack(sq.randn(2, 3, 4)) end, "need a 2-d (R,K) tensor")
  T.raises(function() sq.bsr_prune_pack(x, { block = 0 }) end, "block 0 must be >= 1")
  T.raises(function() sq.actprune_dw_error(x, sq.randn(7, 3)) end, "same leading elements")
end)

T.test("time_compress: the CPU always times (it costs nothing there); the option is checked", function()
  local x, w, b, g = layer("float32")
  local p = run(x, w, b, g, { block = 8, keep = 0.3, time_compress = false })
  T.eq(p.stats.compress_timed, 1)
  T.check(p.stats.compress_s >= 0)
  T.raises(function() sq.linear_pruned(x, w, b, { time_compres = false }) end, "unknown option 'time_compres'")
  local m = sq.nn.Sequential(sq.nn.Linear(40, 5))
  local ap = require "squeeze.actprune"
  ap.apply(m, { layers = "1", block = 8, keep = 0.5, time_compress = false })
  T.eq(ap.layers(m)[1].module.cfg.time_compress, false)
  ap.set_time_compress(m, true)
  T.eq(ap.layers(m)[1].module.cfg.time_compress, true)
end)

T.finish()
