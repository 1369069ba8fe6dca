import { afterEach, describe, expect, it, vi } from 'vitest'
import { createPermissions, type Change, type Holding, type PermissionsClient, type PermissionsOptions } from '../src/index.js'
import { BASE, FakeServer, FakeWebSocket, createClock, fakeEnv, flush } from './harness.js'

const SNAP = '/v1/me/permissions'
const EVENTS = '/v1/me/events'
const h = (permission: string, scope: string | null = null, expires_at: string | null = null): Holding => ({ permission, scope, expires_at })

let open: PermissionsClient[] = []
afterEach(() => {
  open.forEach((c) => c.close())
  open = []
  FakeWebSocket.sockets = []
})

function setup(options: Partial<PermissionsOptions> = {}, server = new FakeServer()) {
  const clock = createClock()
  server.now = clock.now
  const env = fakeEnv()
  const client = createPermissions({
    baseUrl: BASE,
    fetch: server.fetch,
    timers: clock.timers,
    now: clock.now,
    random: () => 1,
    env: env.env,
    locks: null,
    BroadcastChannel: null,
    ...options,
  })
  open.push(client)
  const changes: Change[] = []
  client.subscribe((c) => changes.push(c))
  return { client, server, clock, env, changes }
}

describe('start', () => {
  it('loads the snapshot once, opens the stream and goes live', async () => {
    const { client, server } = setup()
    expect(client.status).toBe('connecting')
    expect(client.can('doc:read')).toBe(false)
    await client.ready
    await flush()
    expect(client.revision).toBe(1)
    expect(client.can('doc:read')).toBe(true)
    expect(client.status).toBe('live')
    expect(server.count(SNAP)).toBe(1)
    expect(server.count(EVENTS)).toBe(1)
    expect(server.requests(SNAP)[0]!.headers.get('if-none-match')).toBeNull()
  })

  it('sends the token from getToken on the snapshot and the stream', async () => {
    const getToken = vi.fn(() => 'tok-1')
    const { client, server } = setup({ getToken })
    await client.ready
    await flush()
    expect(server.requests(SNAP)[0]!.headers.get('authorization')).toBe('Bearer tok-1')
    expect(server.requests(EVENTS)[0]!.headers.get('authorization')).toBe('Bearer tok-1')
    expect(server.requests(EVENTS)[0]!.headers.get('accept')).toBe('text/event-stream')
    expect(getToken).toHaveBeenCalledWith({ forceRefresh: false })
  })

  it('starts from initialSnapshot without loading it again', async () => {
    const server = new FakeServer()
    const { client } = setup({ initialSnapshot: server.snapshot() }, server)
    await client.ready
    expect(client.can('doc:read')).toBe(true)
    await flush()
    expect(server.count(SNAP)).toBe(0)
    expect(client.status).toBe('live')
  })

  it('canAnywhere ignores scopes', async () => {
    const server = new FakeServer()
    server.permissions = [h('doc:edit', 'project/7')]
    const { client } = setup({}, server)
    await client.ready
    expect(client.can('doc:edit')).toBe(false)
    expect(client.can('doc:edit', 'project/7')).toBe(true)
    expect(client.canAnywhere('doc:edit')).toBe(true)
    expect(client.canAnywhere('doc:delete')).toBe(false)
  })
})

