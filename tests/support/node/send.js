// Sends the calls in the JSON file argv[2] to Herald with @segment/analytics-node, then flushes.
// Env: HERALD_HOST (http://127.0.0.1:PORT), HERALD_WRITE_KEY. Prints one JSON line: the
// number of calls made and the errors the SDK reported (an undelivered batch is an error).
'use strict'
const fs = require('fs')
const { Analytics } = require('@segment/analytics-node')

async function main() {
  const calls = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'))
  const analytics = new Analytics({
    writeKey: process.env.HERALD_WRITE_KEY,
    host: process.env.HERALD_HOST,
    flushAt: 20,
    flushInterval: 200,
    maxRetries: 3,
    httpRequestTimeout: 10000,
  })
  const errors = []
  analytics.on('error', (err) => errors.push(String((err && err.reason) || err && err.code || err)))
  for (const [method, payload] of calls) {
    analytics[method](payload)
  }
  await analytics.closeAndFlush({ timeout: 60000 })
  process.stdout.write(JSON.stringify({ calls: calls.length, errors }) + '\n')
}

main().catch((err) => {
  process.stderr.write(String(err && err.stack || err) + '\n')
  process.exit(1)
})
