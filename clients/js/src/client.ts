// The client: a cache of the user's snapshot kept current by one revision number.
// Everything that can tell a revision (stream events, `Permissions-Revision` headers,
// relayed messages from the leader tab, `waitForRevision`) goes through `note()`;
// everything that loads a snapshot goes through the single-flight `sync()`; every
// snapshot goes through `apply()`, which only ever moves forward.

import { acknowledge } from './ack.js'
import { checkRows, toRows, type Row } from './match.js'
import { backoff, classify, retryAfter } from './policy.js'
import { openSse, openWs } from './transport.js'
import type {
  Change,
  ChannelLike,
  Environment,
  Events,
  Holding,
  PermissionsClient,
  PermissionsOptions,
  Snapshot,
  Status,
  Timers,
} from './types.js'

/** Messages between tabs on the BroadcastChannel. */
type Message =
  | { t: 'hello' }
  | { t: 'snap'; s: Snapshot }
  | { t: 'status'; s: Status }
  | { t: 'need'; r: number }
  | { t: 'session'; r: string | number }
  | { t: 'kick' }

const noop = () => {}
const key = (h: Holding) => h.permission + ' ' + h.scope
/** setTimeout overflows above 2^31-1 ms (~24.8 days) and fires at once. */
const MAX_DELAY = 2147483647

export class HttpError extends Error {
  constructor(
    readonly status: number,
    readonly retryAfterMs = 0,
  ) {
    super('HTTP ' + status)
  }
}

