// Users (grants, bindings, effective permissions, open tabs) and roles.

import { useState, useSyncExternalStore, type FormEvent, type ReactNode } from 'react'
import { usePermissionsClient } from '@permsync/client/react'
import { Link, usePath } from '../shared/router'
import { notify, until, useNow } from '../shared/ui'
import { api, type TabInfo, type UserTabs } from './api'
import type { ConsoleStore } from './store'

const SCOPES = ['org/acme', 'org/acme/project/7', 'org/acme/project/9']
const PERMISSIONS = [
  'invoice:create',
  'invoice:read',
  'invoice:approve',
  'report:read',
  'report:export',
  'project:read',
  'project:create',
  'doc:read',
  'doc:edit',
  'doc:publish',
  'comment:write',
  'shop:browse',
  'shop:pro',
]

const EXPIRIES: [string, number][] = [
  ['never', 0],
  ['in 10 seconds', 10],
  ['in 1 minute', 60],
  ['in 1 hour', 3600],
  ['in 1 day', 86400],
]

const expiresAt = (seconds: number) => (seconds ? new Date(Date.now() + seconds * 1000).toISOString() : null)

const useConsole = (store: ConsoleStore) => useSyncExternalStore(store.subscribe, store.get)

function useApi() {
  const client = usePermissionsClient()
  const [a] = useState(() => api(client))
  return a
}

/** Runs an admin action, reports a refusal, and reloads the console's data. */
function useAction(store: ConsoleStore) {
  const [busy, setBusy] = useState(false)
  const run = async (action: () => Promise<unknown>, success?: ReactNode) => {
    setBusy(true)
    try {
      await action()
      if (success) notify('success', success, 4000)
      return true
    } catch (e) {
      notify('warning', e instanceof Error ? e.message : 'The request failed.')
      return false
    } finally {
      setBusy(false)
      void store.reload()
    }
  }
  return { busy, run }
}

const where = (scope: string | null) => (scope ? <code>{scope}</code> : <span className="muted">everywhere</span>)

function Expires({ at, now }: { at: string | null; now: number }) {
  if (!at) return <span className="muted">never</span>
  return <span className="expiry" title={at}>{Date.parse(at) <= now ? 'expired' : 'in ' + until(at, now)}</span>
}

// --- users ------------------------------------------------------------------------------

export function UsersNav({ store }: { store: ConsoleStore }) {
  const state = useConsole(store)
  const path = usePath()
  const a = useApi()
  const { busy, run } = useAction(store)
  const [name, setName] = useState('')
  const [password, setPassword] = useState('')
  const create = async (e: FormEvent) => {
    e.preventDefault()
    if (await run(() => a.createUser(name.trim(), password), <>User {name} created.</>)) {
      setName('')
      setPassword('')
    }
  }
  return (
    <aside className="side">
      <h2>Users</h2>
      {state.users.map((u) => {
        const to = `/admin/users/${encodeURIComponent(u.user)}`
        const tabs = state.tabs[u.user]?.tabs.length ?? 0
        return (
          <Link key={u.user} to={to} className={path == to ? 'active' : undefined} data-testid={'user-' + u.user}>
            <span>{u.user}</span>
            {tabs > 0 && (
              <span className="badge live" title="open tabs">
                {tabs} tab{tabs == 1 ? '' : 's'}
              </span>
            )}
          </Link>
        )
      })}
      <form className="inline-form" onSubmit={create}>
        <label>
          New user
          <input value={name} onChange={(e) => setName(e.target.value)} placeholder="name" autoComplete="off" required />
        </label>
        <label>
          Password
          <input value={password} type="password" onChange={(e) => setPassword(e.target.value)} placeholder="optional" autoComplete="new-password" />
        </label>
        <button type="submit" disabled={busy}>
          Create
        </button>
      </form>
    </aside>
  )
}

