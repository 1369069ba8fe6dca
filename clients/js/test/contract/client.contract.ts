// The client against the real permsync binary: real HTTP, real event streams (SSE via
// Node's fetch, WebSocket via the `ws` package), real tokens. Each test uses its own
// permission names, so the order of tests does not matter except for the restart,
// which comes last.

import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest'
import { WebSocket } from 'ws'
import { createPermissions } from '../../src/index.js'
import type { Change, DeniedEvent, Holding, PermissionsClient, PermissionsOptions, SessionEvent } from '../../src/types.js'
import { PermsyncServer, sleep, until } from './permsync.js'

let server: PermsyncServer
let alice: string
let admin: string
const open: PermissionsClient[] = []

beforeAll(async () => {
  server = await PermsyncServer.start()
  alice = (await server.login('alice')).access_token
  admin = (await server.login('admin')).access_token
})

afterAll(async () => {
  open.forEach((c) => c.close())
  await server?.dispose()
})

afterEach(async () => {
  open.splice(0).forEach((c) => c.close())
  // A closed client's stream must be gone on the server too: the next test counts streams.
  await until(async () => (await server.openStreams()).total == 0, 'closed clients to leave no open stream on the server')
})

type Fetch = NonNullable<PermissionsOptions['fetch']>

/** Node's fetch, counting requests by path. */
function countingFetch(): Fetch & { counts: Record<string, number> } {
  const counts: Record<string, number> = {}
  const f = ((input: RequestInfo | URL, init?: RequestInit) => {
    const url = new URL(input instanceof Request ? input.url : String(input))
    counts[url.pathname] = (counts[url.pathname] ?? 0) + 1
    return fetch(input, init)
  }) as Fetch & { counts: Record<string, number> }
  f.counts = counts
  return f
}

/** Node's fetch, except that the event stream never answers: only other sources can tell revisions. */
const noStreamFetch: Fetch = (input, init) =>
  String(input instanceof Request ? input.url : input).endsWith('/v1/me/events')
    ? new Promise((_, fail) => init?.signal?.addEventListener('abort', () => fail(new Error('aborted'))))
    : fetch(input, init)

function client(options: Partial<PermissionsOptions> = {}): PermissionsClient {
  const c = createPermissions({
    baseUrl: server.url,
    getToken: () => alice,
    transport: 'sse',
    // Bounded reconnect waits keep the restart test short; the server's retry hint is 2 s.
    maxDelayMs: 3000,
    ...options,
  })
  open.push(c)
  return c
}

/** Every change the client reports, from now on. */
function record(c: PermissionsClient): Change[] {
  const seen: Change[] = []
  c.subscribe((change) => seen.push(change))
  return seen
}

const has = (list: Holding[], permission: string, scope: string | null) =>
  list.some((h) => h.permission == permission && h.scope == scope)

async function live(c: PermissionsClient) {
  await c.ready
  await until(() => c.status == 'live', 'status live')
}

async function grant(user: string, permission: string, scope?: string) {
  const res = await server.api(admin, 'POST', `/v1/users/${user}/grants`, scope ? { permission, scope } : { permission })
  expect(res.status, JSON.stringify(res.body)).toBe(201)
  return res.body as { grant: { id: number }; seq: number; revision: number }
}

async function revoke(user: string, id: number) {
  const res = await server.api(admin, 'DELETE', `/v1/users/${user}/grants/${id}`)
  expect(res.status, JSON.stringify(res.body)).toBe(200)
  return res.body as { seq: number; revision: number }
}

/** Open streams on the server by transport (a transport's gauge appears once it was used). */
async function streams() {
  const { total, byTransport } = await server.openStreams()
  return { total, sse: byTransport.sse ?? 0, ws: byTransport.ws ?? 0 }
}

