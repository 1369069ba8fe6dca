// The two ways to hear about revisions: SSE over fetch (headers allowed) and WebSocket
// with a single-use ticket. Each transport reports at most one `end`; the client drops
// anything a transport says after it was replaced (generation check in client.ts).

import { sseParser } from './sse.js'
import { retryAfter } from './policy.js'
import type { Timers, WebSocketLike } from './types.js'

export interface StreamCallbacks {
  /** The stream is open (HTTP 200 / WebSocket open). */
  open(): void
  /** The server's current revision for this user. */
  revision(revision: number): void
  /** The server's `retry:` hint in ms. */
  retry(ms: number): void
  /** The stream is over: a `session` reason, an HTTP status or WebSocket code, or 0 (network / ended). */
  end(why: string | number, retryAfterMs: number): void
}

type Fetch = (input: RequestInfo | URL, init?: RequestInit) => Promise<Response>

/** Reads one server message (SSE `data:` of `event: permissions|session`, or a WebSocket frame). */
const message = (type: string | undefined, data: unknown, cb: StreamCallbacks, end: (why: string | number) => void) => {
  try {
    const m = JSON.parse(String(data))
    type = type || m.type
    if (type == 'permissions' && typeof m.revision == 'number') cb.revision(m.revision)
    else if (type == 'session') end(String(m.reason))
  } catch {
    // A frame we cannot read carries nothing we could act on; the next one will.
  }
}

export function openSse(url: string, init: RequestInit, fetch: Fetch, timers: Timers, idleMs: number, now: () => number, cb: StreamCallbacks): () => void {
  const abort = new AbortController()
  let idle: unknown
  let over = false
  const end = (why: string | number, after = 0) => {
    if (over) return
    over = true
    timers.clearTimeout(idle)
    abort.abort()
    cb.end(why, after)
  }
  // The server sends a keepalive at least every 15 s; silence beyond idleMs means a
  // half-open connection that TCP alone may not notice for minutes.
  const alive = () => {
    timers.clearTimeout(idle)
    idle = timers.setTimeout(() => end(0), idleMs)
  }
  ;(async () => {
    const res = await fetch(url, { ...init, headers: { ...(init.headers as Record<string, string>), Accept: 'text/event-stream' }, signal: abort.signal })
    if (!res.ok || !res.body) return end(res.ok ? 0 : res.status, retryAfter(res, now()))
    cb.open()
    alive()
    const reader = res.body.getReader()
    const decoder = new TextDecoder()
    const feed = sseParser((e) => message(e.type, e.data, cb, end), cb.retry)
    for (;;) {
      const { done, value } = await reader.read()
      if (over) return
      if (done) return end(0)
      alive()
      feed(decoder.decode(value, { stream: true }))
    }
  })().catch(() => end(0))
  return () => {
    over = true
    timers.clearTimeout(idle)
    abort.abort()
  }
}

export function openWs(ticketUrl: string, wsUrl: () => string, init: RequestInit, fetch: Fetch, WS: new (url: string) => WebSocketLike, now: () => number, cb: StreamCallbacks): () => void {
  let ws: WebSocketLike | undefined
  let over = false
  const end = (why: string | number, after = 0) => {
    if (over) return
    over = true
    ws?.close()
    cb.end(why, after)
  }
  ;(async () => {
    // Cookie-authenticated POSTs need this header (PROTOCOL §3, CSRF); with a bearer token it is harmless.
    const res = await fetch(ticketUrl, { ...init, method: 'POST', headers: { ...(init.headers as Record<string, string>), 'X-Requested-With': 'permsync' } })
    if (!res.ok) return end(res.status, retryAfter(res, now()))
    const { ticket } = await res.json()
    if (over) return
    const socket = (ws = new WS(wsUrl() + '?ticket=' + encodeURIComponent(ticket)))
    socket.onopen = () => !over && cb.open()
    socket.onmessage = (e) => !over && message(undefined, e.data, cb, end)
    // Codes 4000–4999 carry 4000 + an HTTP status; see policy.ts.
    socket.onclose = (e) => end(e.code >= 4000 && e.code < 5000 ? e.code - 4000 : e.code)
    socket.onerror = () => end(0)
  })().catch(() => end(0))
  return () => {
    over = true
    ws?.close()
  }
}