describe('staying fresh', () => {
  it('an event above the cache causes exactly one conditional refetch', async () => {
    const { client, server, changes } = setup()
    await client.ready
    await flush()
    server.change([h('doc:read'), h('doc:write', 'project/7')])
    await flush()
    expect(server.count(SNAP)).toBe(2)
    expect(server.requests(SNAP)[1]!.headers.get('if-none-match')).toBe('"1"')
    expect(client.revision).toBe(2)
    expect(client.can('doc:write', 'project/7/item/1')).toBe(true)
    const last = changes.at(-1)!
    expect(last.added).toEqual([h('doc:write', 'project/7')])
    expect(last.removed).toEqual([])
    expect(last.revision).toBe(2)
  })

  it('an event at or below the cache fetches nothing', async () => {
    const { client, server } = setup()
    await client.ready
    await flush()
    server.send('event: permissions\ndata: {"revision":1}\n\n: keepalive\n\n')
    await flush()
    expect(server.count(SNAP)).toBe(1)
  })

  it('coalesces: a burst during a load causes one more load, not one per event', async () => {
    const { client, server } = setup()
    await client.ready
    await flush()
    server.holdSnapshots = true
    server.push(2)
    await flush()
    expect(server.count(SNAP)).toBe(2)
    for (const r of [3, 4, 5, 6]) server.push(r)
    client.refresh().catch(() => {})
    void client.waitForRevision(6)
    await flush()
    expect(server.count(SNAP)).toBe(2)
    server.releaseSnapshots()
    await flush()
    expect(server.count(SNAP)).toBe(3)
    expect(client.revision).toBe(6)
  })

  it('header, event and waitForRevision at once share one load', async () => {
    const { client, server } = setup()
    await client.ready
    await flush()
    server.app = () => new Response('ok', { headers: { 'Permissions-Revision': '2' } })
    server.push(2)
    const done = client.waitForRevision(2)
    await client.fetch(BASE + '/api/thing')
    await done
    await flush()
    expect(server.count(SNAP)).toBe(2)
  })

  it('304 keeps the cache', async () => {
    const { client, server, changes } = setup()
    await client.ready
    const before = client.snapshot
    const seen = changes.length
    await client.refresh()
    expect(server.requests(SNAP)[1]!.headers.get('if-none-match')).toBe('"1"')
    expect(client.snapshot).toBe(before)
    expect(changes.length).toBe(seen)
  })

  it('a lagging node (304 below a known revision) is retried later, not in a loop', async () => {
    const { client, server, clock } = setup()
    await client.ready
    await flush()
    server.lagRevision = 1
    server.push(2)
    await flush()
    expect(server.count(SNAP)).toBe(2)
    expect(client.revision).toBe(1)
    server.lagRevision = undefined
    await clock.advance(1000)
    expect(server.count(SNAP)).toBe(3)
    expect(client.revision).toBe(2)
  })

  it('a failed load is retried with backoff', async () => {
    const server = new FakeServer()
    server.snapshotFailures = [500, 500]
    const errors: unknown[] = []
    const { client, clock } = setup({}, server)
    client.on('error', (e) => errors.push(e))
    await flush()
    expect(errors).toHaveLength(1)
    await clock.advance(1000)
    await clock.advance(1500)
    await client.ready
    expect(server.count(SNAP)).toBe(3)
    expect(server.gaps(SNAP)).toEqual([1000, 1500])
  })

  it('a snapshot never moves the cache back', async () => {
    const { client, server } = setup()
    await client.ready
    await flush()
    server.push(5)
    await flush()
    expect(client.revision).toBe(5)
    server.revision = 3
    await client.refresh()
    expect(client.revision).toBe(5)
  })

  it('waitForRevision resolves at once when held, asks for newer ones, and can be aborted', async () => {
    const { client, server } = setup()
    await client.ready
    await client.waitForRevision(1)
    server.revision = 4
    await client.waitForRevision(4)
    expect(client.revision).toBe(4)
    const abort = new AbortController()
    const pending = client.waitForRevision(10, { signal: abort.signal })
    abort.abort(new Error('gave up'))
    await expect(pending).rejects.toThrow('gave up')
  })

  it("waitForRevision with a revision that is not this user's does not turn the client stale", async () => {
    const { client, server, clock } = setup({ staleAfterMs: 5000, failClosed: true })
    await client.ready
    await flush()
    const abort = new AbortController()
    const wait = client.waitForRevision(50, { signal: abort.signal })
    await flush()
    expect(server.count(SNAP)).toBe(2)
    await clock.advance(60000)
    expect(server.count(SNAP)).toBe(2)
    expect(client.status).not.toBe('stale')
    abort.abort()
    await expect(wait).rejects.toThrow()
  })

  it('fetchSnapshot replaces the HTTP load; null keeps the cache', async () => {
    const server = new FakeServer()
    const fetchSnapshot = vi.fn(async () => (fetchSnapshot.mock.calls.length > 1 ? null : server.snapshot()))
    const { client } = setup({ fetchSnapshot }, server)
    await client.ready
    await client.refresh()
    expect(fetchSnapshot.mock.calls).toEqual([[{}], [{ revision: 1 }]])
    expect(client.revision).toBe(1)
    expect(server.count(SNAP)).toBe(0)
  })

  it('snapshotUrl loads from the app backend', async () => {
    const server = new FakeServer()
    server.app = (req) => (new URL(req.url).pathname == '/app/perms' ? Response.json(server.snapshot()) : new Response('x'))
    const { client } = setup({ snapshotUrl: BASE + '/app/perms' }, server)
    await client.ready
    expect(server.count('/app/perms')).toBe(1)
    expect(server.count(SNAP)).toBe(0)
  })

  it('expiry is applied locally, with a change when a holding runs out', async () => {
    const server = new FakeServer()
    const { client, clock, changes } = setup({}, server)
    server.permissions = [h('doc:read'), h('temp:x', null, new Date(clock.now() + 5000).toISOString())]
    await client.ready
    expect(client.can('temp:x')).toBe(true)
    await clock.advance(5000)
    expect(client.can('temp:x')).toBe(false)
    expect(changes.at(-1)!.removed).toEqual([server.permissions[1]])
  })
})

