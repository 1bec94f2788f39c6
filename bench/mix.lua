-- wrk script for the policies section's mixed load: 90% "/" and 10% "/heavy" (about 10 ms of CPU each).
-- A fixed order (every tenth request is heavy) rather than random draws: the mix is exact in every run.
local counter = 0
local plain = wrk.format("GET", "/")
local heavy = wrk.format("GET", "/heavy")

request = function()
  counter = counter + 1
  if counter % 10 == 0 then
    return heavy
  end
  return plain
end
