// The shared `can()` vectors (test/vectors/can.json) against the real server: the
// holdings become grants of a fresh user, then every case is asked of `/v1/check`,
// `/v1/check/batch` and of a client signed in as that user. All three must give the
// vectors' answer, so client and server semantics are the same.
//
// The vectors fix their own `now`; the server uses its clock. Expiries keep their
// meaning by moving with the clock: a holding that counts at the vectors' `now` gets
// an expiry an hour (plus its offset) from now; one that does not (expired, or
// expiring exactly at `now`) gets one a few seconds from now, and the checks wait
// until it has passed (the server refuses expiries in the past).

import { readFileSync } from 'node:fs'
import { afterAll, beforeAll, expect, test } from 'vitest'
import { createPermissions } from '../../src/index.js'
import type { PermissionsClient } from '../../src/types.js'
import { PermsyncServer, sleep, until } from './permsync.js'

interface Vectors {
  now: string
  holdings: { permission: string; scope: string | null; expires_at: string | null }[]
  cases: { permission: string; scope: string | null; expect: boolean; note?: string }[]
}
const vectors: Vectors = JSON.parse(readFileSync(new URL('../vectors/can.json', import.meta.url), 'utf8'))

let server: PermsyncServer
let admin: string
let client: PermissionsClient | undefined
const user = 'vectors-' + Date.now().toString(36)

beforeAll(async () => {
  server = await PermsyncServer.start()
  admin = (await server.login('admin')).access_token
})

afterAll(async () => {
  client?.close()
  await server?.dispose()
})

const body = (c: { permission: string; scope: string | null }) =>
  c.scope == null ? { user, permission: c.permission } : { user, permission: c.permission, scope: c.scope }

test(`the ${vectors.cases.length} shared can() vectors: /v1/check, /v1/check/batch and the client agree`, async () => {
  const password = 'vectors-password-' + Math.random().toString(36).slice(2)
  expect((await server.api(admin, 'POST', '/v1/users', { user, password })).status).toBe(201)

  const vectorNow = Date.parse(vectors.now)
  const start = Date.now()
  const expireSoonAt = start + 4000
  let revision = 0
  for (const h of vectors.holdings) {
    let expires_at: string | null = null
    if (h.expires_at != null) {
      const offset = Date.parse(h.expires_at) - vectorNow
      expires_at = new Date(offset > 0 ? start + 3600_000 + offset : expireSoonAt).toISOString()
    }
    const res = await server.api(admin, 'POST', `/v1/users/${user}/grants`, {
      permission: h.permission,
      ...(h.scope == null ? {} : { scope: h.scope }),
      ...(expires_at == null ? {} : { expires_at }),
    })
    expect(res.status, JSON.stringify(res.body)).toBe(201)
    revision = res.body.revision
  }
  expect(Date.now()).toBeLessThan(expireSoonAt - 500) // the "counts now" state must be seen before it expires

  // Before expiry those holdings do count: proves the expiry below is what turns them off.
  const early = vectors.cases.filter((c) => c.permission == 'admin:users' && c.scope == null)
  for (const c of early) expect((await server.api(admin, 'POST', '/v1/check', body(c))).body.allowed).toBe(true)

  // Past the expiries the server raises the user's revision (within 1 s, PROTOCOL §1).
  await sleep(expireSoonAt - Date.now() + 50)
  await until(async () => (await server.api(admin, 'GET', `/v1/users/${user}`)).body.revision > revision, 'the expiry revision', 5000)

  const single: boolean[] = []
  for (const c of vectors.cases) {
    const res = await server.api(admin, 'POST', '/v1/check', body(c))
    expect(res.status, JSON.stringify(res.body)).toBe(200)
    single.push(res.body.allowed)
  }
  const batch = await server.api(admin, 'POST', '/v1/check/batch', { checks: vectors.cases.map(body) })
  expect(batch.status).toBe(200)

  const token = (await server.login(user, password)).access_token
  client = createPermissions({ baseUrl: server.url, getToken: () => token })
  await client.ready
  // The user's own view answers the same check the same way (the caller may check itself).
  expect((await server.api(token, 'POST', '/v1/check', body(vectors.cases[0]!))).status).toBe(200)

  const mismatches = vectors.cases
    .map((c, i) => ({
      case: `${c.permission} @ ${c.scope ?? '(global)'}`,
      expect: c.expect,
      server: single[i],
      batch: batch.body.results[i]?.allowed,
      client: client!.can(c.permission, c.scope),
    }))
    .filter((r) => r.server !== r.expect || r.batch !== r.expect || r.client !== r.expect)
  expect(mismatches).toEqual([])
  expect(batch.body.results).toHaveLength(vectors.cases.length)
})
