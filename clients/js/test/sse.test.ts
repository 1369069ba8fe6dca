import { describe, expect, it } from 'vitest'
import { sseParser, type SseEvent } from '../src/index.js'

const parse = (chunks: string[]) => {
  const events: SseEvent[] = []
  const retries: number[] = []
  const feed = sseParser((e) => events.push(e), (ms) => retries.push(ms))
  chunks.forEach(feed)
  return { events, retries }
}

describe('SSE parser', () => {
  it('reads event, id, data and retry; ignores comments and unknown fields', () => {
    const { events, retries } = parse(['retry: 2000\n\n: keepalive\n\nid: 42\nevent: permissions\nfoo: bar\ndata: {"revision":42}\n\n'])
    expect(retries).toEqual([2000])
    expect(events).toEqual([{ type: 'permissions', data: '{"revision":42}', id: '42' }])
  })

  it('joins multi-line data and defaults the type to "message"', () => {
    expect(parse(['data: a\ndata:b\ndata\n\n']).events).toEqual([{ type: 'message', data: 'a\nb\n', id: '' }])
  })

  it('handles LF, CR and CRLF line ends, also split across chunks', () => {
    const text = 'event: x\r\ndata: 1\r\n\r\nevent: y\rdata: 2\r\rdata: 3\n\n'
    const whole = parse([text]).events
    expect(whole.map((e) => e.type + e.data)).toEqual(['x1', 'y2', 'message3'])
    for (let i = 1; i < text.length; i++) expect(parse([text.slice(0, i), text.slice(i)]).events).toEqual(whole)
    expect(parse(text.split('')).events).toEqual(whole)
  })

  it('drops events without data, keeps the last id, ignores bad retry values and ids with NUL', () => {
    const { events, retries } = parse(['event: x\n\nid: 7\n\nretry: soon\nretry: -1\nid: a\0b\ndata: d\n\n'])
    expect(retries).toEqual([])
    expect(events).toEqual([{ type: 'message', data: 'd', id: '7' }])
  })

  it('waits for the blank line before dispatching', () => {
    const events: SseEvent[] = []
    const feed = sseParser((e) => events.push(e))
    feed('data: {"revision"')
    feed(':1}\n')
    expect(events).toHaveLength(0)
    feed('\n')
    expect(events).toEqual([{ type: 'message', data: '{"revision":1}', id: '' }])
  })
})
