// A login session against permsync's built-in identity (`/v1/auth/*`), shared by
// the tabs of one app in this browser. The refresh token rotates on use, and
// presenting a rotated one ends the whole session, so the tabs must never use a
// stale one: the token pair lives in IndexedDB (whose transactions every tab sees
// in order; localStorage may show another tab's write late), and a Web Lock lets
// one tab at a time renew. localStorage only carries who is signed in, so every
// tab can render at once and hear of a sign-in or sign-out elsewhere.
//
// `getToken` is what the SDK calls before each request. It hands out the access
// token until shortly before it expires, then renews it; with `forceRefresh`
// (after a 401 or a stream that ended with `token_expired`) it renews unless
// another tab already did. So the user never sees an expiry.

export interface SessionData {
  user: string
  access: string
  refresh: string
  /** When the access token expires, ms since the epoch (local clock). */
  expiresAt: number
  /** Its lifetime, ms. */
  ttl: number
}

export interface Session {
  /** Who is signed in, or null. */
  readonly user: string | null
  /** How often this tab renewed the access token. */
  readonly renewals: number
  login(username: string, password: string): Promise<void>
  logout(): Promise<void>
  getToken(request: { forceRefresh: boolean }): Promise<string | null>
  subscribe(listener: () => void): () => void
}

interface TokenPair {
  access_token: string
  refresh_token: string
  expires_in: number
}

export class LoginError extends Error {}

const decodeSub = (jwt: string): string => {
  try {
    const part = jwt.split('.')[1] ?? ''
    return JSON.parse(atob(part.replace(/-/g, '+').replace(/_/g, '/'))).sub ?? ''
  } catch {
    return ''
  }
}

/** A tiny key-value store over IndexedDB. */
function idb(name: string) {
  let db: Promise<IDBDatabase> | null = null
  const open = () =>
    (db ??= new Promise((resolve, reject) => {
      const req = indexedDB.open(name, 1)
      req.onupgradeneeded = () => req.result.createObjectStore('kv')
      req.onsuccess = () => resolve(req.result)
      req.onerror = () => reject(req.error)
    }))
  const run = async <T,>(mode: IDBTransactionMode, fn: (store: IDBObjectStore) => IDBRequest | null): Promise<T> => {
    const tx = (await open()).transaction('kv', mode)
    const req = fn(tx.objectStore('kv'))
    return new Promise((resolve, reject) => {
      tx.oncomplete = () => resolve(req?.result as T)
      tx.onerror = tx.onabort = () => reject(tx.error)
    })
  }
  return {
    get: <T,>(key: string) => run<T | undefined>('readonly', (s) => s.get(key)),
    put: (key: string, value: unknown) => run<void>('readwrite', (s) => s.put(value, key)),
    delete: (key: string) => run<void>('readwrite', (s) => s.delete(key)),
  }
}

export function createSession(storageKey: string): Session {
  const listeners = new Set<() => void>()
  const tokens = idb('permsync-demo')
  let renewals = 0
  /** Who is signed in, from localStorage: known synchronously at start. */
  let user = localStorage.getItem(storageKey + '.user')
  /** This tab's copy of the token pair. */
  let data: SessionData | null = null

  const notify = () => listeners.forEach((fn) => fn())

  async function load(): Promise<SessionData | null> {
    const stored = (await tokens.get<SessionData>(storageKey)) ?? null
    data = stored && stored.user == user ? stored : null
    return data
  }

  async function store(next: SessionData | null) {
    data = next
    if (next) await tokens.put(storageKey, next)
    else await tokens.delete(storageKey)
    const nextUser = next?.user ?? null
    if (nextUser != user) {
      user = nextUser
      if (nextUser) localStorage.setItem(storageKey + '.user', nextUser)
      else localStorage.removeItem(storageKey + '.user')
      notify()
    }
  }

  const fromPair = (pair: TokenPair, name?: string): SessionData => ({
    user: name ?? decodeSub(pair.access_token),
    access: pair.access_token,
    refresh: pair.refresh_token,
    expiresAt: Date.now() + pair.expires_in * 1000,
    ttl: pair.expires_in * 1000,
  })

  // Another tab signed in or out.
  window.addEventListener('storage', (e) => {
    if (e.key != storageKey + '.user' || e.newValue == user) return
    user = e.newValue
    data = null
    notify()
  })

  /** Renew shortly before expiry: a quarter of the lifetime, at most 30 s. */
  const fresh = (s: SessionData) => s.expiresAt - Date.now() > Math.min(30000, s.ttl / 4)

  async function renew(stale: string | null): Promise<string | null> {
    const run = async () => {
      const current = await load()
      if (!current) return null
      // Another tab renewed while this one waited for the lock.
      if (current.access != stale && fresh(current)) return current.access
      const res = await fetch('/v1/auth/refresh', {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ refresh_token: current.refresh }),
      })
      if (!res.ok) {
        // The session is over (signed out elsewhere, revoked): back to the login form.
        if (res.status == 401) await store(null)
        return null
      }
      const next = fromPair(await res.json(), current.user)
      // Stored before the lock is released, so the next tab to renew sees it.
      await store(next)
      renewals++
      notify()
      return next.access
    }
    return navigator.locks ? navigator.locks.request(storageKey + ':refresh', run) : run()
  }

  // One tab of the app (whichever holds this lock, for as long as it lives) renews the
  // token at half its lifetime, so the others, opened and closed at will, find a fresh
  // one and never present the refresh token themselves. A tab closed while its renewal
  // is on the way would lose the rotated refresh token, and the next use of the old
  // one would end the session; with one long-lived renewer that window is rare. The
  // others still renew on their own when the renewer falls behind (a throttled tab).
  const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))
  navigator.locks
    ?.request(storageKey + ':renewer', async () => {
      for (;;) {
        const current = user ? await load().catch(() => null) : null
        const wait = current ? current.expiresAt - current.ttl / 2 - Date.now() : 1000
        if (current && wait <= 0) {
          // A failed renewal (the server unreachable, say) is tried again shortly, not at once.
          if (!(await renew(current.access).catch(() => null))) await sleep(2000)
        } else await sleep(Math.min(Math.max(wait, 200), 30000))
      }
    })
    .catch(() => {})

  return {
    get user() {
      return user
    },
    get renewals() {
      return renewals
    },
    async login(username, password) {
      const res = await fetch('/v1/auth/login', {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ username, password }),
      })
      if (res.status == 429) throw new LoginError('Too many attempts; wait a moment and try again.')
      if (!res.ok) throw new LoginError('Wrong username or password.')
      await store(fromPair(await res.json()))
    },
    async logout() {
      const current = data ?? (await load())
      await store(null)
      if (current)
        await fetch('/v1/auth/logout', {
          method: 'POST',
          headers: { 'Content-Type': 'application/json' },
          body: JSON.stringify({ refresh_token: current.refresh }),
        }).catch(() => {})
    },
    async getToken({ forceRefresh }) {
      const current = data ?? (await load())
      if (!current) return null
      if (!forceRefresh && fresh(current)) return current.access
      return renew(current.access)
    },
    subscribe(listener) {
      listeners.add(listener)
      return () => void listeners.delete(listener)
    },
  }
}