export function UserView({ store, user }: { store: ConsoleStore; user: string }) {
  const state = useConsole(store)
  const now = useNow(1000)
  const a = useApi()
  const { busy, run } = useAction(store)
  const detail = state.details[user]
  const [grant, setGrant] = useState({ permission: '', scope: '', expiry: 0 })
  const [bind, setBind] = useState({ role: '', scope: '', expiry: 0 })
  if (!detail) return <p className="muted">{state.users.length ? `No user ${user}.` : 'Loading…'}</p>

  const addGrant = async (e: FormEvent) => {
    e.preventDefault()
    const ok = await run(
      () => a.grant(user, grant.permission.trim(), grant.scope.trim() || null, expiresAt(grant.expiry)),
      <>
        Granted <code>{grant.permission}</code> to {user}.
      </>,
    )
    if (ok) setGrant({ ...grant, permission: '' })
  }
  const addBinding = async (e: FormEvent) => {
    e.preventDefault()
    const role = bind.role || state.roles[0]?.role || ''
    await run(() => a.bind(user, role, bind.scope.trim() || null, expiresAt(bind.expiry)), <>Bound {user} to {role}.</>)
  }

  return (
    <>
      <section className="card">
        <div className="page-head">
          <h1 data-testid="detail-user">{user}</h1>
          <span className="muted">
            revision <strong data-testid="detail-revision">{detail.revision}</strong>
          </span>
          <button type="button" className="danger" disabled={busy} onClick={() => run(() => a.revokeSessions(user), <>Every session of {user} ended.</>)}>
            End sessions
          </button>
        </div>
      </section>

      <section className="card">
        <h2>Grants</h2>
        <table className="table" data-testid="grants">
          <thead>
            <tr>
              <th>Permission</th>
              <th>Scope</th>
              <th>Expires</th>
              <th>By</th>
              <th />
            </tr>
          </thead>
          <tbody>
            {detail.grants.map((g) => (
              <tr key={g.id} data-testid="grant-row" data-permission={g.permission} data-scope={g.scope ?? ''}>
                <td>
                  <code>{g.permission}</code>
                </td>
                <td>{where(g.scope)}</td>
                <td>
                  <Expires at={g.expires_at} now={now} />
                </td>
                <td className="muted">{g.created_by}</td>
                <td>
                  <button type="button" className="danger" disabled={busy} data-testid="revoke-grant" onClick={() => run(() => a.revokeGrant(user, g.id))}>
                    Revoke
                  </button>
                </td>
              </tr>
            ))}
          </tbody>
        </table>
        <form className="inline-form" onSubmit={addGrant} data-testid="grant-form">
          <label>
            Permission
            <input list="permissions" value={grant.permission} onChange={(e) => setGrant({ ...grant, permission: e.target.value })} required data-testid="grant-permission" />
          </label>
          <label>
            Scope
            <input list="scopes" value={grant.scope} onChange={(e) => setGrant({ ...grant, scope: e.target.value })} placeholder="everywhere" data-testid="grant-scope" />
          </label>
          <label>
            Expires
            <select value={grant.expiry} onChange={(e) => setGrant({ ...grant, expiry: +e.target.value })} data-testid="grant-expiry">
              {EXPIRIES.map(([text, s]) => (
                <option key={s} value={s}>
                  {text}
                </option>
              ))}
            </select>
          </label>
          <button type="submit" className="primary" disabled={busy} data-testid="grant-submit">
            Grant
          </button>
        </form>
      </section>

      <section className="card">
        <h2>Roles</h2>
        <table className="table" data-testid="bindings">
          <thead>
            <tr>
              <th>Role</th>
              <th>Scope</th>
              <th>Expires</th>
              <th>By</th>
              <th />
            </tr>
          </thead>
          <tbody>
            {detail.bindings.map((b) => (
              <tr key={b.id} data-testid="binding-row" data-role={b.role} data-scope={b.scope ?? ''}>
                <td>
                  <Link to="/admin/roles">{b.role}</Link>
                </td>
                <td>{where(b.scope)}</td>
                <td>
                  <Expires at={b.expires_at} now={now} />
                </td>
                <td className="muted">{b.created_by}</td>
                <td>
                  <button type="button" className="danger" disabled={busy} onClick={() => run(() => a.unbind(user, b.id))}>
                    Remove
                  </button>
                </td>
              </tr>
            ))}
          </tbody>
        </table>
        <form className="inline-form" onSubmit={addBinding}>
          <label>
            Role
            <select value={bind.role} onChange={(e) => setBind({ ...bind, role: e.target.value })} data-testid="bind-role">
              {state.roles.map((r) => (
                <option key={r.role} value={r.role}>
                  {r.role}
                </option>
              ))}
            </select>
          </label>
          <label>
            Scope
            <input list="scopes" value={bind.scope} onChange={(e) => setBind({ ...bind, scope: e.target.value })} placeholder="everywhere" />
          </label>
          <label>
            Expires
            <select value={bind.expiry} onChange={(e) => setBind({ ...bind, expiry: +e.target.value })}>
              {EXPIRIES.map(([text, s]) => (
                <option key={s} value={s}>
                  {text}
                </option>
              ))}
            </select>
          </label>
          <button type="submit" disabled={busy || !state.roles.length}>
            Bind
          </button>
        </form>
      </section>

      <Tabs tabs={state.tabs[user]} revision={detail.revision} now={now} />

      <section className="card">
        <h2>Effective permissions</h2>
        <div className="chips" data-testid="effective">
          {detail.permissions.map((p) => (
            <span key={p.permission + ' ' + p.scope} className="chip" title={(p.via ?? []).join(', ')}>
              {p.permission}
              {p.scope && <span className="muted"> @ {p.scope}</span>}
              {p.expires_at && <span className="expiry"> · {until(p.expires_at, now)}</span>}
            </span>
          ))}
          {!detail.permissions.length && <span className="muted">none</span>}
        </div>
      </section>

      <datalist id="permissions">
        {PERMISSIONS.map((p) => (
          <option key={p} value={p} />
        ))}
      </datalist>
      <datalist id="scopes">
        {SCOPES.map((s) => (
          <option key={s} value={s} />
        ))}
      </datalist>
    </>
  )
}

