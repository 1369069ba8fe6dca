import { describe, expect, it } from 'vitest'
import { backoff, classify } from '../src/index.js'

describe('backoff', () => {
  it('stays within [min, min(max, min + min·2^attempt)]', () => {
    for (let attempt = 0; attempt < 40; attempt++) {
      const low = backoff(attempt, 500, 30000, () => 0)
      const high = backoff(attempt, 500, 30000, () => 0.999999)
      expect(low).toBe(500)
      expect(high).toBeLessThanOrEqual(Math.min(30000, 500 + 500 * 2 ** attempt))
      expect(high).toBeGreaterThan(Math.min(30000, 500 + 500 * 2 ** attempt) * 0.99)
    }
  })

  it('is jittered', () => {
    const r = [0.1, 0.5, 0.9].map((x) => backoff(3, 500, 30000, () => x))
    expect(new Set(r).size).toBe(3)
  })
})

describe('classify', () => {
  it.each([
    ['logged_out', 'stop'],
    ['revoked', 'stop'],
    ['token_expired', 'auth'],
    [401, 'auth'],
    [403, 'stop'],
    [404, 'stop'],
    [400, 'stop'],
    [408, 'retry'],
    [429, 'slow'],
    [503, 'slow'],
    [500, 'retry'],
    [502, 'retry'],
    [0, 'retry'],
    [1000, 'retry'],
    [1006, 'retry'],
    [1008, 'auth'],
    [1013, 'slow'],
    ['something_new', 'retry'],
  ] as const)('%s → %s', (why, action) => {
    expect(classify(why)).toBe(action)
  })
})
