// Reconnect policy: how long to wait, and whether to try at all. Kept in one place so
// the documented bounds and the retry/terminal split are visible at a glance.

/**
 * Full-jitter backoff: a delay drawn uniformly from
 * `[min, min(max, min + min·2^attempt)]`, never above `max`. `attempt` counts failures
 * since the last successful connect (it resets to 0 there). The floor `min` keeps a
 * flapping server from being hammered; the jitter spreads a crowd of clients that
 * lost the same server at the same instant.
 */
export const backoff = (attempt: number, min: number, max: number, random: () => number): number =>
  Math.min(max, min + random() * Math.min(max, min * 2 ** attempt))

/**
 * - `retry`: transient (network, 5xx, stream ended); back off and reconnect.
 * - `slow`: the server asks for less (429, 503, WebSocket 1013); back off, at least `Retry-After`.
 * - `auth`: the token was refused or expired; ask `getToken({ forceRefresh: true })` and
 *   reconnect at once, backing off only if that keeps failing. Terminal without `getToken`.
 * - `stop`: terminal until a new token (or `refresh()`): the session is over, or retrying
 *   the same request cannot succeed.
 */
export type Action = 'retry' | 'slow' | 'auth' | 'stop'

/**
 * The one table. Keys are `session` event reasons, HTTP statuses of the stream (or
 * ticket) request, and WebSocket close codes; WebSocket codes 4000–4999 are read as
 * 4000 + an HTTP status (4401 = 401). `0` stands for a network error or a stream that
 * ended without a `session` event.
 */
const TABLE: Record<string | number, Action> = {
  logged_out: 'stop',
  revoked: 'stop',
  token_expired: 'auth',
  401: 'auth',
  1008: 'auth',
  408: 'retry',
  429: 'slow',
  503: 'slow',
  1013: 'slow',
}

/** Statuses 1–499 not in the table (400, 403, 404, …) are terminal; everything else is retried. */
export const classify = (why: string | number): Action =>
  TABLE[why] ?? (typeof why == 'number' && why > 0 && why < 500 ? 'stop' : 'retry')

/** `Retry-After` (seconds or an HTTP date) in ms, 0 when absent or unreadable. */
export const retryAfter = (res: Response, now: number): number => {
  const v = res.headers.get('retry-after')
  if (!v) return 0
  const ms = /^\d+$/.test(v) ? +v * 1000 : Date.parse(v) - now
  return ms > 0 ? ms : 0
}
