-- test_sweep_grammar.lua — the sweep grammar, overrides, canonical JSON and
-- run identities, without running anything.  `squeeze run test_sweep_grammar.lua`
local sweep = require "squeeze.sweep"
local experiment = require "squeeze.experiment"
local json = require "squeeze.json"

local passed, failed = 0, 0
local function check(name, cond, detail)
  if cond then passed = passed + 1; print("ok   " .. name)
  else failed = failed + 1; print("FAIL " .. name .. (detail and ("\n     " .. tostring(detail)) or "")) end
end
local function same(a, b) return json.encode(a) == json.encode(b) end
local function raises(fn, needle)
  local ok, err = pcall(fn)
  return not ok and tostring(err):find(needle, 1, true) ~= nil, err
end
local function values(node) return node.values end

-- axis values
check("range: stop excluded, integers stay integers", same(values(sweep.range(0, 10, 3)), { 0, 3, 6, 9 })
      and math.type(sweep.range(0, 3).values[2]) == "integer")
check("range: float steps rounded exactly", same(values(sweep.range(0, 1, 0.25)), { 0.0, 0.25, 0.5, 0.75 }))
check("range: negative step", same(values(sweep.range(3, 0, -1)), { 3, 2, 1 }))
check("range: step 0 is an error", raises(function() sweep.range(0, 1, 0) end, "step is 0"))
check("range: an empty range is an error", raises(function() sweep.range(5, 1) end, "is empty"))
check("linspace: both ends", same(values(sweep.linspace(0, 1, 5)), { 0.0, 0.25, 0.5, 0.75, 1.0 }))
check("logspace: exact powers of ten", same(values(sweep.logspace(-4, -2, 3)), { 1e-4, 1e-3, 1e-2 }))
check("linspace: n must be >= 1", raises(function() sweep.linspace(0, 1, 0) end, "integer >= 1"))
check("non-numbers are refused", raises(function() sweep.logspace("a", 1, 2) end, "finite number"))

