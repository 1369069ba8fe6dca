import { describe, expect, it } from 'vitest'
import vectors from './vectors/can.json' with { type: 'json' }
import { checkPermission, patternMatches, scopeCovers, validPermission, validScope } from '../src/index.js'
import { checkRows, toRows } from '../src/match.js'

describe('can() shared vectors (test/vectors/can.json)', () => {
  const now = Date.parse(vectors.now)
  for (const c of vectors.cases) {
    it(`${c.permission} @ ${c.scope ?? '(global)'} → ${c.expect}`, () => {
      expect(checkPermission(vectors.holdings, c.permission, c.scope, now)).toBe(c.expect)
    })
  }

  it('every case is well-formed, so the server can run the same file', () => {
    for (const c of vectors.cases) {
      expect(validPermission(c.permission), c.permission).toBe(true)
      if (c.scope != null) expect(validScope(c.scope), c.scope).toBe(true)
    }
    for (const h of vectors.holdings) {
      expect(validPermission(h.permission)).toBe(true)
      if (h.scope != null) expect(validScope(h.scope)).toBe(true)
    }
  })
})

describe('matching details', () => {
  const now = Date.parse('2026-06-01T12:00:00Z')
  const h = (permission: string, scope: string | null = null, expires_at: string | null = null) => ({ permission, scope, expires_at })

  it('a global "*" holds everything, everywhere', () => {
    const all = [h('*')]
    expect(checkPermission(all, 'a:b', null, now)).toBe(true)
    expect(checkPermission(all, 'a', 'org/x/team/y', now)).toBe(true)
    expect(checkPermission(all, '*', null, now)).toBe(true)
  })

  it('malformed input is never allowed (the server refuses it with 400)', () => {
    const all = [h('*')]
    for (const p of ['', 'Invoice:approve', 'a::b', 'a:', ':a', 'a:*:b', '**', 'a b', 'x'.repeat(129)]) expect(checkPermission(all, p, null, now), p).toBe(false)
    for (const s of ['', 'org', 'org/', 'org/acme/project', 'Org/acme', 'org/ac me', '/org/acme', 'org/acme/', 'a/b/'.repeat(9) + 'a/b'])
      expect(checkPermission(all, 'a', s, now), s).toBe(false)
  })

  it('an unreadable expiry never counts', () => {
    expect(checkPermission([h('a', null, 'not a date')], 'a', null, now)).toBe(false)
  })

  it('pattern and scope functions', () => {
    expect(patternMatches('a:*', 'a:b:c')).toBe(true)
    expect(patternMatches('a:*', 'ab:c')).toBe(false)
    expect(patternMatches('a:b', 'a:*')).toBe(false)
    expect(scopeCovers(null, undefined)).toBe(true)
    expect(scopeCovers('org/a', undefined)).toBe(false)
    expect(scopeCovers('org/a', 'org/a/x/1')).toBe(true)
    expect(scopeCovers('org/a', 'org/ab')).toBe(false)
  })

  it('length limits follow the protocol', () => {
    expect(validPermission('a'.repeat(128))).toBe(true)
    expect(validPermission('a'.repeat(129))).toBe(false)
    const deep = Array.from({ length: 8 }, (_, i) => `t${i}/i${i}`).join('/')
    expect(validScope(deep)).toBe(true)
    expect(validScope(deep + '/t8/i8')).toBe(false)
    expect(validScope('t/' + 'i'.repeat(64))).toBe(true)
    expect(validScope('t/' + 'i'.repeat(65))).toBe(false)
  })
})

describe('the indexed check equals the definition', () => {
  // The client's check (checkRows) looks up only the patterns that can match; this
  // compares it with checkPermission, the plain reading of PROTOCOL §1 (every holding,
  // patternMatches + scopeCovers), and with the vectors.
  it('on random holdings and checks', () => {
    let seed = 7
    const rand = (n: number) => ((seed = (seed * 1103515245 + 12345) % 2 ** 31), seed % n)
    const pick = <T>(xs: T[]) => xs[rand(xs.length)]!
    const perms = ['*', 'a', 'a:*', 'a:b', 'a:b:*', 'a:b:c', 'a:bc', 'ab:*', 'b:*', 'b:a', 'a:b:c:*', 'a:b:c:d']
    const scopes = [null, 'org/x', 'org/x/p/1', 'org/x/p/10', 'org/y', 'org/xy']
    const now = 1_000_000
    for (let round = 0; round < 300; round++) {
      const holdings = Array.from({ length: rand(8) }, () => ({
        permission: pick(perms),
        scope: pick(scopes),
        expires_at: pick([null, null, new Date(now - 1).toISOString(), new Date(now + 1).toISOString()]),
      }))
      for (const permission of perms)
        for (const scope of scopes) {
          const plain = holdings.some(
            (h) => (h.expires_at == null || Date.parse(h.expires_at) > now) && patternMatches(h.permission, permission) && scopeCovers(h.scope, scope),
          )
          expect(checkPermission(holdings, permission, scope, now)).toBe(plain)
          expect(checkRows(toRows(holdings), permission, scope, now), JSON.stringify({ holdings, permission, scope })).toBe(plain)
          expect(checkRows(toRows(holdings), permission, null, now, true)).toBe(
            holdings.some((h) => (h.expires_at == null || Date.parse(h.expires_at) > now) && patternMatches(h.permission, permission)),
          )
        }
    }
  })

  it('on the shared vectors', () => {
    const rows = toRows(vectors.holdings)
    for (const c of vectors.cases) expect(checkRows(rows, c.permission, c.scope, Date.parse(vectors.now)), c.permission + ' @ ' + c.scope).toBe(c.expect)
  })
})