export function createPermissions(o: PermissionsOptions): PermissionsClient {
  const g = globalThis as any
  const base = o.baseUrl.replace(/\/+$/, '')
  const doFetch = o.fetch ?? ((i: RequestInfo | URL, n?: RequestInit) => g.fetch(i, n) as Promise<Response>)
  const timers: Timers = o.timers ?? { setTimeout: (f, ms) => g.setTimeout(f, ms), clearTimeout: (id) => g.clearTimeout(id) }
  const now = o.now ?? Date.now
  const random = o.random ?? Math.random
  const staleAfter = o.staleAfterMs ?? 30000
  const minDelay = o.minDelayMs ?? 500
  const maxDelay = o.maxDelayMs ?? 30000
  const mode = o.transport ?? 'sse'
  const WS = o.WebSocket ?? g.WebSocket
  const hold = o.holdRemovals
  const env: Environment = o.env ?? {
    online: () => g.navigator?.onLine !== false,
    visible: () => g.document?.visibilityState !== 'hidden',
    on(type, fn) {
      const target = type == 'visibilitychange' ? g.document : g
      target?.addEventListener?.(type, fn)
      return () => target?.removeEventListener?.(type, fn)
    },
  }
  const locks = o.locks === undefined ? g.navigator?.locks : o.locks
  const Channel = o.BroadcastChannel === undefined ? g.BroadcastChannel : o.BroadcastChannel
  const name = o.key ?? 'permsync:' + base
  const origin = (u: string) => {
    try {
      return new URL(u, g.location?.href).origin
    } catch {
      return ''
    }
  }
  const authorize = o.authorize ?? ((u: string) => [origin(base || '/'), g.location?.origin].includes(origin(u)))

  // --- state -------------------------------------------------------------------
  let snap: Snapshot | null = null
  let rows: Row[] = []
  let held: Holding[] = []
  /** Highest revision heard of from any source; the cache should reach it. */
  let known = 0
  let status: Status = 'connecting'
  let leader = false
  let connected = false
  /** The stream ended for good; `deadToken` is the token it ended with. */
  let terminated = false
  let deadToken: unknown
  let closed = false
  let online = env.online()
  let downSince = now()
  let behindSince = 0
  /** Bumped whenever a transport is replaced, so its late callbacks are dropped. */
  let gen = 0
  let stopStream: (() => void) | null = null
  let attempt = 0
  let authTries = 0
  let floor = minDelay
  let useWs = mode == 'websocket'
  let forceToken = false
  /** The token the current (or last) stream was opened with. */
  let streamToken: unknown
  /** The next snapshot is loaded unconditionally and replaces the cache (after a session ended). */
  let reload = false
  let flight: Promise<void> | null = null
  let again = false
  let syncAttempt = 0
  const timer: Record<string, unknown> = {}
  const handlers: Record<string, Set<(e: any) => void>> = {}
  let waiters: { n: number; ok: () => void; no: (e: unknown) => void }[] = []
  let resolveReady!: () => void
  let rejectReady!: (e: unknown) => void
  const ready = new Promise<void>((ok, no) => ((resolveReady = ok), (rejectReady = no)))
  // Nobody has to await `ready`; keep an early rejection from being reported as unhandled.
  ready.catch(noop)
  let channel: ChannelLike | null = null
  let releaseLock = noop
  const lockAbort = new AbortController()
  const offs: (() => void)[] = []

  const later = (id: string, fn: (() => void) | null, ms = 0) => {
    timers.clearTimeout(timer[id])
    timer[id] = fn && timers.setTimeout(fn, Math.min(ms, MAX_DELAY))
  }

  const emit = <K extends keyof Events>(type: K, event: Events[K]) => {
    handlers[type]?.forEach((fn) => {
      try {
        fn(event)
      } catch (e) {
        // One failing listener must not starve the others or break the client.
        timers.setTimeout(() => {
          throw e
        }, 0)
      }
    })
  }

  const post = (m: Message) => channel?.postMessage(m)

  const changed = (added: Holding[], removed: Holding[]) =>
    emit('change', { added, removed, held, revision: snap?.revision ?? 0, status } as Change)

  const behind = () => !snap || snap.revision < known

  // --- status --------------------------------------------------------------------

  const setStatus = (s: Status) => {
    if (s == status) return
    status = s
    if (leader) post({ t: 'status', s })
    emit('status', s)
    changed([], [])
  }

  /** Recomputes the leader's status; followers take the leader's word instead. */
  const update = () => {
    if (closed) return setStatus('closed')
    if (!leader) return
    if (!behind()) behindSince = 0
    else if (!behindSince) behindSince = now()
    const since = Math.min(connected ? Infinity : downSince, behindSince || Infinity)
    const stale = terminated || now() - since >= staleAfter
    later('stale', !stale && since < Infinity ? update : null, since + staleAfter - now())
    setStatus(stale ? 'stale' : connected ? 'live' : online ? 'connecting' : 'offline')
  }

  // --- snapshot --------------------------------------------------------------------

  const rebuild = () => {
    rows = toRows(snap ? snap.permissions.concat(held) : held)
    // Expiry is local: tell listeners when the next holding runs out, rather than
    // waiting for the server's revision bump about a second later.
    let next = Infinity
    const t = now()
    for (const r of rows) if (r.e > t && r.e < next) next = r.e
    later('expiry', next < Infinity ? expire : null, next - t)
  }

  let expiredAt = now()
  function expire() {
    const t = now()
    const gone = [...(snap?.permissions ?? []), ...held].filter((h) => {
      const e = h.expires_at == null ? Infinity : Date.parse(h.expires_at)
      return e > expiredAt && e <= t
    })
    expiredAt = t
    rebuild()
    if (gone.length) changed([], gone)
  }

  const apply = (s: Snapshot, relayed?: boolean) => {
    // Another user (a new login here or in the leader tab) replaces the cache whatever
    // its revision, and nothing of the previous user is held back.
    const replace = reload || (snap && s.user != snap.user)
    // Otherwise the cache never moves back: an older or equal snapshot (a lagging
    // node, a late relay) carries nothing new.
    if (closed || (snap && !replace && s.revision <= snap.revision)) return
    reload = false
    if (replace) (known = 0), (held = [])
    const t = now()
    const counts = (h: Holding) => h.expires_at == null || Date.parse(h.expires_at) > t
    const before = (snap?.permissions ?? []).concat(held).filter(counts)
    const wasHeld = new Set(held.map(key))
    const prev = new Set(before.map(key))
    const next = new Set(s.permissions.map(key))
    const added = s.permissions.filter((h) => counts(h) && !prev.has(key(h)))
    const gone = before.filter((h) => !next.has(key(h)))
    const keep = replace ? [] : gone.filter((h) => wasHeld.has(key(h)) || (hold && (hold === true || hold(h))))
    const newlyHeld = keep.filter((h) => !wasHeld.has(key(h)))
    held = keep
    snap = s
    if (s.revision > known) known = s.revision
    rebuild()
    if (!relayed) post({ t: 'snap', s })
    update()
    changed(
      added,
      gone.filter((h) => !keep.includes(h)),
    )
    if (newlyHeld.length) emit('held', newlyHeld)
    resolveReady()
    waiters = waiters.filter((w) => w.n > s.revision || (w.ok(), false))
  }

  const token = async () => {
    const force = forceToken
    forceToken = false
    return o.getToken ? await o.getToken({ forceRefresh: force }) : undefined
  }

  const init = (tok: unknown, extra?: Record<string, string>): RequestInit => ({
    headers: { ...(tok ? { Authorization: 'Bearer ' + tok } : {}), ...extra },
    credentials: o.credentials,
  })

  /** One conditional load of the snapshot; a 401 gets one fresh token and one retry. */
  const load = async () => {
    const etag = snap && !reload ? { 'If-None-Match': '"' + snap.revision + '"' } : undefined
    if (o.fetchSnapshot) {
      const s = await o.fetchSnapshot(snap && !reload ? { revision: snap.revision } : {})
      if (s) apply(s)
      return
    }
    for (let retried = false; ; retried = forceToken = true) {
      const res = await doFetch(o.snapshotUrl ?? base + '/v1/me/permissions', init(await token(), etag))
      if (res.status == 401 && o.getToken && !retried) continue
      if (res.status == 304) return
      if (!res.ok) throw new HttpError(res.status, retryAfter(res, now()))
      return apply(await res.json())
    }
  }

  /**
   * Single flight: at most one load at a time. A revision heard of during a load
   * causes exactly one more load after it (however many were heard); a forced
   * refresh during a load does too, since that load may predate what prompted it.
   */
  const sync = (force?: boolean): Promise<void> => {
    if (flight) {
      again ||= !!force
      return flight
    }
    later('sync', null)
    return (flight = (async () => {
      try {
        for (;;) {
          again = false
          const heard = known
          await load()
          if (again || (behind() && known > heard)) continue
          break
        }
        syncAttempt = 0
      } catch (e) {
        emit('error', e)
        const status = e instanceof HttpError ? e.status : 0
        if (classify(status) != 'stop' && (status != 401 || o.getToken)) retrySync(e instanceof HttpError ? e.retryAfterMs : 0)
        throw e
      } finally {
        flight = null
        update()
      }
      // Still behind without having heard anything newer: the node that answered has
      // not applied that revision yet. Try again later rather than in a tight loop.
      if (behind()) retrySync(0)
    })())
  }

  const retrySync = (after: number) =>
    online && !closed && later('sync', () => behind() && sync().catch(noop), Math.max(after, backoff(syncAttempt++, minDelay, maxDelay, random)))

  /** A revision was heard of. The leader loads it; a follower asks the leader first. */
  const note = (r: number) => {
    if (r > known) known = r
    if (!behind() || closed) return
    if (leader) sync().catch(noop)
    else {
      post({ t: 'need', r })
      later('need', () => behind() && sync().catch(noop), o.followerWaitMs ?? 3000)
    }
    update()
  }

  // --- event stream (leader only) ---------------------------------------------------

  const disconnect = () => {
    gen++
    stopStream?.()
    stopStream = null
    later('retry', null)
    if (connected) downSince = now()
    connected = false
  }

  const connect = async () => {
    disconnect()
    if (closed || !leader || terminated || !online) return update()
    const my = gen
    update()
    let tok: unknown
    try {
      tok = await token()
    } catch {
      if (my == gen) ended(0, 0)
      return
    }
    if (my != gen) return
    streamToken = tok
    const guard =
      <A extends unknown[]>(fn: (...a: A) => void) =>
      (...a: A) =>
        my == gen && fn(...a)
    const cb = {
      open: guard(() => {
        attempt = authTries = 0
        connected = true
        update()
      }),
      revision: guard(note),
      retry: guard((ms: number) => (floor = Math.min(maxDelay, Math.max(minDelay, ms)))),
      end: guard(ended),
    }
    const io = init(tok)
    const url = base + '/v1/me/'
    stopStream =
      useWs && WS
        ? openWs(url + 'events/ticket', () => new URL(url + 'ws', g.location?.href).href.replace(/^http/, 'ws'), io, doFetch, WS, now, cb)
        : openSse(url + 'events', io, doFetch, timers, o.idleTimeoutMs ?? 45000, now, cb)
  }

  /** Decides what follows the end of a stream, from the one table in policy.ts. */
  function ended(why: string | number, after: number) {
    disconnect()
    const action = classify(why)
    if (action == 'stop' || (action == 'auth' && !o.getToken)) {
      terminated = true
      deadToken = streamToken
      post({ t: 'session', r: why })
      emit('session', { reason: why })
      rejectReady(new Error('session ended: ' + why))
      return update()
    }
    if (action == 'auth') {
      forceToken = true
      if (!authTries++) return void connect()
    }
    // In auto mode a transport that keeps failing may be blocked on the way (a proxy
    // that buffers SSE, say): alternate between the two.
    if (mode == 'auto' && action == 'retry' && WS) useWs = !useWs
    later('retry', connect, Math.max(after, backoff(attempt++, floor, maxDelay, random)))
    update()
  }

  /** Leaves the terminal state once there is a new token (or unconditionally, on `refresh()`). */
  const resume = async (always?: boolean) => {
    if (!terminated || closed) return
    // A token provider that fails (its refresh token was revoked too) means no new login yet.
    if (!always && (!o.getToken || (await token().catch(() => deadToken)) === deadToken)) return
    terminated = false
    attempt = authTries = 0
    // The new login may be another user, whose revision can be lower than (or, for a
    // change that touched both, equal to) the one cached.
    reload = true
    connect()
    if (!always) sync().catch(noop)
  }

  // --- tabs ---------------------------------------------------------------------------

  const becomeLeader = () => {
    if (closed) return
    leader = true
    downSince = now()
    emit('leader', true)
    connect()
    if (behind()) sync().catch(noop)
  }

  const receive = (m: Message) => {
    if (closed || !m) return
    if (m.t == 'snap') apply(m.s, true)
    else if (leader) {
      if (m.t == 'hello') {
        if (snap) post({ t: 'snap', s: snap })
        post({ t: 'status', s: status })
      } else if (m.t == 'need') note(m.r)
      else if (m.t == 'kick' && terminated) {
        resume(true)
        sync().catch(noop)
      }
    } else if (m.t == 'status') setStatus(m.s)
    else if (m.t == 'session') {
      emit('session', { reason: m.r })
      rejectReady(new Error('session ended: ' + m.r))
    }
  }

  if (o.initialSnapshot) apply(o.initialSnapshot, true)

  if (o.shared !== false && locks && Channel) {
    const ch = (channel = new Channel(name))
    ch.onmessage = (e: { data: unknown }) => receive(e.data as Message)
    // The lock is held for as long as this client lives: when its tab closes or
    // crashes the browser releases it and the next waiting tab takes over.
    locks
      .request(name, { signal: lockAbort.signal }, () =>
        closed
          ? Promise.resolve()
          : new Promise((release) => {
              releaseLock = release as () => void
              becomeLeader()
            }),
      )
      .catch(noop)
    post({ t: 'hello' })
    // The leader answers `hello` with its snapshot; if none comes, load one here.
    later('need', () => behind() && sync().catch(noop), o.followerWaitMs ?? 3000)
  } else becomeLeader()

  offs.push(
    env.on('offline', () => {
      online = false
      if (leader) disconnect()
      update()
    }),
    env.on('online', () => {
      online = true
      attempt = 0
      if (leader && !connected) connect()
      if (leader && behind()) sync().catch(noop)
      resume()
    }),
    env.on('visibilitychange', () => {
      if (!env.visible()) return
      // Skip the remaining backoff wait: someone is looking at the page.
      if (leader && timer.retry) connect()
      resume()
    }),
  )

  // --- public API -----------------------------------------------------------------------

  const release = () => {
    if (!held.length) return
    const r = held
    held = []
    rebuild()
    changed([], r)
  }

  const check = (permission: string, scope: string | null | undefined, anywhere?: boolean) =>
    !(o.failClosed && (status == 'stale' || status == 'closed')) && checkRows(rows, permission, scope, now(), anywhere)

  const on = <K extends keyof Events>(type: K, fn: (e: Events[K]) => void) => {
    const set = (handlers[type] ??= new Set())
    set.add(fn)
    return () => void set.delete(fn)
  }

  const client: PermissionsClient = {
    ready,
    can: (p, s) => check(p, s),
    canAnywhere: (p) => check(p, null, true),
    get revision() {
      return snap?.revision ?? 0
    },
    get snapshot() {
      return snap
    },
    get status() {
      return status
    },
    get held() {
      return held
    },
    get leader() {
      return leader
    },
    subscribe: (fn) => on('change', fn),
    on,
    refresh() {
      // A follower cannot see whether the leader's stream ended; let the leader decide.
      leader ? resume(true) : post({ t: 'kick' })
      return sync(true)
    },
    waitForRevision(n, opts) {
      if (snap && snap.revision >= n) return Promise.resolve()
      if (closed) return Promise.reject(new Error('closed'))
      return new Promise<void>((ok, no) => {
        const w = { n, ok, no }
        waiters.push(w)
        opts?.signal?.addEventListener('abort', () => {
          waiters = waiters.filter((x) => x != w)
          no(opts.signal!.reason)
        })
        // One load, without raising `known`: a revision that is not this user's (an
        // admin call's answer about someone else, say) must not leave the client
        // chasing it and turning stale. A later event or header completes the wait.
        sync().catch(noop)
      })
    },
    async fetch(input, initArg) {
      const req = new Request(input, initArg)
      const auth = !!o.getToken && !req.headers.has('authorization') && authorize(req.url)
      const send = async () => {
        const r = req.clone()
        if (auth) {
          const t = await token()
          if (t) r.headers.set('Authorization', 'Bearer ' + t)
        }
        const res = await doFetch(r)
        // Any response may say the permissions moved on, the app's own backend included.
        const v = res.headers.get('permissions-revision')
        if (v && /^\d+$/.test(v)) note(+v)
        return res
      }
      let res = await send()
      if (res.status == 401 && auth) {
        forceToken = true
        res = await send()
      }
      if (res.status == 403)
        // Refresh first so listeners see the state that explains the refusal.
        sync(true)
          .catch(noop)
          .then(() => emit('denied', { request: req, response: res, revision: snap?.revision ?? 0, snapshot: snap }))
      return res
    },
    applySafePoint: release,
    release,
    close() {
      if (closed) return
      disconnect()
      closed = true
      leader = false
      for (const id in timer) later(id, null)
      offs.forEach((f) => f())
      lockAbort.abort()
      releaseLock()
      channel?.close()
      channel = null
      const err = new Error('closed')
      rejectReady(err)
      waiters.forEach((w) => w.no(err))
      waiters = []
      update()
    },
  }
  if (o.ack) acknowledge(client, base + '/v1/me/ack', o.ack === true ? {} : o.ack, timers, random)
  return client
}
