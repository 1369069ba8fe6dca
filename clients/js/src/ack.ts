// Delivery acknowledgements, a permsync extension (see the README and the server's
// docs/protocol-notes.md): the tab reports the revision it has applied to
// `POST /v1/me/ack` right after every change, when it becomes the leader, and every
// `intervalMs` while open, and says `closed` when it goes away, so an operator sees
// the user's open tabs and how long each change took to reach them. Best effort: a
// report that fails is not retried; the next one carries the latest revision.

import type { AckOptions, PermissionsClient, Timers } from './types.js'

export function acknowledge(c: PermissionsClient, url: string, o: AckOptions, timers: Timers, random: () => number): void {
  const tab = o.tab || random().toString(36).slice(2, 12) || 'tab'
  const label = o.label
  let timer: unknown
  let sent = 0
  const send = (closed?: boolean) => {
    timers.clearTimeout(timer)
    if (!c.snapshot) return
    if (!closed) timer = timers.setTimeout(send, o.intervalMs || 2e4)
    sent = c.revision
    c.fetch(url, {
      method: 'POST',
      keepalive: closed,
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ revision: sent, tab, leader: c.leader, label: typeof label == 'function' ? label() : label, closed }),
    }).catch(() => {})
  }
  c.subscribe((e) => (e.status == 'closed' ? send(true) : e.revision > sent && send()))
  c.on('leader', () => send())
  // A tab closing or navigating away says so (bfcache-restored pages report again on their next change).
  ;(globalThis as any).addEventListener?.('pagehide', () => send(true))
}
