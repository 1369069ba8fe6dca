// Delivery acknowledgements, a permsync extension (see the README and the server's
// docs/protocol-notes.md): the tab reports the revision it has applied to
// `POST /v1/me/ack` right after every change, when it becomes the leader, and every
// `intervalMs` while open, and says `closed` when it goes away, so an operator sees
// the user's open tabs and how long each change took to reach them. Best effort: a
// report that fails is not retried; the next one carries the latest revision.

import type { AckOptions, PermissionsClient, Timers } from './types.js'

export function acknowledge(c: PermissionsClient, url: string, o: AckOptions, timers: Timers, random: () => number): string {
  const g = globalThis as any
  const tab = o.tab || random().toString(36).slice(2, 12) || 'tab'
  let timer: unknown
  let sent = 0
  const send = (closed?: boolean) => {
    timers.clearTimeout(timer)
    if (!c.snapshot) return
    if (!closed) timer = timers.setTimeout(send, o.intervalMs ?? 20000)
    sent = c.revision
    c.fetch(url, {
      method: 'POST',
      keepalive: closed,
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ revision: sent, tab, leader: c.leader, label: typeof o.label == 'function' ? o.label() : o.label, closed }),
    }).catch(() => {})
  }
  c.subscribe((e) => (e.status == 'closed' ? send(true) : e.revision > sent && send()))
  c.on('leader', () => send())
  g.addEventListener?.('pagehide', () => send(true))
  g.addEventListener?.('pageshow', (e: any) => e.persisted && send())
  return tab
}
