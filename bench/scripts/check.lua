-- wrk script: POST /v1/check with a rotating set of questions about alice.
local questions = {
  '{"user":"alice","permission":"doc:edit","scope":"org/acme/project/7/doc/1"}',
  '{"user":"alice","permission":"doc:edit","scope":"org/acme/project/8"}',
  '{"user":"alice","permission":"report:read","scope":"org/acme"}',
  '{"user":"alice","permission":"shop:browse"}',
  '{"user":"alice","permission":"invoice:approve","scope":"org/acme"}',
}
local i = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("TOKEN")
request = function()
  i = i + 1
  return wrk.format(nil, nil, nil, questions[(i % #questions) + 1])
end
