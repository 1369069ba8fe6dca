// The client over real HTTP with its default environment (global fetch, real timers,
// no window): a small node:http stand-in serves the two endpoints the client reads.
// Contract tests against the permsync binary follow the same shape with `baseUrl`
// pointed at it.

import { createServer, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { afterEach, describe, expect, it } from 'vitest'
import { createPermissions, type Holding, type PermissionsClient } from '../src/index.js'

interface Standin {
  url: string
  revision: number
  permissions: Holding[]
  streams: Set<ServerResponse>
  snapshotRequests: { ifNoneMatch?: string; auth?: string }[]
  eventRequests: number
  push(permissions: Holding[]): void
  dropStreams(): void
  close(): Promise<void>
}

async function standin(): Promise<Standin> {
  const state = {
    revision: 1,
    permissions: [{ permission: 'doc:read', scope: null, expires_at: null }] as Holding[],
    streams: new Set<ServerResponse>(),
    snapshotRequests: [] as { ifNoneMatch?: string; auth?: string }[],
    eventRequests: 0,
  }
  const server = createServer((req, res) => {
    if (req.headers.authorization != 'Bearer secret') {
      res.writeHead(401, { 'content-type': 'application/problem+json', 'www-authenticate': 'Bearer realm="permsync", error="invalid_token"' })
      return res.end('{"status":401,"code":"invalid_token"}')
    }
    const common = { 'Permissions-Revision': String(state.revision), 'Cache-Control': 'no-store' }
    if (req.url == '/v1/me/permissions') {
      state.snapshotRequests.push({ ifNoneMatch: req.headers['if-none-match'], auth: req.headers.authorization })
      const etag = `"${state.revision}"`
      if (req.headers['if-none-match'] == etag) {
        res.writeHead(304, { ETag: etag, ...common })
        return res.end()
      }
      res.writeHead(200, { 'content-type': 'application/json', ETag: etag, ...common })
      return res.end(JSON.stringify({ user: 'alice', revision: state.revision, permissions: state.permissions, roles: [], next_change_at: null }))
    }
    if (req.url == '/v1/me/events') {
      state.eventRequests++
      res.writeHead(200, { 'content-type': 'text/event-stream', ...common })
      res.write(`retry: 50\n\nid: ${state.revision}\nevent: permissions\ndata: {"revision":${state.revision}}\n\n`)
      state.streams.add(res)
      req.on('close', () => state.streams.delete(res))
      return
    }
    res.writeHead(404)
    res.end()
  })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  const { port } = server.address() as AddressInfo
  return Object.assign(state, {
    url: `http://127.0.0.1:${port}`,
    push(permissions: Holding[]) {
      state.permissions = permissions
      state.revision++
      // Split one event over two writes, with a CRLF line end, as a proxy might.
      for (const s of state.streams) {
        s.write(`: keepalive\r\n\r\nid: ${state.revision}\r\nevent: permis`)
        s.write(`sions\r\ndata: {"revision":${state.revision}}\r\n\r\n`)
      }
    },
    dropStreams() {
      for (const s of state.streams) s.destroy()
    },
    close: () =>
      new Promise<void>((r) => {
        for (const s of state.streams) s.destroy()
        server.close(() => r())
      }),
  })
}

const until = async (cond: () => boolean, ms = 3000) => {
  const end = Date.now() + ms
  while (!cond()) {
    if (Date.now() > end) throw new Error('timed out')
    await new Promise((r) => setTimeout(r, 5))
  }
}

let cleanup: (() => unknown)[] = []
afterEach(async () => {
  for (const f of cleanup.reverse()) await f()
  cleanup = []
})

describe('over real HTTP, default environment', () => {
  it('loads, streams, refetches conditionally, reconnects and closes', async () => {
    const s = await standin()
    cleanup.push(() => s.close())
    const client: PermissionsClient = createPermissions({ baseUrl: s.url + '/', getToken: () => 'secret', minDelayMs: 20, maxDelayMs: 100 })
    cleanup.push(() => client.close())

    await client.ready
    expect(client.can('doc:read')).toBe(true)
    await until(() => client.status == 'live')
    expect(client.leader).toBe(true)

    s.push([{ permission: 'doc:write', scope: 'project/7', expires_at: null }])
    await until(() => client.revision == 2)
    expect(client.can('doc:read')).toBe(false)
    expect(client.can('doc:write', 'project/7/item/3')).toBe(true)
    expect(s.snapshotRequests.map((r) => r.ifNoneMatch)).toEqual([undefined, '"1"'])

    s.dropStreams()
    await until(() => s.eventRequests == 2 && client.status == 'live')
    // Reconnected at the same revision: nothing to load.
    expect(s.snapshotRequests).toHaveLength(2)

    client.close()
    await until(() => s.streams.size == 0)
    expect(client.status).toBe('closed')
  })

  it('client.fetch reads the header of a real response and retries a 401 with a fresh token', async () => {
    const s = await standin()
    cleanup.push(() => s.close())
    const calls: boolean[] = []
    const client = createPermissions({
      baseUrl: s.url,
      getToken: ({ forceRefresh }) => (calls.push(forceRefresh), forceRefresh ? 'secret' : 'expired'),
      minDelayMs: 20,
      maxDelayMs: 100,
    })
    cleanup.push(() => client.close())
    await client.ready
    const res = await client.fetch(s.url + '/v1/me/permissions')
    expect(res.status).toBe(200)
    expect(calls).toContain(true)
  })
})
