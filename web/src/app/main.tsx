// The shop: a workspace app whose buttons, menu and routes follow the signed-in
// user's permissions live, through @permsync/client.

import { StrictMode, useEffect, useState, useSyncExternalStore } from 'react'
import { createRoot } from 'react-dom/client'
import { PermissionsProvider, usePermissionAnywhere, usePermissionsClient } from '@permsync/client/react'
import type { PermissionsClient } from '@permsync/client'
import { createSession, type Session } from '../shared/session'
import { createClient } from '../shared/permissions'
import { Link, match, usePath } from '../shared/router'
import { LoginForm, Notices, StatusFooter } from '../shared/ui'
import { InvoicesPage, NewInvoicePage, NotFound, PlansPage, ProjectPage, ProjectsPage, ReportsPage } from './pages'
import '../shared/styles.css'

const session = createSession('shop.session')

function App() {
  const user = useSyncExternalStore(session.subscribe, () => session.user)
  const [client, setClient] = useState<PermissionsClient | null>(null)
  useEffect(() => {
    if (!user) return
    const c = createClient('shop', session, user)
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
        title="Acme Workspace"
        accounts={['alice', 'bob', 'carol']}
        intro={<p className="hint">The shop app of the permsync demo. What you may do follows your permissions, live.</p>}
      />
    )
  if (!client) return null
  return (
    <PermissionsProvider client={client}>
      <Shell session={session} user={user} />
    </PermissionsProvider>
  )
}

function Nav() {
  const path = usePath()
  const reports = usePermissionAnywhere('report:read')
  const invoices = usePermissionAnywhere('invoice:read')
  const projects = usePermissionAnywhere('project:read')
  const items = [
    { to: '/', label: 'Projects', show: projects, active: path == '/' || path.startsWith('/projects/') },
    { to: '/reports', label: 'Reports', show: reports, active: path == '/reports' },
    { to: '/invoices', label: 'Invoices', show: invoices, active: path == '/invoices' },
    { to: '/plans', label: 'Plans', show: true, active: path == '/plans' },
  ]
  return (
    <nav className="menu" data-testid="menu">
      {items
        .filter((i) => i.show)
        .map((i) => (
          <Link key={i.to} to={i.to} className={i.active ? 'active' : undefined} data-testid={'menu-' + i.label.toLowerCase()}>
            {i.label}
          </Link>
        ))}
    </nav>
  )
}

function Shell({ session, user }: { session: Session; user: string }) {
  const client = usePermissionsClient()
  const pro = usePermissionAnywhere('shop:pro')
  const path = usePath()
  const signOut = async () => {
    // Closing tells the server this tab is gone; let that report leave while the
    // session still stands.
    client.close()
    await new Promise((resolve) => setTimeout(resolve, 200))
    await session.logout()
  }
  let page
  let params: Record<string, string> | null
  if (path == '/') page = <ProjectsPage />
  else if ((params = match('/projects/:id', path))) page = <ProjectPage key={params.id} id={params.id!} user={user} />
  else if ((params = match('/projects/:id/invoices/new', path))) page = <NewInvoicePage key={params.id} id={params.id!} user={user} />
  else if (path == '/reports') page = <ReportsPage />
  else if (path == '/invoices') page = <InvoicesPage />
  else if (path == '/plans') page = <PlansPage />
  else page = <NotFound />
  return (
    <div className="app">
      <header className="topbar">
        <Link to="/" className="brand">
          Acme Workspace
        </Link>
        <Nav />
        <div className="who">
          {pro && (
            <span className="badge pro" data-testid="pro-badge">
              Pro
            </span>
          )}
          <span data-testid="user">{user}</span>
          <button type="button" className="link" onClick={signOut}>
            Sign out
          </button>
        </div>
      </header>
      <Notices />
      <main className="content">{page}</main>
      <StatusFooter session={session} />
    </div>
  )
}

createRoot(document.getElementById('root')!).render(
  <StrictMode>
    <App />
  </StrictMode>,
)