describe('reconnecting', () => {
  it('backs off with full jitter within bounds, and resets after a successful connect', async () => {
    const server = new FakeServer()
    server.eventsFailures = Array.from({ length: 5 }, () => ({ status: 500 }))
    const { client, clock } = setup({ minDelayMs: 500, maxDelayMs: 5000 }, server)
    await client.ready
    await clock.advance(15000)
    expect(client.status).toBe('live')
    // random() = 1 gives the upper bound min(max, min + min·2^n): 1000, 1500, 2500, 4500, then capped at 5000.
    expect(server.gaps(EVENTS)).toEqual([1000, 1500, 2500, 4500, 5000])
    // After a successful connect the attempt count restarts (else this would be the cap,
    // 5000); the server's `retry: 2000` is the new floor: 2000 + 2000·2^0.
    const t0 = clock.now()
    server.endStreams()
    await clock.advance(10000)
    expect(server.requests(EVENTS)[6]!.at - t0).toBe(4000)
    expect(client.status).toBe('live')
  })

  it('the lower bound is the floor (random() = 0)', async () => {
    const server = new FakeServer()
    server.eventsFailures = [{ status: 502 }, { status: 502 }, { status: 502 }]
    const { client, clock } = setup({ random: () => 0 }, server)
    await client.ready
    await clock.advance(5000)
    expect(server.gaps(EVENTS)).toEqual([500, 500, 500])
  })

  it('429 honours Retry-After', async () => {
    const server = new FakeServer()
    server.eventsFailures = [{ status: 429, retryAfter: '10' }]
    const { client, clock } = setup({}, server)
    await client.ready
    await clock.advance(9999)
    expect(server.count(EVENTS)).toBe(1)
    await clock.advance(1)
    expect(server.count(EVENTS)).toBe(2)
  })

  it('after a reconnect the first event tells the revision; a change missed meanwhile is loaded', async () => {
    const { client, server, clock } = setup()
    await client.ready
    await flush()
    server.endStreams()
    server.permissions = [h('doc:read'), h('doc:write')]
    server.revision = 7 // changed while disconnected: no event was pushed
    await clock.advance(5000)
    expect(client.revision).toBe(7)
    expect(client.can('doc:write')).toBe(true)
  })

  it('401 on the stream: a forced fresh token and an immediate retry, then backoff', async () => {
    const server = new FakeServer()
    server.validTokens = new Set(['good'])
    let n = 0
    const getToken = vi.fn(({ forceRefresh }: { forceRefresh: boolean }) => (forceRefresh && ++n > 1 ? 'good' : 'bad'))
    const { client, clock } = setup({ getToken }, server)
    await clock.advance(0)
    // bad → 401 → forced (still bad) → 401 → backoff → forced → good
    await clock.advance(2000)
    await client.ready
    expect(client.status).toBe('live')
    const gaps = server.gaps(EVENTS)
    expect(gaps[0]).toBe(0)
    expect(gaps[1]).toBeGreaterThanOrEqual(500)
    expect(getToken.mock.calls.some(([r]) => r.forceRefresh)).toBe(true)
  })

  it('token_expired: fresh token and immediate reconnect, not terminal', async () => {
    const getToken = vi.fn(({ forceRefresh }: { forceRefresh: boolean }) => (forceRefresh ? 'new' : 'old'))
    const { client, server, clock } = setup({ getToken })
    const sessions: unknown[] = []
    client.on('session', (e) => sessions.push(e))
    await client.ready
    await flush()
    server.session('token_expired')
    await clock.advance(0)
    expect(server.count(EVENTS)).toBe(2)
    expect(server.gaps(EVENTS)).toEqual([0])
    expect(server.requests(EVENTS)[1]!.headers.get('authorization')).toBe('Bearer new')
    expect(sessions).toEqual([])
    expect(client.status).toBe('live')
  })

  it.each(['logged_out', 'revoked'])('session %s is terminal until a new token', async (reason) => {
    let token = 'one'
    const { client, server, clock, env } = setup({ getToken: () => token })
    const sessions: unknown[] = []
    client.on('session', (e) => sessions.push(e))
    await client.ready
    await flush()
    server.session(reason)
    await clock.advance(120000)
    expect(sessions).toEqual([{ reason }])
    expect(server.count(EVENTS)).toBe(1)
    expect(client.status).toBe('stale')
    // Same token: stays down.
    env.setVisible(true)
    await clock.advance(0)
    expect(server.count(EVENTS)).toBe(1)
    // A new login: the next visibility or online signal resumes.
    token = 'two'
    env.setVisible(true)
    await clock.advance(0)
    expect(server.count(EVENTS)).toBe(2)
    expect(client.status).toBe('live')
  })

  it('a new login after a terminal end reloads unconditionally, also for another user with a lower revision', async () => {
    let token = 'alice-token'
    const { client, server, clock, env } = setup({ getToken: () => token, holdRemovals: true })
    await client.ready
    await flush()
    server.push(40)
    await flush()
    expect(client.revision).toBe(40)
    server.session('logged_out')
    await clock.advance(1000)
    // Bob signs in; his revision is lower than Alice's.
    server.user = 'bob'
    server.revision = 12
    server.permissions = [h('bob:thing')]
    token = 'bob-token'
    env.goOnline()
    await clock.advance(0)
    expect(client.snapshot!.user).toBe('bob')
    expect(client.revision).toBe(12)
    expect(client.can('doc:read')).toBe(false)
    expect(client.held).toEqual([])
    expect(client.can('bob:thing')).toBe(true)
    expect(server.requests(SNAP).at(-1)!.headers.get('if-none-match')).toBeNull()
    expect(client.status).toBe('live')
  })

  it('a snapshot of another user replaces the cache whatever its revision', async () => {
    const { client, server } = setup()
    await client.ready
    await flush()
    server.push(30)
    await flush()
    server.user = 'bob'
    server.revision = 3
    server.permissions = []
    await client.refresh()
    expect(client.snapshot!.user).toBe('bob')
    expect(client.revision).toBe(3)
  })

  it('refresh() resumes after a terminal end (cookie mode, no getToken)', async () => {
    const { client, server, clock } = setup()
    await client.ready
    await flush()
    server.session('logged_out')
    await clock.advance(60000)
    expect(server.count(EVENTS)).toBe(1)
    await client.refresh()
    await flush()
    expect(server.count(EVENTS)).toBe(2)
    expect(client.status).toBe('live')
  })

  it('401 without getToken and 403 are terminal', async () => {
    for (const status of [401, 403]) {
      const server = new FakeServer()
      server.eventsFailures = [{ status }]
      const { client, clock } = setup({}, server)
      const sessions: unknown[] = []
      client.on('session', (e) => sessions.push(e))
      await clock.advance(60000)
      expect(server.count(EVENTS)).toBe(1)
      expect(sessions).toEqual([{ reason: status }])
    }
  })

  it('ready rejects when the session ends before the first snapshot', async () => {
    const server = new FakeServer()
    server.eventsFailures = [{ status: 403 }]
    server.holdSnapshots = true
    const { client } = setup({}, server)
    await expect(client.ready).rejects.toThrow('403')
  })

  it('an SSE stream silent beyond idleTimeoutMs is replaced', async () => {
    const { client, server, clock } = setup({ idleTimeoutMs: 45000 })
    await client.ready
    await clock.advance(30000)
    server.send(': keepalive\n\n')
    await clock.advance(44000)
    expect(server.count(EVENTS)).toBe(1)
    await clock.advance(1000)
    await clock.advance(5000)
    expect(server.count(EVENTS)).toBe(2)
  })

  it('offline closes the stream and waits; online reconnects at once', async () => {
    const { client, server, clock, env } = setup()
    await client.ready
    await flush()
    env.goOffline()
    await flush()
    expect(client.status).toBe('offline')
    expect(server.openStreams).toBe(0)
    await clock.advance(20000)
    expect(server.count(EVENTS)).toBe(1)
    env.goOnline()
    await flush()
    expect(server.count(EVENTS)).toBe(2)
    expect(client.status).toBe('live')
  })

  it('becoming visible skips the rest of a backoff wait', async () => {
    const { client, server, clock, env } = setup({ minDelayMs: 20000, maxDelayMs: 60000 })
    await client.ready
    await flush()
    server.endStreams()
    await clock.advance(100)
    expect(server.count(EVENTS)).toBe(1)
    env.setVisible(true)
    await flush()
    expect(server.count(EVENTS)).toBe(2)
  })
})

