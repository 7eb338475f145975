-- Argo CD health check for Mendel's runs (QDEvolution, ExperienceLibrary, CompressorTraining).
-- The three kinds share one status shape, so the three health.lua files are identical copies
-- (tests/chart/test_argocd_health.py fails when they drift). Argo CD runs scripts from
-- argocd-cm in a sandbox without the string and math libraries: plain Lua 5.1 operators only.

local hs = {status = "Progressing", message = "Waiting for the operator"}

local function condition(st, wanted)
  if type(st.conditions) ~= "table" then
    return nil
  end
  for _, c in ipairs(st.conditions) do
    if type(c) == "table" and c.type == wanted then
      return c
    end
  end
  return nil
end

-- Every JSON number reaches Lua as a float; drop any fraction so messages read "120", never
-- "120.5" (tostring prints a whole float without ".0" in Lua 5.1, LuaJIT and gopher-lua).
local function whole(n)
  n = tonumber(n)
  if n == nil then
    return nil
  end
  return n - n % 1
end

local function text(c)
  if c ~= nil and type(c.message) == "string" and c.message ~= "" then
    return c.message
  end
  return nil
end

-- "Step 40/300 (13%)" when the run knows its total, else "Running".
local function progress(st)
  local p = st.progress
  if type(p) ~= "table" then
    return "Running"
  end
  local total = whole(p.total)
  if total == nil or total <= 0 then
    return "Running"
  end
  local step = whole(p.step) or 0
  local percent = whole(p.percent)
  if percent == nil then
    percent = whole(step * 100 / total)
  end
  return "Step " .. tostring(step) .. "/" .. tostring(total) .. " (" .. tostring(percent) .. "%)"
end

local function by_phase(st)
  local phase = st.phase
  if phase == "Succeeded" then
    return "Healthy", text(condition(st, "Complete")) or "Run succeeded"
  elseif phase == "Failed" then
    local c = condition(st, "Failed")
    if c == nil then
      return "Degraded", "Run failed"
    end
    local reason = c.reason or "Failed"
    local message = text(c)
    return "Degraded", message and (reason .. ": " .. message) or reason
  elseif phase == "Suspended" then
    local c = condition(st, "Suspended")
    return "Suspended", (c and c.status == "True" and text(c)) or "Run suspended"
  elseif phase == "Running" then
    return "Progressing", progress(st)
  elseif phase == "Queued" then
    return "Progressing", "Queued for quota"
  elseif phase == "Pending" then
    return "Progressing", text(condition(st, "Running")) or "Pending"
  end
  return nil, nil
end

local st = obj.status
if type(st) ~= "table" then
  return hs
end

local generation = obj.metadata and obj.metadata.generation
if generation ~= nil and st.observedGeneration ~= generation then
  hs.message = "Waiting for the operator to observe generation " .. tostring(whole(generation))
  return hs
end

-- A refused spec change (an immutable field changed; the run goes on with its old spec) needs
-- a person, whatever the phase.
local admitted = condition(st, "Admitted")
if admitted ~= nil and admitted.status == "False" and admitted.reason == "ImmutableFieldChanged" then
  hs.status = "Degraded"
  hs.message = text(admitted) or "ImmutableFieldChanged"
  return hs
end

local status, message = by_phase(st)
if status == nil then
  return hs
end
hs.status = status
hs.message = message

-- MLflow being down does not stop the run, so it never changes the health; it is only said.
local tracking = condition(st, "TrackingReady")
if tracking ~= nil and tracking.status == "False" and tracking.reason == "MLflowUnavailable" then
  hs.message = hs.message .. "; MLflow unavailable: " .. (text(tracking) or "no detail")
end
return hs
