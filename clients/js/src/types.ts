// Wire types mirror PROTOCOL.md §4 ("The caller's own permissions"); names stay
// snake_case so a response body can be used as-is without a conversion pass.

/** One effective holding: the user holds `permission` (a pattern) at `scope`. */
export interface Holding {
  permission: string
  /** `null` = global: applies everywhere. */
  scope: string | null
  /** RFC 3339 UTC, or `null` for no expiry. Expired holdings never count. */
  expires_at: string | null
  /** Where the holding comes from, e.g. `["direct"]`, `["role:editor"]`. */
  via?: string[]
}

export interface RoleHolding {
  role: string
  scope: string | null
  expires_at: string | null
}

/** Body of `GET /v1/me/permissions`. */
export interface Snapshot {
  user: string
  /** The user's revision. Revisions above 2^53 lose precision in JavaScript numbers. */
  revision: number
  permissions: Holding[]
  roles?: RoleHolding[]
  next_change_at?: string | null
}

/**
 * - `connecting`: not (yet) connected to the event stream, within `staleAfterMs`.
 * - `live`: the event stream is open; the cache follows every change.
 * - `offline`: the browser reports no network.
 * - `stale`: disconnected (or unable to load a known newer revision) for
 *   `staleAfterMs`, or the session ended; `failClosed` makes `can()` false here.
 * - `closed`: `close()` was called.
 */
export type Status = 'connecting' | 'live' | 'stale' | 'offline' | 'closed'

export interface Change {
  /** Holdings that now count and did not before. */
  added: Holding[]
  /** Holdings that stopped counting (removed, expired, or released from hold). */
  removed: Holding[]
  /** Removals held back until `applySafePoint()`; they still count in `can()`. */
  held: Holding[]
  revision: number
  status: Status
}

export interface DeniedEvent {
  /** The request that was answered with 403. */
  request: Request
  response: Response
  /** State after the permissions were refreshed. */
  revision: number
  snapshot: Snapshot | null
}

/** Why the event stream ended for good (until a new token or `refresh()`). */
export interface SessionEvent {
  /** `logged_out`, `revoked`, `token_expired`, or an HTTP status such as `401`/`403`. */
  reason: string | number
}

export interface Events {
  change: Change
  status: Status
  denied: DeniedEvent
  /** Removals that were just held back (see `holdRemovals`). */
  held: Holding[]
  session: SessionEvent
  /** A snapshot load failed; the client retries on its own where that can help. */
  error: unknown
  /** This tab became the one that holds the connection for the browser. */
  leader: boolean
}

export interface Timers {
  setTimeout(fn: () => void, ms: number): unknown
  clearTimeout(id: unknown): void
}

/** The part of `navigator.locks` that is used. */
export interface LockManagerLike {
  request(
    name: string,
    options: { signal?: AbortSignal },
    callback: (lock: unknown) => Promise<unknown>,
  ): Promise<unknown>
}

export interface ChannelLike {
  postMessage(message: unknown): void
  onmessage: ((event: { data: unknown }) => void) | null
  close(): void
}

export interface WebSocketLike {
  onopen: ((event: unknown) => void) | null
  onmessage: ((event: { data: unknown }) => void) | null
  onclose: ((event: { code: number }) => void) | null
  onerror: ((event: unknown) => void) | null
  close(code?: number): void
}

/** Where the browser's online/offline and visibility signals come from. */
export interface Environment {
  online(): boolean
  visible(): boolean
  on(type: 'online' | 'offline' | 'visibilitychange', listener: () => void): () => void
}

export interface TokenRequest {
  /** True after the server refused the last token (401, `token_expired`). */
  forceRefresh: boolean
}

export interface FetchSnapshotRequest {
  /** The revision held now, to send as `If-None-Match: "<revision>"`; absent before the first load. */
  revision?: number
}