const ago = (at: string, now: number) => `${Math.max(0, Math.round((now - Date.parse(at)) / 1000))} s ago`

function Tabs({ tabs, revision, now }: { tabs: UserTabs | undefined; revision: number; now: number }) {
  const list: TabInfo[] = tabs?.tabs ?? []
  return (
    <section className="card">
      <h2>
        Open tabs <span className="muted">({list.length})</span>
      </h2>
      {!list.length ? (
        <p className="muted">
          No open tabs. Tabs report the revision they applied (<code>POST /v1/me/ack</code>) and are listed for {tabs?.ttl_seconds ?? 60} s after
          their last report.
        </p>
      ) : (
        <table className="table" data-testid="tabs-table">
          <thead>
            <tr>
              <th>Tab</th>
              <th>Showing</th>
              <th>Applied</th>
              <th>Recent changes reached it</th>
              <th>Last report</th>
            </tr>
          </thead>
          <tbody>
            {list.map((t) => (
              <tr key={t.tab} data-testid="tab-row" data-revision={t.revision}>
                <td>
                  <code>{t.tab.slice(0, 8)}</code> <span className="muted">{t.leader ? 'connection' : 'follower'}</span>
                </td>
                <td>{t.label ?? <span className="muted">-</span>}</td>
                <td>
                  {t.revision}{' '}
                  {t.revision >= revision ? <span className="ok">✓</span> : <span className="expiry">behind</span>}
                </td>
                <td className="muted">
                  {t.applied
                    .slice(-3)
                    .reverse()
                    .map((r) => `r${r.revision}` + (r.after_ms != null ? ` after ${r.after_ms} ms` : ''))
                    .join(' · ')}
                </td>
                <td className="muted">{ago(t.seen_at, now)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </section>
  )
}

// --- roles --------------------------------------------------------------------------------

export function RolesView({ store }: { store: ConsoleStore }) {
  const state = useConsole(store)
  const a = useApi()
  const { busy, run } = useAction(store)
  const [editing, setEditing] = useState<string | null>(null)
  const [draft, setDraft] = useState({ name: '', permissions: '', description: '' })
  const startEdit = (role: string) => {
    const r = state.roles.find((x) => x.role == role)
    setEditing(role)
    setDraft({ name: role, permissions: r ? r.permissions.join('\n') : '', description: r?.description ?? '' })
  }
  const save = async (e: FormEvent) => {
    e.preventDefault()
    const permissions = draft.permissions.split(/[\s,]+/).filter(Boolean)
    const name = (editing || draft.name).trim()
    if (await run(() => a.putRole(name, permissions, draft.description), <>Role {name} saved.</>)) setEditing(null)
  }
  const form = (
    <form className="form" onSubmit={save} data-testid="role-form">
      {editing == '' && (
        <label>
          Name
          <input value={draft.name} onChange={(e) => setDraft({ ...draft, name: e.target.value })} required data-testid="role-name" />
        </label>
      )}
      <label>
        Permissions (one per line)
        <textarea rows={5} value={draft.permissions} onChange={(e) => setDraft({ ...draft, permissions: e.target.value })} data-testid="role-permissions" />
      </label>
      <label>
        Description
        <input value={draft.description} onChange={(e) => setDraft({ ...draft, description: e.target.value })} />
      </label>
      <div className="actions">
        <button type="submit" className="primary" disabled={busy} data-testid="role-save">
          Save
        </button>
        <button type="button" onClick={() => setEditing(null)}>
          Cancel
        </button>
      </div>
    </form>
  )
  return (
    <>
      <div className="page-head">
        <h1>Roles</h1>
        <button type="button" onClick={() => (setEditing(''), setDraft({ name: '', permissions: '', description: '' }))}>
          New role
        </button>
      </div>
      {editing == '' && <section className="card">{form}</section>}
      {state.roles.map((r) => (
        <section key={r.role} className="card" data-testid={'role-' + r.role}>
          <div className="page-head">
            <h2>
              {r.role} <span className="muted">· {r.members} member{r.members == 1 ? '' : 's'}</span>
            </h2>
            <div className="actions">
              <button type="button" onClick={() => startEdit(r.role)} data-testid={'edit-role-' + r.role}>
                Edit
              </button>
              <button type="button" className="danger" disabled={busy} onClick={() => confirm(`Delete role ${r.role}?`) && run(() => a.deleteRole(r.role))}>
                Delete
              </button>
            </div>
          </div>
          {r.description && <p className="muted">{r.description}</p>}
          {editing == r.role ? (
            form
          ) : (
            <div className="chips">
              {r.permissions.map((p) => (
                <span key={p} className="chip">
                  {p}
                </span>
              ))}
            </div>
          )}
        </section>
      ))}
    </>
  )
}