describe('status, failClosed', () => {
  it('goes stale after staleAfterMs disconnected; failClosed makes can() false until live again', async () => {
    const { client, server, clock, env } = setup({ failClosed: true, staleAfterMs: 10000 })
    const statuses: string[] = []
    client.on('status', (s) => statuses.push(s))
    await client.ready
    await flush()
    expect(client.can('doc:read')).toBe(true)
    server.eventsFailures = Array.from({ length: 20 }, () => ({ status: 503 }))
    server.endStreams()
    await clock.advance(9000)
    expect(client.status).toBe('connecting')
    expect(client.can('doc:read')).toBe(true)
    await clock.advance(1000)
    expect(client.status).toBe('stale')
    expect(client.can('doc:read')).toBe(false)
    server.eventsFailures = []
    env.setVisible(true)
    await flush()
    expect(client.status).toBe('live')
    expect(client.can('doc:read')).toBe(true)
    expect(statuses).toEqual(['live', 'connecting', 'stale', 'live'])
  })

  it('without failClosed, a stale cache still answers', async () => {
    const server = new FakeServer()
    server.eventsFailures = Array.from({ length: 20 }, () => ({ status: 503 }))
    const { client, clock } = setup({ staleAfterMs: 1000 }, server)
    await client.ready
    await clock.advance(1000)
    expect(client.status).toBe('stale')
    expect(client.can('doc:read')).toBe(true)
  })

  it('a live stream that cannot load a known revision for staleAfterMs is stale too', async () => {
    const { client, server, clock } = setup({ staleAfterMs: 5000, failClosed: true })
    await client.ready
    await flush()
    server.snapshotFailures = Array.from({ length: 20 }, () => 500)
    server.push(2)
    await clock.advance(4000)
    expect(client.status).toBe('live')
    await clock.advance(1000)
    expect(client.status).toBe('stale')
    expect(client.can('doc:read')).toBe(false)
  })

  it('status changes reach subscribers', async () => {
    const { client, changes } = setup()
    await client.ready
    await flush()
    expect(changes.some((c) => c.status == 'live' && c.added.length == 0)).toBe(true)
  })
})