export interface PermissionsOptions {
  /** Where the permsync server is, e.g. `https://auth.example.com`; `''` = this origin. */
  baseUrl: string
  /**
   * Returns the bearer token for permsync (and for `client.fetch`). Omit it in cookie
   * mode. Called with `forceRefresh: true` after a 401 or `token_expired`.
   */
  getToken?: (request: TokenRequest) => string | null | undefined | Promise<string | null | undefined>
  /** `credentials` for every request the client makes itself (cookie mode: `'include'`). */
  credentials?: RequestCredentials
  /** `'sse'` (default): the event stream via `fetch`; `'websocket'`: via a ticket; `'auto'`: SSE, alternating with WebSocket after failures. */
  transport?: 'sse' | 'websocket' | 'auto'
  /** Load the snapshot from another URL (same body and ETag as `/v1/me/permissions`). */
  snapshotUrl?: string
  /** Load the snapshot yourself; resolve `null` when the revision is unchanged. */
  fetchSnapshot?: (request: FetchSnapshotRequest) => Promise<Snapshot | null>
  /** A snapshot to start from (server rendering, a previous page); `ready` resolves at once. */
  initialSnapshot?: Snapshot
  /** Disconnected (or behind) this long → status `stale`. Default 30000. */
  staleAfterMs?: number
  /** `can()` answers false while the status is `stale` or `closed`. Default false. */
  failClosed?: boolean
  /** Hold back removals (all, or those the predicate picks) until `applySafePoint()`. */
  holdRemovals?: boolean | ((holding: Holding) => boolean)
  /** Reconnect backoff bounds in ms: full jitter between `minDelayMs` and the capped exponential. Defaults 500 and 30000. */
  minDelayMs?: number
  maxDelayMs?: number
  /** Reconnect when an SSE stream has sent nothing (not even a keepalive) this long. Default 45000. */
  idleTimeoutMs?: number
  /** How long a follower tab waits for the leader before it loads a snapshot itself. Default 3000. */
  followerWaitMs?: number
  /** Share one connection among tabs (Web Locks + BroadcastChannel). Default true when both exist. */
  shared?: boolean
  /** Lock and channel name; tabs with the same key share a connection. Default `permsync:` + baseUrl. */
  key?: string
  /** Whether `client.fetch` may attach the bearer token to this URL. Default: same origin as baseUrl or the page. */
  authorize?: (url: string) => boolean
  /**
   * Report the revision this tab has applied to `POST /v1/me/ack` (a permsync
   * extension), so operators see the user's open tabs and delivery times. Default off.
   */
  ack?: boolean | AckOptions

  // Injectable environment; defaults are the browser's globals.
  fetch?: (input: RequestInfo | URL, init?: RequestInit) => Promise<Response>
  timers?: Timers
  now?: () => number
  random?: () => number
  WebSocket?: new (url: string) => WebSocketLike
  locks?: LockManagerLike | null
  BroadcastChannel?: (new (name: string) => ChannelLike) | null
  env?: Environment
}

export interface PermissionsClient {
  /** Resolves once a snapshot is held; rejects if the session ends or the client closes first. */
  readonly ready: Promise<void>
  /** Same answer as the server's check for this user (PROTOCOL §1). */
  can(permission: string, scope?: string | null): boolean
  /** True if the permission is held at any scope (or globally). */
  canAnywhere(permission: string): boolean
  /** Revision of the held snapshot; 0 before the first one. */
  readonly revision: number
  readonly snapshot: Snapshot | null
  readonly status: Status
  /** Removals currently held back. */
  readonly held: Holding[]
  /** True while this tab holds the connection for the browser. */
  readonly leader: boolean
  subscribe(listener: (change: Change) => void): () => void
  on<K extends keyof Events>(type: K, listener: (event: Events[K]) => void): () => void
  /** Load the snapshot now (conditional request); restarts the stream after a session ended. */
  refresh(): Promise<void>
  /** Resolves once the cache holds revision ≥ n (and asks for it if needed). */
  waitForRevision(revision: number, options?: { signal?: AbortSignal }): Promise<void>
  /** `fetch` that keeps permissions fresh from `Permissions-Revision`, retries a 401 once, reports 403. */
  fetch(input: RequestInfo | URL, init?: RequestInit): Promise<Response>
  /** Apply held removals now. */
  applySafePoint(): void
  /** Same as `applySafePoint()`. */
  release(): void
  close(): void
}

/** Options of delivery acknowledgements (`ack`). */
export interface AckOptions {
  /** This tab's id, `[A-Za-z0-9_-]{1,64}`. Default: random, one per client. */
  tab?: string
  /** What the tab shows, for the operator (at most 128 characters); read at each report. */
  label?: string | (() => string)
  /** Report at least this often while open, in ms; the server forgets a tab after 60 s of silence. Default 20000. */
  intervalMs?: number
}
