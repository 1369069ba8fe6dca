// Test doubles for everything the client reaches outside itself: time, the network
// (a fake permsync server behind `fetch`), WebSocket, Web Locks, BroadcastChannel
// and the page's online/visibility signals. Contract tests later swap the fake
// server for the real binary by passing a real `baseUrl` and the global `fetch`.

import type { ChannelLike, Environment, Holding, LockManagerLike, Snapshot, Timers, WebSocketLike } from '../src/index.js'

/** Lets pending promise chains and stream reads run (several macrotask turns). */
export async function flush(turns = 10): Promise<void> {
  for (let i = 0; i < turns; i++) await new Promise((r) => setImmediate(r))
}

export interface Clock {
  now(): number
  timers: Timers
  /** Moves time forward, running due timers in order and letting promises settle between them. */
  advance(ms: number): Promise<void>
  /** Delays of timers still pending, for asserting on backoff. */
  pending(): number[]
}

export function createClock(start = Date.parse('2026-06-01T12:00:00Z')): Clock {
  let now = start
  let nextId = 1
  const queue = new Map<number, { at: number; fn: () => void; delay: number }>()
  const clock: Clock = {
    now: () => now,
    timers: {
      setTimeout(fn, ms) {
        const id = nextId++
        queue.set(id, { at: now + Math.max(0, ms), fn, delay: ms })
        return id
      },
      clearTimeout(id) {
        queue.delete(id as number)
      },
    },
    async advance(ms) {
      const target = now + ms
      await flush()
      for (;;) {
        let first: [number, { at: number; fn: () => void }] | undefined
        for (const entry of queue) if (entry[1].at <= target && (!first || entry[1].at < first[1].at)) first = entry
        if (!first) break
        queue.delete(first[0])
        now = first[1].at
        first[1].fn()
        await flush()
      }
      now = target
      await flush()
    },
    pending: () => [...queue.values()].map((t) => t.at - now),
  }
  return clock
}

export interface LoggedRequest {
  at: number
  method: string
  path: string
  headers: Headers
}

interface Stream {
  controller: ReadableStreamDefaultController<Uint8Array>
  open: boolean
}

/**
 * A permsync server as seen through `fetch`: snapshot with ETag/304, SSE events, the
 * ticket endpoint, and an app backend (`app`) for `client.fetch` tests.
 */
export class FakeServer {
  user = 'alice'
  revision = 1
  permissions: Holding[] = [{ permission: 'doc:read', scope: null, expires_at: null }]
  log: LoggedRequest[] = []
  /** Tokens accepted; `undefined` accepts any (and none). */
  validTokens: Set<string> | undefined
  /** Statuses to answer the next event-stream (or ticket) requests with, in order. */
  eventsFailures: { status: number; retryAfter?: string }[] = []
  /** Statuses to answer the next snapshot requests with, in order. */
  snapshotFailures: number[] = []
  /** While set, snapshot responses wait until `releaseSnapshots()`. */
  holdSnapshots = false
  /** A lagging node: snapshots report this revision instead of the current one. */
  lagRevision: number | undefined
  app: (req: Request) => Response | Promise<Response> = () => new Response('ok')
  streams: Stream[] = []
  /** Clock used to timestamp the log. */
  now: () => number = Date.now
  private waiting: (() => void)[] = []
  private encoder = new TextEncoder()

  snapshot(): Snapshot {
    return { user: this.user, revision: this.lagRevision ?? this.revision, permissions: structuredClone(this.permissions), roles: [], next_change_at: null }
  }

  count(path: string, method = 'GET'): number {
    return this.requests(path, method).length
  }

  requests(path: string, method = 'GET'): LoggedRequest[] {
    return this.log.filter((r) => r.path == path && r.method == method)
  }

  /** Time between successive requests to `path`. */
  gaps(path: string, method = 'GET'): number[] {
    const at = this.requests(path, method).map((r) => r.at)
    return at.slice(1).map((t, i) => t - at[i]!)
  }

  get openStreams(): number {
    return this.streams.filter((s) => s.open).length
  }

  releaseSnapshots() {
    this.holdSnapshots = false
    this.waiting.splice(0).forEach((f) => f())
  }

  /** Changes the permissions and pushes the new revision to every open stream. */
  change(permissions: Holding[], revision = this.revision + 1) {
    this.permissions = permissions
    this.push(revision)
  }

  push(revision = this.revision + 1) {
    this.revision = revision
    this.send(`id: ${revision}\nevent: permissions\ndata: {"revision":${revision}}\n\n`)
  }

  send(text: string) {
    for (const s of this.streams) if (s.open) s.controller.enqueue(this.encoder.encode(text))
  }

  session(reason: string) {
    this.send(`event: session\ndata: {"reason":"${reason}"}\n\n`)
    this.endStreams()
  }

  endStreams() {
    for (const s of this.streams)
      if (s.open) {
        s.open = false
        s.controller.close()
      }
  }

  private authorized(headers: Headers): boolean {
    if (!this.validTokens) return true
    const auth = headers.get('authorization')
    return !!auth && this.validTokens.has(auth.replace(/^Bearer /, ''))
  }

  private problem(status: number, extra: Record<string, string> = {}): Response {
    return new Response(JSON.stringify({ type: 'about:blank', title: 'error', status, code: 'x' }), {
      status,
      headers: { 'content-type': 'application/problem+json', ...extra },
    })
  }

