// The audit log, live: every committed change, newest first, with how it reached
// the affected users' open tabs.

import { useSyncExternalStore } from 'react'
import type { ChangeRecord } from './api'
import type { ConsoleStore } from './store'

const FEED_TEXT = { connecting: 'connecting…', live: 'live', polling: 'polling' }

function describe(c: ChangeRecord) {
  const target = c.user ?? c.role ?? ''
  const what = c.permission ? (
    <>
      {' '}
      <code>{c.permission}</code>
      {c.scope && <> @ {c.scope}</>}
    </>
  ) : c.role && c.user ? (
    <>
      {' '}
      role <b>{c.role}</b>
      {c.scope && <> @ {c.scope}</>}
    </>
  ) : null
  return (
    <>
      <b>{c.action.replace(/_/g, ' ')}</b> {target && <span>{c.user ? c.user : `role ${c.role}`}</span>}
      {what}
    </>
  )
}

export function AuditLog({ store }: { store: ConsoleStore }) {
  const state = useSyncExternalStore(store.subscribe, store.get)
  return (
    <aside className="card audit" data-testid="audit-log" data-feed={state.feed}>
      <div className="page-head">
        <h2>Audit log</h2>
        <span className={'badge' + (state.feed == 'live' ? ' live' : '')} data-testid="feed-status">
          {FEED_TEXT[state.feed]}
        </span>
      </div>
      <ol>
        {state.changes.map((c) => {
          const delivery = store.delivery(c)
          return (
            <li key={c.seq} className={c.seq == state.newest ? 'fresh' : undefined} data-testid={'change-' + c.seq} data-action={c.action}>
              <div>{describe(c)}</div>
              <div className="meta">
                #{c.seq} · {new Date(c.at).toLocaleTimeString()} · by {c.actor}
              </div>
              {delivery && (
                <div className={'delivery ' + delivery.kind} data-testid={'delivery-' + c.seq}>
                  {delivery.text}
                </div>
              )}
            </li>
          )
        })}
      </ol>
    </aside>
  )
}
