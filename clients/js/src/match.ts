// The check of PROTOCOL §1, kept pure (holdings and time come in as values) so the
// same vectors (test/vectors/can.json) can run here and against the server's core.

/** A holding prepared for checks: expiry parsed once per snapshot, not per check. */
export interface Row {
  p: string
  s: string | null
  /** Expiry in ms since the epoch; Infinity for none; NaN (unparsable) never counts. */
  e: number
}

// Syntax from PROTOCOL §1. A malformed permission or scope is refused by the server
// (400), so here it is simply not allowed: no pattern can match what cannot exist.
const PERMISSION = /^(\*|[a-z0-9_-]+(:[a-z0-9_-]+)*(:\*)?)$/
const SEGMENT = '[a-z0-9_-]{1,64}/[A-Za-z0-9_.-]{1,64}'
const SCOPE = new RegExp(`^${SEGMENT}(/${SEGMENT}){0,7}$`)

export const validPermission = (p: unknown): p is string =>
  typeof p == 'string' && p.length <= 128 && PERMISSION.test(p)

export const validScope = (s: unknown): s is string =>
  typeof s == 'string' && s.length <= 256 && SCOPE.test(s)

/**
 * Does the held pattern cover the checked permission? The checked permission is
 * literal: checking `invoice:*` asks for the wildcard itself, which only `invoice:*`
 * (or a broader pattern such as `*`) holds.
 */
export const patternMatches = (pattern: string, permission: string): boolean =>
  pattern == permission ||
  pattern == '*' ||
  (pattern.endsWith(':*') && permission.startsWith(pattern.slice(0, -1)))

/**
 * Does a holding at `held` apply at `scope`? Global holdings apply everywhere; a
 * scoped one applies to its scope and descendants, compared by whole segments so
 * `org/acme` covers `org/acme/project/7` but not `org/acmex`. A check without a scope
 * asks about global holdings only.
 */
export const scopeCovers = (held: string | null, scope: string | null | undefined): boolean =>
  held == null || (scope != null && (held == scope || scope.startsWith(held + '/')))

export const toRows = (holdings: ReadonlyArray<{ permission: string; scope: string | null; expires_at: string | null }>): Row[] =>
  holdings.map((h) => ({ p: h.permission, s: h.scope ?? null, e: h.expires_at == null ? Infinity : Date.parse(h.expires_at) }))

/**
 * Rows grouped by pattern, built once per row set (the client makes a new set per
 * snapshot), so that a check looks only at the patterns that can match its permission
 * instead of scanning every holding.
 */
const byPattern = new WeakMap<readonly Row[], Map<string, Row[]>>()

/**
 * `can` over prepared rows at time `now` (ms). `scope` `null`/`undefined` = global check;
 * `anywhere` ignores scopes (for "does the user hold this somewhere").
 *
 * The patterns that match a valid permission (see `patternMatches`) are the permission
 * itself, `*`, and `prefix:*` for each prefix ending at a `:` (`a:*` and `a:b:*` for `a:b:c`).
 */
export function checkRows(rows: readonly Row[], permission: string, scope: string | null | undefined, now: number, anywhere?: boolean): boolean {
  if (!validPermission(permission) || (scope != null && !validScope(scope))) return false
  let map = byPattern.get(rows)
  if (!map) {
    byPattern.set(rows, (map = new Map()))
    for (const r of rows) map.get(r.p)?.push(r) ?? map.set(r.p, [r])
  }
  const held = (pattern: string) => {
    // `e > now` is false for NaN, so an unreadable expiry fails closed.
    for (const r of map.get(pattern) ?? []) if (r.e > now && (anywhere || scopeCovers(r.s, scope))) return true
    return false
  }
  if (held(permission) || held('*')) return true
  for (let i = permission.indexOf(':'); i >= 0; i = permission.indexOf(':', i + 1)) if (held(permission.slice(0, i + 1) + '*')) return true
  return false
}

/** The check of PROTOCOL §1 over wire holdings, for tests and server-side reuse. */
export const checkPermission = (
  holdings: ReadonlyArray<{ permission: string; scope: string | null; expires_at: string | null }>,
  permission: string,
  scope?: string | null,
  now: number = Date.now(),
): boolean => checkRows(toRows(holdings), permission, scope, now)