const onceEvent = <T>(subscribe: (fn: (e: T) => void) => () => void, what: string, timeoutMs = 10000) =>
  new Promise<T>((ok, fail) => {
    const timer = setTimeout(() => fail(new Error(`timed out waiting for ${what}`)), timeoutMs)
    const off = subscribe((e) => (clearTimeout(timer), off(), ok(e)))
  })

describe('over SSE', () => {
  test('the first snapshot is the server\'s, and one stream is open', async () => {
    const direct = await server.api(alice, 'GET', '/v1/me/permissions')
    expect(direct.status).toBe(200)
    const c = client()
    await live(c)
    expect(c.snapshot).toEqual(direct.body)
    expect(c.revision).toBe(direct.body.revision)
    expect(c.leader).toBe(true)
    // Every holding answers true at its scope and below, and anywhere; nothing else does.
    expect(c.snapshot!.permissions.length).toBeGreaterThan(0)
    for (const h of c.snapshot!.permissions) {
      expect(c.can(h.permission, h.scope), `${h.permission} @ ${h.scope}`).toBe(true)
      expect(c.can(h.permission, (h.scope ?? 'org/elsewhere') + '/item/1')).toBe(true)
      expect(c.canAnywhere(h.permission)).toBe(true)
    }
    expect(c.can('never:granted')).toBe(false)
    expect(c.can('never:granted', 'org/acme')).toBe(false)
    expect(await streams()).toEqual({ total: 1, sse: 1, ws: 0 })
  })

  test('a grant, a role edit and a revoke each reach the listener with what changed', async () => {
    const c = client()
    await live(c)
    const changes = record(c)
    const added = () => changes.flatMap((x) => x.added)
    const removed = () => changes.flatMap((x) => x.removed)

    expect(c.can('invoice:approve', 'org/acme/invoice/1')).toBe(false)
    const granted = await grant('alice', 'invoice:approve', 'org/acme')
    await until(() => has(added(), 'invoice:approve', 'org/acme'), '`added` invoice:approve@org/acme')
    expect(c.can('invoice:approve', 'org/acme/invoice/1')).toBe(true)
    expect(c.can('invoice:approve', 'org/beta')).toBe(false)
    expect(c.revision).toBe(granted.revision)
    expect(added().find((h) => h.permission == 'invoice:approve')?.via).toEqual(['direct'])

    // Editing a role alice is bound to changes what she holds at the binding's scope.
    const binding = c.snapshot!.roles![0]!
    const at = binding.scope
    const roles = await server.api(admin, 'GET', '/v1/roles')
    const role = roles.body.roles.find((r: { role: string }) => r.role == binding.role)
    const edited = await server.api(admin, 'PUT', `/v1/roles/${binding.role}`, { permissions: [...role.permissions, 'review:sign'] })
    expect(edited.status).toBe(200)
    await until(() => has(added(), 'review:sign', at), '`added` review:sign from the role edit')
    expect(added().find((h) => h.permission == 'review:sign')?.via).toEqual([`role:${binding.role}`])
    expect(c.can('review:sign', at && at + '/doc/3')).toBe(true)
    expect(c.revision).toBe(edited.body.seq)
    const restored = await server.api(admin, 'PUT', `/v1/roles/${binding.role}`, { permissions: role.permissions, description: role.description })
    expect(restored.status).toBe(200)
    await until(() => has(removed(), 'review:sign', at), '`removed` review:sign after the role edit')
    expect(c.can('review:sign', at && at + '/doc/3')).toBe(false)

    const revoked = await revoke('alice', granted.grant.id)
    await until(() => has(removed(), 'invoice:approve', 'org/acme'), '`removed` invoice:approve@org/acme')
    expect(c.can('invoice:approve', 'org/acme/invoice/1')).toBe(false)
    expect(c.revision).toBe(revoked.revision)
    // Every change came with a strictly higher revision.
    const revisions = changes.filter((x) => x.added.length || x.removed.length).map((x) => x.revision)
    expect(revisions).toEqual([...revisions].sort((a, b) => a - b))
    expect(new Set(revisions).size).toBe(revisions.length)
  })

  test('waitForRevision(n) resolves for the revision an admin call returned, with the change applied', async () => {
    const c = client()
    await live(c)
    const { revision, grant: g } = await grant('alice', 'wait:stream')
    await c.waitForRevision(revision)
    expect(c.revision).toBeGreaterThanOrEqual(revision)
    expect(c.can('wait:stream')).toBe(true)
    await revoke('alice', g.id)
  })

  test('waitForRevision(n) loads the snapshot itself when no event arrives', async () => {
    const c = client({ fetch: noStreamFetch })
    await c.ready
    const { revision, grant: g } = await grant('alice', 'wait:nostream')
    await sleep(300)
    expect(c.can('wait:nostream')).toBe(false) // nothing told the client yet
    await c.waitForRevision(revision)
    expect(c.revision).toBe(revision)
    expect(c.can('wait:nostream')).toBe(true)
    await revoke('alice', g.id)
  })

  test('client.fetch: a Permissions-Revision header above the cache loads the new snapshot', async () => {
    const c = client({ fetch: noStreamFetch })
    await c.ready
    const { revision, grant: g } = await grant('alice', 'header:seen')
    await sleep(300)
    expect(c.can('header:seen')).toBe(false)
    const res = await c.fetch(server.url + '/v1/check', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ user: 'alice', permission: 'shop:browse' }),
    })
    expect(res.status).toBe(200)
    expect(res.headers.get('permissions-revision')).toBe(String(revision))
    await until(() => c.can('header:seen'), 'the header to bring header:seen')
    expect(c.revision).toBe(revision)
    await revoke('alice', g.id)
  })

  test('401: a refused token is replaced through getToken({ forceRefresh: true }), once', async () => {
    // A well-formed token with a broken signature: the server answers 401 invalid_token.
    const bad = alice.slice(0, -4) + (alice.endsWith('AAAA') ? 'BBBB' : 'AAAA')
    expect((await server.api(bad, 'GET', '/v1/me/permissions')).status).toBe(401)
    const calls: boolean[] = []
    let current = bad
    const c = client({
      getToken: ({ forceRefresh }) => {
        calls.push(forceRefresh)
        if (forceRefresh) current = alice
        return current
      },
    })
    await live(c)
    expect(c.snapshot?.user).toBe('alice')
    expect(calls[0]).toBe(false)
    expect(calls).toContain(true)

    // client.fetch: the token "expires" under a running client; one refresh and one retry.
    current = bad
    const before = calls.length
    const res = await c.fetch(server.url + '/v1/me/permissions')
    expect(res.status).toBe(200)
    expect(calls.slice(before)).toEqual([false, true])

    // A token that stays refused: one retry only, then the 401 is the app's.
    const counted = countingFetch()
    const stuck = client({ getToken: () => bad, fetch: counted })
    const res2 = await stuck.fetch(server.url + '/v1/check', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ user: 'alice', permission: 'shop:browse' }),
    })
    expect(res2.status).toBe(401)
    expect(counted.counts['/v1/check']).toBe(2)
  })

  test('a stream whose token expires ends with token_expired; the client reconnects with a fresh token', async () => {
    const short = (await server.cli('token', 'alice', '--ttl', '3')).trim()
    expect(short.split('.')).toHaveLength(3)
    const calls: boolean[] = []
    const fetch = countingFetch()
    const c = client({
      fetch,
      getToken: ({ forceRefresh }) => {
        calls.push(forceRefresh)
        return forceRefresh ? alice : short
      },
    })
    await live(c)
    expect(fetch.counts['/v1/me/events']).toBe(1)
    await until(() => calls.includes(true), 'getToken({ forceRefresh: true }) after token_expired', 10000)
    await until(() => fetch.counts['/v1/me/events'] == 2 && c.status == 'live', 'a second stream', 5000)
    // The new stream works.
    const { grant: g } = await grant('alice', 'after:expiry')
    await until(() => c.can('after:expiry'), 'after:expiry over the new stream')
    expect(c.status).toBe('live')
    await revoke('alice', g.id)
  })

  test('403 from client.fetch: the permissions are refreshed, then `denied` is emitted', async () => {
    const fetch = countingFetch()
    const c = client({ fetch })
    await live(c)
    const loads = fetch.counts['/v1/me/permissions'] ?? 0
    const denied = onceEvent<DeniedEvent>((fn) => c.on('denied', fn), '`denied`')
    const res = await c.fetch(server.url + '/v1/users/bob')
    expect(res.status).toBe(403)
    const e = await denied
    expect(e.response.status).toBe(403)
    expect(e.request.url).toBe(server.url + '/v1/users/bob')
    expect(e.revision).toBe(c.revision)
    expect(e.snapshot?.user).toBe('alice')
    expect(fetch.counts['/v1/me/permissions']).toBe(loads + 1)
  })

  test('429 past the per-user stream limit: the client waits Retry-After, then connects', async () => {
    const user = 'streams-' + Date.now().toString(36)
    const password = user + '-password'
    expect((await server.api(admin, 'POST', '/v1/users', { user, password })).status).toBe(201)
    const token = (await server.login(user, password)).access_token
    // Fill the user's quota of streams (16 by default) with plain requests.
    const held: AbortController[] = []
    try {
      for (let i = 0; i < 16; i++) {
        const abort = new AbortController()
        held.push(abort)
        const res = await fetch(server.url + '/v1/me/events', { headers: { authorization: 'Bearer ' + token }, signal: abort.signal })
        expect(res.status).toBe(200)
      }
      const attempts: { status: number; retryAfter: string | null; at: number }[] = []
      const c = client({
        getToken: () => token,
        fetch: async (input, init) => {
          const res = await fetch(input, init)
          if (String(input).endsWith('/v1/me/events')) attempts.push({ status: res.status, retryAfter: res.headers.get('retry-after'), at: Date.now() })
          return res
        },
      })
      await c.ready
      await until(() => attempts.length == 1, 'the stream request')
      expect(attempts[0]).toMatchObject({ status: 429, retryAfter: '5' })
      expect(c.status).toBe('connecting')
      held.shift()!.abort()
      await until(() => c.status == 'live', 'the client to connect once a stream is free', 15000)
      // One retry, and not before Retry-After had passed.
      expect(attempts.map((a) => a.status)).toEqual([429, 200])
      expect(attempts[1]!.at - attempts[0]!.at).toBeGreaterThanOrEqual(4900)
    } finally {
      held.forEach((a) => a.abort())
    }
  })

  test('sessions revoked by an admin, or logged out, end the stream for good', async () => {
    const bob = await server.login('bob')
    const b = client({ getToken: () => bob.access_token })
    await live(b)
    const ended = onceEvent<SessionEvent>((fn) => b.on('session', fn), 'bob\'s `session` event')
    expect((await server.api(admin, 'POST', '/v1/users/bob/sessions/revoke')).status).toBe(200)
    expect((await ended).reason).toBe('revoked')
    expect(b.status).toBe('stale')

    const carol = await server.login('carol')
    const k = client({ getToken: () => carol.access_token })
    await live(k)
    const out = onceEvent<SessionEvent>((fn) => k.on('session', fn), 'carol\'s `session` event')
    expect((await server.api(null, 'POST', '/v1/auth/logout', { refresh_token: carol.refresh_token })).status).toBe(204)
    expect((await out).reason).toBe('logged_out')
    expect(k.status).toBe('stale')
    // Terminal: no reconnect with the dead token.
    await sleep(2500)
    expect((await server.openStreams()).total).toBe(0)
  })
})