  fetch = async (input: RequestInfo | URL, init?: RequestInit): Promise<Response> => {
    const req = new Request(input, init)
    const url = new URL(req.url)
    this.log.push({ at: this.now(), method: req.method, path: url.pathname, headers: new Headers(req.headers) })
    const rev = { 'Permissions-Revision': String(this.revision) }
    if (url.pathname == '/v1/me/permissions') {
      // The answer reflects the state when the request arrived, however late it is sent.
      const snap = this.snapshot()
      if (this.holdSnapshots) await new Promise<void>((r) => this.waiting.push(r))
      const fail = this.snapshotFailures.shift()
      if (fail) return this.problem(fail)
      if (!this.authorized(req.headers)) return this.problem(401)
      if (req.headers.get('if-none-match') == `"${snap.revision}"`) return new Response(null, { status: 304, headers: { ETag: `"${snap.revision}"`, ...rev } })
      return Response.json(snap, { headers: { ETag: `"${snap.revision}"`, 'Cache-Control': 'no-store', ...rev } })
    }
    if (url.pathname == '/v1/me/events/ticket' && req.method == 'POST') {
      const fail = this.eventsFailures.shift()
      if (fail) return this.problem(fail.status, fail.retryAfter ? { 'Retry-After': fail.retryAfter } : {})
      if (!this.authorized(req.headers)) return this.problem(401)
      return Response.json({ ticket: 't-' + this.log.length, expires_in: 30 })
    }
    if (url.pathname == '/v1/me/events') {
      const fail = this.eventsFailures.shift()
      if (fail) return this.problem(fail.status, fail.retryAfter ? { 'Retry-After': fail.retryAfter } : {})
      if (!this.authorized(req.headers)) return this.problem(401)
      let stream!: Stream
      const body = new ReadableStream<Uint8Array>({
        start: (controller) => {
          stream = { controller, open: true }
          this.streams.push(stream)
        },
        cancel: () => {
          stream.open = false
        },
      })
      req.signal.addEventListener('abort', () => {
        if (!stream.open) return
        stream.open = false
        stream.controller.error(new DOMException('aborted', 'AbortError'))
      })
      // The first event, at once: where the user stands now.
      stream.controller.enqueue(this.encoder.encode(`retry: 2000\n\n: hello\n\nid: ${this.revision}\nevent: permissions\ndata: {"revision":${this.revision}}\n\n`))
      return new Response(body, { headers: { 'content-type': 'text/event-stream', ...rev } })
    }
    return this.app(req)
  }
}

/** A WebSocket double; the test drives it through the static `sockets` list. */
export class FakeWebSocket implements WebSocketLike {
  static sockets: FakeWebSocket[] = []
  onopen: ((event: unknown) => void) | null = null
  onmessage: ((event: { data: unknown }) => void) | null = null
  onclose: ((event: { code: number }) => void) | null = null
  onerror: ((event: unknown) => void) | null = null
  closed = false
  constructor(readonly url: string) {
    FakeWebSocket.sockets.push(this)
  }
  open() {
    this.onopen?.({})
  }
  message(data: unknown) {
    this.onmessage?.({ data: JSON.stringify(data) })
  }
  serverClose(code: number) {
    this.closed = true
    this.onclose?.({ code })
  }
  close() {
    this.closed = true
  }
}

/** Web Locks with exclusive locks and a FIFO queue per name, as browsers grant them. */
export class FakeLocks implements LockManagerLike {
  private held = new Set<string>()
  private queues = new Map<string, (() => void)[]>()

  request(name: string, options: { signal?: AbortSignal }, callback: (lock: unknown) => Promise<unknown>): Promise<unknown> {
    return new Promise((resolve, reject) => {
      const grant = () => {
        this.held.add(name)
        Promise.resolve()
          .then(() => callback({ name }))
          .then(resolve, reject)
          .finally(() => {
            this.held.delete(name)
            this.queues.get(name)?.shift()?.()
          })
      }
      if (!this.held.has(name)) return grant()
      const queue = this.queues.get(name) ?? []
      this.queues.set(name, queue)
      queue.push(grant)
      options.signal?.addEventListener('abort', () => {
        const i = queue.indexOf(grant)
        if (i >= 0) {
          queue.splice(i, 1)
          reject(new DOMException('aborted', 'AbortError'))
        }
      })
    })
  }
}

/** BroadcastChannel among the clients of one test: delivers to every other channel of the same name, asynchronously, cloned. */
export function channelHub() {
  const channels = new Set<FakeChannel>()
  const sent: unknown[] = []
  class FakeChannel implements ChannelLike {
    onmessage: ((event: { data: unknown }) => void) | null = null
    constructor(readonly name: string) {
      channels.add(this)
    }
    postMessage(message: unknown) {
      if (!channels.has(this)) throw new Error('InvalidStateError: channel closed')
      sent.push(message)
      const copy = structuredClone(message)
      for (const c of channels) if (c != this && c.name == this.name) setImmediate(() => channels.has(c) && c.onmessage?.({ data: copy }))
    }
    close() {
      channels.delete(this)
    }
  }
  return { Channel: FakeChannel, sent }
}

export function fakeEnv() {
  const listeners = new Map<string, Set<() => void>>()
  const state = { online: true, visible: true }
  const env: Environment = {
    online: () => state.online,
    visible: () => state.visible,
    on(type, fn) {
      const set = listeners.get(type) ?? new Set()
      listeners.set(type, set)
      set.add(fn)
      return () => set.delete(fn)
    },
  }
  const fire = (type: 'online' | 'offline' | 'visibilitychange') => listeners.get(type)?.forEach((f) => f())
  return {
    env,
    state,
    goOffline() {
      state.online = false
      fire('offline')
    },
    goOnline() {
      state.online = true
      fire('online')
    },
    setVisible(visible: boolean) {
      state.visible = visible
      fire('visibilitychange')
    },
    listenerCount: () => [...listeners.values()].reduce((n, s) => n + s.size, 0),
  }
}

export const BASE = 'https://perms.test'