describe('held removals (safe points)', () => {
  it('additions apply at once; removals are held, reported, and applied on release', async () => {
    const { client, server, changes } = setup({ holdRemovals: true })
    const held: Holding[][] = []
    client.on('held', (r) => held.push(r))
    await client.ready
    await flush()
    server.change([h('doc:write')])
    await flush()
    expect(client.can('doc:write')).toBe(true)
    expect(client.can('doc:read')).toBe(true)
    expect(held).toEqual([[h('doc:read')]])
    expect(client.held).toEqual([h('doc:read')])
    expect(changes.at(-1)).toMatchObject({ added: [h('doc:write')], removed: [], held: [h('doc:read')] })
    // A later snapshot keeps it held without reporting it again.
    server.change([h('doc:write'), h('x:y')])
    await flush()
    expect(held).toHaveLength(1)
    expect(client.can('doc:read')).toBe(true)
    client.applySafePoint()
    expect(client.can('doc:read')).toBe(false)
    expect(changes.at(-1)).toMatchObject({ removed: [h('doc:read')], held: [] })
    expect(client.held).toEqual([])
  })

  it('a predicate holds only the removals that affect the current view', async () => {
    const server = new FakeServer()
    server.permissions = [h('doc:edit', 'project/7'), h('doc:edit', 'project/8')]
    const { client, changes } = setup({ holdRemovals: (x) => x.scope == 'project/7' }, server)
    await client.ready
    await flush()
    server.change([])
    await flush()
    expect(client.can('doc:edit', 'project/7')).toBe(true)
    expect(client.can('doc:edit', 'project/8')).toBe(false)
    expect(changes.at(-1)!.removed).toEqual([h('doc:edit', 'project/8')])
    client.release()
    expect(client.can('doc:edit', 'project/7')).toBe(false)
  })

  it('a held removal granted again is no longer held', async () => {
    const { client, server } = setup({ holdRemovals: true })
    await client.ready
    await flush()
    server.change([])
    await flush()
    expect(client.held).toHaveLength(1)
    server.change([h('doc:read')])
    await flush()
    expect(client.held).toEqual([])
    expect(client.can('doc:read')).toBe(true)
  })
})

