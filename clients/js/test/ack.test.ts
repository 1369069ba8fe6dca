import { afterEach, describe, expect, it } from 'vitest'
import { createPermissions, type PermissionsClient, type PermissionsOptions } from '../src/index.js'
import { BASE, FakeServer, createClock, fakeEnv, flush } from './harness.js'

let open: PermissionsClient[] = []
afterEach(() => {
  open.forEach((c) => c.close())
  open = []
})

function setup(options: Partial<PermissionsOptions> = {}) {
  const server = new FakeServer()
  const clock = createClock()
  server.now = clock.now
  const acks: Record<string, unknown>[] = []
  server.app = async (req) => {
    if (new URL(req.url).pathname == '/v1/me/ack' && req.method == 'POST') {
      acks.push(await req.json())
      return new Response(null, { status: 204, headers: { 'Permissions-Revision': String(server.revision) } })
    }
    return new Response('not found', { status: 404 })
  }
  const client = createPermissions({
    baseUrl: BASE,
    fetch: server.fetch,
    timers: clock.timers,
    now: clock.now,
    random: () => 0.5,
    env: fakeEnv().env,
    locks: null,
    BroadcastChannel: null,
    getToken: () => 'tok',
    ...options,
  })
  open.push(client)
  return { client, server, clock, acks }
}

describe('delivery acknowledgements (ack)', () => {
  it('are off by default', async () => {
    const { client, server, clock } = setup()
    await client.ready
    server.push()
    await clock.advance(60000)
    expect(server.count('/v1/me/ack', 'POST')).toBe(0)
  })

  it('report each applied revision with the tab, the leader flag and the label', async () => {
    const { client, server, acks } = setup({ ack: { tab: 'tab-1', label: () => 'shop ' + client.revision } })
    await client.ready
    await flush()
    expect(acks[0]).toEqual({ revision: 1, tab: 'tab-1', leader: true, label: 'shop 1' })
    expect(server.requests('/v1/me/ack', 'POST')[0]!.headers.get('authorization')).toBe('Bearer tok')
    server.change([{ permission: 'doc:edit', scope: null, expires_at: null }])
    await flush()
    expect(client.revision).toBe(2)
    expect(acks.at(-1)).toMatchObject({ revision: 2, tab: 'tab-1' })
    const count = acks.length
    // Nothing new: no report until the heartbeat.
    server.push(2)
    await flush()
    expect(acks.length).toBe(count)
  })

  it('repeat the latest revision every intervalMs and say closed on close()', async () => {
    const { client, clock, acks } = setup({ ack: { intervalMs: 5000 } })
    await client.ready
    await flush()
    const first = acks.length
    const tab = acks[0]!.tab
    expect(tab).toMatch(/^[A-Za-z0-9_-]{1,64}$/)
    await clock.advance(5000)
    expect(acks.length).toBe(first + 1)
    await clock.advance(5000)
    expect(acks.length).toBe(first + 2)
    expect(acks.at(-1)).toMatchObject({ revision: 1, tab })
    client.close()
    await flush()
    expect(acks.at(-1)).toMatchObject({ revision: 1, tab, closed: true })
    const after = acks.length
    await clock.advance(20000)
    expect(acks.length).toBe(after)
  })
})