describe('over WebSocket (ticket + ws)', () => {
  const wsClient = (options: Partial<PermissionsOptions> = {}) =>
    client({ transport: 'websocket', WebSocket: WebSocket as unknown as PermissionsOptions['WebSocket'], ...options })

  test('snapshot, grant and revoke arrive over the WebSocket', async () => {
    const fetch = countingFetch()
    const c = wsClient({ fetch })
    await live(c)
    expect(await streams()).toEqual({ total: 1, sse: 0, ws: 1 })
    expect(fetch.counts['/v1/me/events/ticket']).toBe(1)
    expect(fetch.counts['/v1/me/events']).toBeUndefined()
    const changes = record(c)
    const g = await grant('alice', 'ws:grant', 'org/acme')
    await until(() => changes.some((x) => has(x.added, 'ws:grant', 'org/acme')), '`added` over ws')
    expect(c.revision).toBe(g.revision)
    const r = await revoke('alice', g.grant.id)
    await until(() => changes.some((x) => has(x.removed, 'ws:grant', 'org/acme')), '`removed` over ws')
    expect(c.revision).toBe(r.revision)
    expect(c.can('ws:grant', 'org/acme')).toBe(false)
  })

  test('a ticket is single-use', async () => {
    const t = await server.api(alice, 'POST', '/v1/me/events/ticket')
    expect(t.status).toBe(200)
    expect(t.body.expires_in).toBe(30)
    const url = server.url.replace(/^http/, 'ws') + '/v1/me/ws?ticket=' + encodeURIComponent(t.body.ticket)
    const first = new WebSocket(url)
    const message = await new Promise<string>((ok, fail) => {
      first.on('message', (d) => ok(String(d)))
      first.on('error', fail)
    })
    expect(JSON.parse(message)).toMatchObject({ type: 'permissions' })
    first.close()
    const second = new WebSocket(url)
    const refused = await new Promise<number>((ok) => {
      second.on('unexpected-response', (_req, res) => ok(res.statusCode ?? 0))
      second.on('open', () => ok(101))
      second.on('error', () => {})
    })
    second.terminate()
    expect(refused).toBe(401)
  })
})