-- combinators
local g = sweep.expand(sweep.grid { lr = { 1, 2 }, seed = { 0, 1, 2 } })
check("grid: product size", #g == 6)
check("grid: first key varies slowest", g[1].lr == 1 and g[3].lr == 1 and g[4].lr == 2 and g[2].seed == 1)
local gz = sweep.expand(sweep.grid { sweep.zip { lr = { 1, 2 }, wd = { 10, 20 } }, seed = { 0, 1 } })
check("grid of a zip and an axis", #gz == 4 and gz[1].lr == 1 and gz[1].wd == 10 and gz[3].wd == 20)
check("zip: unequal lengths named", raises(function() sweep.zip { a = { 1 }, b = { 1, 2 } } end, "(a=1, b=2)"))
check("plain table of axes means grid", #sweep.expand({ a = { 1, 2 }, b = { 3, 4 } }) == 4)
local c = sweep.expand(sweep.concat { { a = { 1 } }, sweep.zip { a = { 2, 3 } } })
check("concat", #c == 3 and c[3].a == 3)
local r1 = sweep.expand(sweep.random { n = 6, seed = 3, axes = { lr = sweep.loguniform(1e-4, 1e-2),
  d = sweep.choice { 2, 4 }, k = sweep.randint(1, 3), p = sweep.uniform(0, 1) } })
local r2 = sweep.expand(sweep.random { n = 6, seed = 3, axes = { lr = sweep.loguniform(1e-4, 1e-2),
  d = sweep.choice { 2, 4 }, k = sweep.randint(1, 3), p = sweep.uniform(0, 1) } })
local r3 = sweep.expand(sweep.random { n = 6, seed = 4, axes = { lr = sweep.loguniform(1e-4, 1e-2) } })
check("random: the same seed gives the same points", same(r1, r2))
check("random: another seed gives others", r1[1].lr ~= r3[1].lr)
local inb = true
for _, p in ipairs(r1) do
  inb = inb and p.lr >= 1e-4 and p.lr <= 1e-2 and (p.d == 2 or p.d == 4) and p.k >= 1 and p.k <= 3
        and math.type(p.k) == "integer" and p.p >= 0 and p.p < 1
end
check("random: samples within their distributions", inb)
check("random: a seed is required", raises(function() sweep.random { n = 2, axes = { a = { 1 } } } end, "seed must be an integer"))
check("distributions only inside random", raises(function() sweep.grid { a = sweep.uniform(0, 1) } end, "only works inside sweep.random"))
check("bad axis key", raises(function() sweep.grid { ["a..b"] = { 1 } } end, "is not a config key"))

-- experiments, overrides, points
local exp = experiment {
  name = "g", config = { lr = 1e-3, seed = 0, name = "mlp", on = false, hidden = { 64, 32 }, model = { depth = 2, act = "relu" } },
  sweep = sweep.grid { lr = { 1e-3, 1e-2 }, seed = { 0, 1 } },
  filter = function(cfg) return not (cfg.lr == 1e-2 and cfg.seed == 1) end,
  run = function() end,
}
local pts = experiment.points(exp, {})
check("filter drops a point", #pts == 3)
check("indexes follow the order", pts[1].index == 0 and pts[3].index == 2)
local pts2 = experiment.points(exp, { "seed=0..2", "model.depth=4", "name='a,b'", "on=true" })
check("command-line axis replaces the script's (2 lr x 3 seeds, one filtered)", #pts2 == 5)
check("scalar override of a nested key", pts2[1].config.model.depth == 4 and pts2[1].config.model.act == "relu")
check("quoted string with a comma stays one value", pts2[1].config.name == "a,b")
check("boolean override", pts2[1].config.on == true)
local ov = experiment.parse_overrides(exp.config, { "lr=0.1,0.2", "seed=0..6:3", "hidden=[128,64,32]" })
check("list override", same(ov.axes[1].values, { 0.1, 0.2 }))
check("inclusive range with a step", same(ov.axes[2].values, { 0, 3, 6 }))
check("JSON list value", same(ov.set.hidden, { 128, 64, 32 }))
ov = experiment.parse_overrides(exp.config, { "lr=logspace(-3,-1,3)" })
check("logspace() on the command line", same(ov.axes[1].values, { 1e-3, 1e-2, 1e-1 }))
check("unknown key with a suggestion", raises(function() experiment.parse_overrides(exp.config, { "sed=1" }) end, "did you mean 'seed'"))
check("malformed range", raises(function() experiment.parse_overrides(exp.config, { "lr=1e-3.." }) end, "malformed range"))
check("malformed range with a bad step", raises(function() experiment.parse_overrides(exp.config, { "lr=0..1:x" }) end, "malformed range"))
check("type mismatch", raises(function() experiment.parse_overrides(exp.config, { "on=yes" }) end, "is not true or false"))
check("not key=value", raises(function() experiment.parse_overrides(exp.config, { "lr" }) end, "is not key=value"))
check("a key twice", raises(function() experiment.parse_overrides(exp.config, { "lr=1", "lr=2" }) end, "given twice"))
check("experiment: run is required", raises(function() experiment { name = "x", config = {} } end, "run must be a function"))
check("experiment: unknown field", raises(function() experiment { name = "x", config = {}, run = print, sweeps = {} } end, "unknown field 'sweeps'"))
check("experiment: bad name", raises(function() experiment { name = "a b", config = {}, run = print } end, "name must be"))

-- canonical JSON and identities
check("canonical JSON: sorted keys, exact numbers", json.encode({ b = 1, a = { 1, 2.0, 0.1 }, c = "x" }) == '{"a":[1,2.0,0.1],"b":1,"c":"x"}')
local back = json.decode(json.encode({ i = 3, f = 3.0, s = "é\n", t = true }))
check("JSON round trip keeps integer vs float", math.type(back.i) == "integer" and math.type(back.f) == "float"
      and back.s == "é\n" and back.t == true)
check("FNV-1a 64 test vectors", json.fnv1a64("") == "cbf29ce484222325" and json.fnv1a64("a") == "af63dc4c8601ec8c"
      and json.fnv1a64("foobar") == "85944171f73967e8")
local p0 = experiment.points(experiment { name = "ids", config = { lr = 1e-3, seed = 0 }, run = print }, {})[1]
check("config hash = FNV-1a 64 of the canonical JSON", p0.json == '{"lr":0.001,"seed":0}'
      and p0.config_hash == json.fnv1a64(p0.json))
check("run id = FNV-1a 64 of name + newline + JSON (stable)", p0.id == json.fnv1a64("ids\n" .. p0.json)
      and p0.id == "a63681931afc7567", p0.id)
check("the same config in another sweep is another run",
      experiment.points(experiment { name = "ids2", config = { lr = 1e-3, seed = 0 }, run = print }, {})[1].id ~= p0.id)

print(("%d passed, %d failed"):format(passed, failed))
return failed == 0 and 0 or 1