describe('client.fetch', () => {
  it('reads Permissions-Revision from any response', async () => {
    const { client, server } = setup()
    await client.ready
    await flush()
    server.revision = 3
    server.app = () => new Response('ok', { headers: { 'Permissions-Revision': '3' } })
    await client.fetch(BASE + '/api/orders')
    await flush()
    expect(client.revision).toBe(3)
    expect(server.count(SNAP)).toBe(2)
  })

  it('attaches the token; on 401 asks for a forced refresh and retries once', async () => {
    const getToken = vi.fn(({ forceRefresh }: { forceRefresh: boolean }) => (forceRefresh ? 'fresh' : 'old'))
    const { client, server } = setup({ getToken })
    await client.ready
    const seen: (string | null)[] = []
    server.app = (req) => {
      seen.push(req.headers.get('authorization'))
      return new Response(null, { status: req.headers.get('authorization') == 'Bearer fresh' ? 200 : 401 })
    }
    const res = await client.fetch(BASE + '/api/x', { method: 'POST', body: 'payload' })
    expect(res.status).toBe(200)
    expect(seen).toEqual(['Bearer old', 'Bearer fresh'])
  })

  it('retries a 401 only once', async () => {
    const { client, server } = setup({ getToken: () => 't' })
    await client.ready
    let calls = 0
    server.app = () => (calls++, new Response(null, { status: 401 }))
    expect((await client.fetch(BASE + '/api/x')).status).toBe(401)
    expect(calls).toBe(2)
  })

  it('keeps a caller-set Authorization and sends no token to other origins', async () => {
    const { client, server } = setup({ getToken: () => 't' })
    await client.ready
    const seen: (string | null)[] = []
    const other = vi.fn(async (input: RequestInfo | URL, init?: RequestInit) => {
      const req = new Request(input, init)
      if (req.url.startsWith(BASE)) return server.fetch(req)
      seen.push(req.headers.get('authorization'))
      return new Response('ok')
    })
    const c2 = createPermissions({ baseUrl: BASE, fetch: other, getToken: () => 't', locks: null, BroadcastChannel: null, env: fakeEnv().env, initialSnapshot: server.snapshot(), transport: 'websocket', WebSocket: FakeWebSocket })
    open.push(c2)
    await c2.fetch('https://elsewhere.test/x')
    await c2.fetch('https://elsewhere.test/y', { headers: { Authorization: 'Basic abc' } })
    expect(seen).toEqual([null, 'Basic abc'])
  })

  it('403 refreshes the permissions and emits denied with the new state', async () => {
    const { client, server } = setup()
    await client.ready
    await flush()
    server.permissions = []
    server.revision = 2 // revoked; the event has not arrived yet
    server.app = () => new Response(null, { status: 403 })
    const denied = new Promise<import('../src/index.js').DeniedEvent>((r) => client.on('denied', r))
    const res = await client.fetch(BASE + '/api/invoices/1/approve', { method: 'POST' })
    expect(res.status).toBe(403)
    const event = await denied
    expect(event.response.status).toBe(403)
    expect(event.request.url).toBe(BASE + '/api/invoices/1/approve')
    expect(event.revision).toBe(2)
    expect(client.can('doc:read')).toBe(false)
    expect(server.requests(SNAP).at(-1)!.headers.get('if-none-match')).toBe('"1"')
  })
})

