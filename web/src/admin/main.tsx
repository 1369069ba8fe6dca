// The admin console: users, roles, grants and bindings (with scopes and expiry),
// the live audit log, and each user's open tabs with the revision each applied.
// It uses the same SDK as the shop, for its own permissions and its API calls.

import { StrictMode, useEffect, useState, useSyncExternalStore } from 'react'
import { createRoot } from 'react-dom/client'
import { PermissionsProvider, usePermission, usePermissionsClient } from '@permsync/client/react'
import type { PermissionsClient } from '@permsync/client'
import { createSession, type Session } from '../shared/session'
import { createClient } from '../shared/permissions'
import { Link, match, navigate, usePath } from '../shared/router'
import { LoginForm, Notices, StatusFooter } from '../shared/ui'
import { ConsoleStore } from './store'
import { AuditLog } from './audit'
import { RolesView, UserView, UsersNav } from './views'
import '../shared/styles.css'

const session = createSession('admin.session')

function App() {
  const user = useSyncExternalStore(session.subscribe, () => session.user)
  const [client, setClient] = useState<PermissionsClient | null>(null)
  useEffect(() => {
    if (!user) return
    const c = createClient('admin', session, user)
    setClient(c)
    return () => {
      c.close()
      setClient(null)
    }
  }, [user])
  if (!user)
    return (
      <LoginForm
        session={session}
        title="permsync admin console"
        accounts={['admin']}
        intro={<p className="hint">Grant, revoke and edit roles, and watch each change reach the user&apos;s open tabs.</p>}
      />
    )
  if (!client) return null
  return (
    <PermissionsProvider client={client}>
      <Console session={session} user={user} />
    </PermissionsProvider>
  )
}

function Console({ session, user }: { session: Session; user: string }) {
  const client = usePermissionsClient()
  const isAdmin = usePermission('permsync:admin')
  const ready = useSyncExternalStore(client.subscribe, () => !!client.snapshot)
  const [store] = useState(() => new ConsoleStore(client))
  useEffect(() => {
    if (!isAdmin) return
    store.start()
    return () => store.stop()
  }, [store, isAdmin])
  const path = usePath()
  const signOut = async () => {
    client.close()
    await new Promise((resolve) => setTimeout(resolve, 200))
    await session.logout()
  }
  let main
  let params: Record<string, string> | null
  if ((params = match('/admin/users/:user', path))) main = <UserView store={store} user={params.user!} />
  else if (path == '/admin/roles') main = <RolesView store={store} />
  else main = <Overview store={store} />
  return (
    <div className="app">
      <header className="topbar">
        <Link to="/admin" className="brand">
          permsync admin
        </Link>
        <nav className="menu">
          <Link to="/admin" className={path.startsWith('/admin/users') || path == '/admin' || path == '/admin/' ? 'active' : undefined}>
            Users
          </Link>
          <Link to="/admin/roles" className={path == '/admin/roles' ? 'active' : undefined} data-testid="menu-roles">
            Roles
          </Link>
          <a href="/" target="_blank" rel="noreferrer">
            Open the shop ↗
          </a>
        </nav>
        <div className="who">
          <span>{user}</span>
          <button type="button" className="link" onClick={signOut}>
            Sign out
          </button>
        </div>
      </header>
      <Notices />
      {!ready ? (
        <p className="content muted">Loading…</p>
      ) : !isAdmin ? (
        <main className="content">
          <section className="card" data-testid="not-admin">
            <h1>Not an administrator</h1>
            <p>
              The console needs <code>permsync:admin</code>. This page follows your permissions: it opens as soon as an administrator grants it.
            </p>
          </section>
        </main>
      ) : (
        <div className="console">
          <UsersNav store={store} />
          <div className="panel">{main}</div>
          <AuditLog store={store} />
        </div>
      )}
      <StatusFooter session={session} />
    </div>
  )
}

function Overview({ store }: { store: ConsoleStore }) {
  const state = useSyncExternalStore(store.subscribe, store.get)
  useEffect(() => {
    // Start with the first user who is not the administrator.
    const first = state.users.find((u) => u.user != 'admin') ?? state.users[0]
    if (first) navigate(`/admin/users/${encodeURIComponent(first.user)}`, { replace: true })
  }, [state.users])
  return <p className="muted">Loading users…</p>
}

createRoot(document.getElementById('root')!).render(
  <StrictMode>
    <App />
  </StrictMode>,
)
