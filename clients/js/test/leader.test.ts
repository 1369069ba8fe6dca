import { afterEach, describe, expect, it } from 'vitest'
import { createPermissions, type Holding, type PermissionsClient, type PermissionsOptions } from '../src/index.js'
import { BASE, FakeLocks, FakeServer, channelHub, createClock, fakeEnv, flush } from './harness.js'

const SNAP = '/v1/me/permissions'
const EVENTS = '/v1/me/events'
const h = (permission: string, scope: string | null = null): Holding => ({ permission, scope, expires_at: null })

let open: PermissionsClient[] = []
afterEach(() => {
  open.forEach((c) => c.close())
  open = []
})

/** One browser: a fake server, a lock manager and a channel hub shared by its tabs. */
function browser() {
  const clock = createClock()
  const server = new FakeServer()
  server.now = clock.now
  const locks = new FakeLocks()
  const hub = channelHub()
  const tab = (options: Partial<PermissionsOptions> = {}) => {
    const env = fakeEnv()
    const client = createPermissions({
      baseUrl: BASE,
      fetch: server.fetch,
      timers: clock.timers,
      now: clock.now,
      random: () => 1,
      env: env.env,
      locks,
      BroadcastChannel: hub.Channel,
      ...options,
    })
    open.push(client)
    return Object.assign(client, { env })
  }
  return { clock, server, locks, hub, tab }
}

describe('one connection per browser', () => {
  it('the first tab leads; the others get snapshots and status over the channel and fetch nothing', async () => {
    const { server, tab } = browser()
    const a = tab()
    await flush()
    const b = tab()
    const c = tab()
    await Promise.all([a.ready, b.ready, c.ready])
    await flush()
    expect([a.leader, b.leader, c.leader]).toEqual([true, false, false])
    expect(server.count(EVENTS)).toBe(1)
    expect(server.count(SNAP)).toBe(1)
    expect([b.status, c.status]).toEqual(['live', 'live'])
    expect(b.can('doc:read')).toBe(true)

    server.change([h('doc:read'), h('doc:write')])
    await flush()
    expect(server.count(SNAP)).toBe(2)
    for (const t of [a, b, c]) {
      expect(t.revision).toBe(2)
      expect(t.can('doc:write')).toBe(true)
    }
  })

  it('tabs opened together still elect one leader and load once', async () => {
    const { server, tab } = browser()
    const tabs = [tab(), tab(), tab()]
    await Promise.all(tabs.map((t) => t.ready))
    await flush()
    expect(tabs.filter((t) => t.leader)).toHaveLength(1)
    expect(server.count(SNAP)).toBe(1)
    expect(server.count(EVENTS)).toBe(1)
  })

  it('when the leader closes, the next tab takes over the stream without reloading', async () => {
    const { server, tab } = browser()
    const a = tab()
    await flush()
    const b = tab()
    const c = tab()
    const leaders: boolean[] = []
    b.on('leader', (x) => leaders.push(x))
    await b.ready
    await flush()
    a.close()
    await flush()
    expect(b.leader).toBe(true)
    expect(c.leader).toBe(false)
    expect(leaders).toEqual([true])
    expect(server.count(EVENTS)).toBe(2)
    expect(server.openStreams).toBe(1)
    expect(server.count(SNAP)).toBe(1)
    expect(b.status).toBe('live')

    server.change([h('doc:admin')])
    await flush()
    expect(c.can('doc:admin')).toBe(true)
    expect(c.can('doc:read')).toBe(false)

    b.close()
    await flush()
    expect(c.leader).toBe(true)
    expect(server.openStreams).toBe(1)
  })

  it("a follower's Permissions-Revision header goes to the leader, which loads once for all", async () => {
    const { server, tab } = browser()
    const a = tab()
    await flush()
    const b = tab()
    await b.ready
    await flush()
    server.permissions = [h('doc:write')]
    server.revision = 2 // no event yet
    server.app = () => new Response('ok', { headers: { 'Permissions-Revision': '2' } })
    await b.fetch(BASE + '/api/x')
    await flush()
    expect(a.revision).toBe(2)
    expect(b.revision).toBe(2)
    expect(server.count(SNAP)).toBe(2)
  })

  it('a follower whose leader stays silent loads for itself after followerWaitMs', async () => {
    const { server, locks, clock, tab } = browser()
    // A leader that holds the lock but never answers (a frozen tab, say).
    locks.request('permsync:' + BASE, {}, () => new Promise(() => {}))
    const b = tab({ followerWaitMs: 2000 })
    await clock.advance(1999)
    expect(server.count(SNAP)).toBe(0)
    await clock.advance(1)
    await b.ready
    expect(server.count(SNAP)).toBe(1)
    expect(server.count(EVENTS)).toBe(0)
    expect(b.leader).toBe(false)
  })

  it("a follower's snapshot load (refresh, 403) is shared with the other tabs", async () => {
    const { server, tab } = browser()
    const a = tab()
    await flush()
    const b = tab()
    await b.ready
    await flush()
    server.permissions = []
    server.revision = 2
    server.app = () => new Response(null, { status: 403 })
    await b.fetch(BASE + '/api/x')
    await flush()
    expect(b.can('doc:read')).toBe(false)
    expect(a.can('doc:read')).toBe(false)
    expect(a.revision).toBe(2)
  })

  it('a terminal session end reaches the followers; refresh() in a follower lets the leader resume', async () => {
    const { server, clock, tab } = browser()
    const a = tab()
    await flush()
    const b = tab()
    const sessions: unknown[] = []
    b.on('session', (e) => sessions.push(e))
    await b.ready
    await flush()
    server.session('logged_out')
    await clock.advance(60000)
    expect(sessions).toEqual([{ reason: 'logged_out' }])
    expect(b.status).toBe('stale')
    expect(server.count(EVENTS)).toBe(1)
    await b.refresh()
    await flush()
    expect(server.count(EVENTS)).toBe(2)
    expect(a.status).toBe('live')
    expect(b.status).toBe('live')
  })

  it('without Web Locks or BroadcastChannel each tab connects on its own', async () => {
    const { server, tab } = browser()
    const a = tab({ locks: null })
    const b = tab({ BroadcastChannel: null })
    await Promise.all([a.ready, b.ready])
    await flush()
    expect([a.leader, b.leader]).toEqual([true, true])
    expect(server.count(EVENTS)).toBe(2)
  })

  it('shared: false opts out', async () => {
    const { server, tab } = browser()
    const a = tab({ shared: false })
    const b = tab({ shared: false })
    await Promise.all([a.ready, b.ready])
    await flush()
    expect(server.count(EVENTS)).toBe(2)
  })

  it('different keys do not share', async () => {
    const { server, tab } = browser()
    const a = tab({ key: 'permsync:alice' })
    const b = tab({ key: 'permsync:bob' })
    await Promise.all([a.ready, b.ready])
    await flush()
    expect([a.leader, b.leader]).toEqual([true, true])
    expect(server.count(EVENTS)).toBe(2)
  })

  it('a closed follower leaves the lock queue and posts nothing more', async () => {
    const { hub, tab } = browser()
    const a = tab()
    await flush()
    const b = tab()
    await b.ready
    await flush()
    b.close()
    const sent = hub.sent.length
    a.close()
    await flush()
    expect(b.leader).toBe(false)
    expect(hub.sent.length).toBe(sent)
  })
})