describe('restart', () => {
  test('stopping and restarting the server on the same database: clients reconnect and lose no change', async () => {
    const sse = client()
    const ws = client({ transport: 'websocket', WebSocket: WebSocket as unknown as PermissionsOptions['WebSocket'] })
    await live(sse)
    await live(ws)
    const statuses: string[] = []
    sse.on('status', (s) => statuses.push(s))
    const sseChanges = record(sse)
    const wsChanges = record(ws)

    await server.stop()
    await until(() => sse.status != 'live' && ws.status != 'live', 'both clients to notice the server is gone')
    // A change while no server runs: the CLI writes to the same database.
    const out = await server.cli('grant', 'alice', 'offline:edit', '--scope', 'org/acme')
    const revision = Number(/revision (\d+)/.exec(out)?.[1])
    expect(revision).toBeGreaterThan(0)
    await sleep(500)
    expect(sse.can('offline:edit', 'org/acme')).toBe(false)

    await server.restart()
    for (const [c, changes] of [[sse, sseChanges], [ws, wsChanges]] as const) {
      await until(() => c.status == 'live' && c.revision == revision, 'reconnect and resynchronise', 15000)
      expect(c.can('offline:edit', 'org/acme/project/7')).toBe(true)
      expect(changes.some((x) => has(x.added, 'offline:edit', 'org/acme'))).toBe(true)
    }
    expect(statuses[0]).toBe('connecting')
    expect(statuses.at(-1)).toBe('live')
    expect(await streams()).toEqual({ total: 2, sse: 1, ws: 1 })

    // And the restarted server keeps pushing.
    const g = await grant('alice', 'after:restart')
    await until(() => sse.can('after:restart') && ws.can('after:restart'), 'a grant after the restart')
    await revoke('alice', g.grant.id)
  })
})
