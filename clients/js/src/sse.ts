// A streaming parser for text/event-stream (the WHATWG "event stream interpretation"),
// fed with decoded text chunks as they arrive. A hand-written one is used instead of
// EventSource because EventSource cannot send an Authorization header and gives up
// for good on a 401.

export interface SseEvent {
  /** `event:` field; `message` when absent. */
  type: string
  data: string
  /** Last `id:` seen on this stream (it persists across events, as in the spec). */
  id: string
}

/**
 * Returns a function to feed chunks to. Line ends may be CRLF, LF or CR, and a chunk
 * may end anywhere, also between the CR and LF of one line end.
 */
export function sseParser(onEvent: (event: SseEvent) => void, onRetry?: (ms: number) => void): (chunk: string) => void {
  let buffer = ''
  let data = ''
  let type = ''
  let id = ''
  let afterCR = false

  const line = (text: string) => {
    if (!text) {
      // A blank line dispatches; an event without data is dropped, per the spec.
      if (data) onEvent({ type: type || 'message', data: data.slice(0, -1), id })
      data = type = ''
      return
    }
    // Lines starting with ':' are comments (keepalives); the caller counts them as activity.
    if (text[0] == ':') return
    const colon = text.indexOf(':')
    const field = colon < 0 ? text : text.slice(0, colon)
    let value = colon < 0 ? '' : text.slice(colon + 1)
    if (value[0] == ' ') value = value.slice(1)
    if (field == 'data') data += value + '\n'
    else if (field == 'event') type = value
    else if (field == 'id') {
      if (!value.includes('\0')) id = value
    } else if (field == 'retry') {
      if (/^\d+$/.test(value)) onRetry?.(+value)
    }
  }

  return (chunk: string) => {
    // Drop the LF that completes a CRLF split across two chunks.
    if (afterCR && chunk[0] == '\n') chunk = chunk.slice(1)
    afterCR = false
    buffer += chunk
    let start = 0
    for (let i = 0; i < buffer.length; i++) {
      const c = buffer[i]
      if (c == '\r' || c == '\n') {
        line(buffer.slice(start, i))
        if (c == '\r') {
          if (i + 1 == buffer.length) afterCR = true
          else if (buffer[i + 1] == '\n') i++
        }
        start = i + 1
      }
    }
    buffer = buffer.slice(start)
  }
}