describe('WebSocket transport', () => {
  it('gets a ticket, connects, follows revisions, and treats revoked as terminal', async () => {
    const { client, server, clock } = setup({ transport: 'websocket', WebSocket: FakeWebSocket, getToken: () => 'tok' })
    const sessions: unknown[] = []
    client.on('session', (e) => sessions.push(e))
    await client.ready
    await flush()
    const ticket = server.requests('/v1/me/events/ticket', 'POST')[0]!
    expect(ticket.headers.get('x-requested-with')).toBe('permsync')
    expect(ticket.headers.get('authorization')).toBe('Bearer tok')
    const ws = FakeWebSocket.sockets[0]!
    expect(ws.url).toMatch(/^wss:\/\/perms\.test\/v1\/me\/ws\?ticket=t-\d+$/)
    expect(server.count(EVENTS)).toBe(0)
    ws.open()
    ws.message({ type: 'permissions', revision: 1 })
    expect(client.status).toBe('live')
    server.permissions = [h('doc:write')]
    server.revision = 2
    ws.message({ type: 'permissions', revision: 2 })
    await flush()
    expect(client.can('doc:write')).toBe(true)
    ws.message({ type: 'session', reason: 'revoked' })
    ws.serverClose(1000)
    await clock.advance(60000)
    expect(sessions).toEqual([{ reason: 'revoked' }])
    expect(FakeWebSocket.sockets).toHaveLength(1)
  })

  it('drops callbacks from a replaced socket (generation check)', async () => {
    const { client, server, clock } = setup({ transport: 'websocket', WebSocket: FakeWebSocket })
    await client.ready
    await flush()
    const first = FakeWebSocket.sockets[0]!
    first.open()
    first.serverClose(1006)
    await clock.advance(5000)
    const second = FakeWebSocket.sockets[1]!
    second.open()
    server.revision = 9
    first.message({ type: 'permissions', revision: 9 })
    first.serverClose(1006)
    await flush()
    expect(server.count(SNAP)).toBe(1)
    expect(client.status).toBe('live')
    expect(FakeWebSocket.sockets).toHaveLength(2)
    second.message({ type: 'permissions', revision: 9 })
    await flush()
    expect(client.revision).toBe(9)
  })

  it('close code 4401 is read as 401: fresh token, immediate retry', async () => {
    const getToken = vi.fn(() => 't')
    const { client, clock } = setup({ transport: 'websocket', WebSocket: FakeWebSocket, getToken })
    await client.ready
    await flush()
    FakeWebSocket.sockets[0]!.open()
    FakeWebSocket.sockets[0]!.serverClose(4401)
    await clock.advance(0)
    expect(FakeWebSocket.sockets).toHaveLength(2)
    expect(getToken).toHaveBeenLastCalledWith({ forceRefresh: true })
  })

  it("'auto' alternates to WebSocket when SSE keeps failing", async () => {
    const server = new FakeServer()
    server.eventsFailures = [{ status: 502 }]
    const { client, clock } = setup({ transport: 'auto', WebSocket: FakeWebSocket }, server)
    await client.ready
    await clock.advance(2000)
    expect(server.count(EVENTS)).toBe(1)
    expect(FakeWebSocket.sockets).toHaveLength(1)
  })
})

describe('close', () => {
  it('stops everything and rejects what is pending', async () => {
    const server = new FakeServer()
    server.holdSnapshots = true
    const { client, env, clock } = setup({}, server)
    await flush()
    const waiting = client.waitForRevision(5)
    client.close()
    await expect(client.ready).rejects.toThrow('closed')
    await expect(waiting).rejects.toThrow('closed')
    expect(client.status).toBe('closed')
    expect(server.openStreams).toBe(0)
    expect(env.listenerCount()).toBe(0)
    await clock.advance(120000)
    expect(server.count(EVENTS)).toBe(1)
    await expect(client.waitForRevision(9)).rejects.toThrow('closed')
  })
})
