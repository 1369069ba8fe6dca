// Pieces both apps use: the login form, the status footer and notices.

import { useEffect, useState, useSyncExternalStore, type FormEvent, type ReactNode } from 'react'
import { usePermissionsClient, usePermissionsRevision, usePermissionsStatus } from '@permsync/client/react'
import { LoginError, type Session } from './session'

export function LoginForm({ session, title, accounts, intro }: { session: Session; title: string; accounts: string[]; intro?: ReactNode }) {
  const [username, setUsername] = useState('')
  const [password, setPassword] = useState('')
  const [error, setError] = useState('')
  const [busy, setBusy] = useState(false)
  const submit = async (e: FormEvent) => {
    e.preventDefault()
    setBusy(true)
    setError('')
    try {
      await session.login(username.trim(), password)
    } catch (err) {
      setError(err instanceof LoginError ? err.message : 'The server could not be reached.')
    } finally {
      setBusy(false)
    }
  }
  return (
    <main className="login">
      <form className="card login-card" onSubmit={submit} data-testid="login-form">
        <h1>{title}</h1>
        {intro}
        <label>
          Username
          <input name="username" autoComplete="username" value={username} onChange={(e) => setUsername(e.target.value)} required autoFocus />
        </label>
        <label>
          Password
          <input name="password" type="password" autoComplete="current-password" value={password} onChange={(e) => setPassword(e.target.value)} required />
        </label>
        {error && (
          <p className="error" role="alert">
            {error}
          </p>
        )}
        <button type="submit" className="primary" disabled={busy}>
          Sign in
        </button>
        <p className="hint">
          Demo accounts:{' '}
          {accounts.map((a, i) => (
            <span key={a}>
              {i > 0 && ', '}
              <button
                type="button"
                className="link"
                onClick={() => {
                  setUsername(a)
                  setPassword(a + '-password')
                }}
              >
                {a}
              </button>
            </span>
          ))}{' '}
          (password: <code>NAME-password</code>)
        </p>
      </form>
    </main>
  )
}

const STATUS_TEXT: Record<string, string> = {
  connecting: 'connecting…',
  live: 'live',
  stale: 'stale',
  offline: 'offline',
  closed: 'closed',
}

/** The unobtrusive footer: revision, connection status, tab role, token renewals. */
export function StatusFooter({ session }: { session: Session }) {
  const client = usePermissionsClient()
  const revision = usePermissionsRevision()
  const status = usePermissionsStatus()
  const leader = useSyncExternalStore(client.subscribe, () => client.leader)
  const renewals = useSyncExternalStore(session.subscribe, () => session.renewals)
  return (
    <footer className="status-footer" data-testid="status-footer" data-status={status} data-revision={revision} data-renewals={renewals}>
      <span>
        permissions revision <strong data-testid="revision">{revision}</strong>
      </span>
      <span className={'dot ' + status} aria-hidden="true" />
      <span data-testid="connection-status">{STATUS_TEXT[status] ?? status}</span>
      <span title="One tab per browser holds the connection; the others follow it.">{leader ? 'this tab holds the connection' : 'following another tab'}</span>
      {renewals > 0 && <span title="The access token was renewed in the background">token renewed {renewals}×</span>}
    </footer>
  )
}

// --- notices ---------------------------------------------------------------------

export interface Notice {
  id: number
  kind: 'info' | 'warning' | 'success'
  text: ReactNode
}

let notices: Notice[] = []
let nextId = 1
const noticeListeners = new Set<() => void>()
const emit = () => noticeListeners.forEach((fn) => fn())

export function notify(kind: Notice['kind'], text: ReactNode, ms = 12000): number {
  const id = nextId++
  notices = [...notices, { id, kind, text }].slice(-4)
  emit()
  if (ms) setTimeout(() => dismiss(id), ms)
  return id
}

export function dismiss(id: number) {
  notices = notices.filter((n) => n.id != id)
  emit()
}

export function Notices() {
  const list = useSyncExternalStore(
    (fn) => {
      noticeListeners.add(fn)
      return () => void noticeListeners.delete(fn)
    },
    () => notices,
  )
  if (!list.length) return null
  return (
    <div className="notices" role="status" aria-live="polite">
      {list.map((n) => (
        <div key={n.id} className={'notice ' + n.kind} data-testid="notice">
          <div>{n.text}</div>
          <button type="button" className="close" aria-label="Dismiss" onClick={() => dismiss(n.id)}>
            ×
          </button>
        </div>
      ))}
    </div>
  )
}

/** "in 8 s", "in 3 min", for an RFC 3339 time. */
export function until(at: string, now: number): string {
  const s = Math.max(0, Math.round((Date.parse(at) - now) / 1000))
  if (s < 90) return `${s} s`
  if (s < 5400) return `${Math.round(s / 60)} min`
  if (s < 172800) return `${Math.round(s / 3600)} h`
  return `${Math.round(s / 86400)} days`
}

/** Re-renders every `ms` while mounted; returns the time. */
export function useNow(ms = 1000): number {
  const [now, setNow] = useState(Date.now)
  useEffect(() => {
    const id = setInterval(() => setNow(Date.now()), ms)
    return () => clearInterval(id)
  }, [ms])
  return now
}
