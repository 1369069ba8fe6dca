// The shop's pages. Every control that needs a permission asks the SDK (through the
// React hooks) and re-renders by itself when an admin changes something.

import { useEffect, useRef, useState, useSyncExternalStore, type FormEvent, type ReactNode } from 'react'
import { usePermission, usePermissionAnywhere, usePermissionsClient, useRouteGuard } from '@permsync/client/react'
import type { Holding, PermissionsClient } from '@permsync/client'
import { coversGuarded, guardWhileMounted } from '../shared/permissions'
import { Link, navigate } from '../shared/router'
import { notify, until, useNow } from '../shared/ui'
import { INVOICES, ORG, PROJECTS, findProject, loadDraft, projectScope, saveDraft, type Draft } from './data'

const needs = (permission: string, scope?: string | null) => `Needs ${permission}${scope ? ' at ' + scope : ''}`

/** A button enabled exactly while the user holds `permission` (at `scope`, or anywhere). */
function PermButton(props: {
  permission: string
  scope?: string | null
  testid: string
  onClick?: () => void
  className?: string
  children: ReactNode
}) {
  const allowed = usePermission(props.permission, props.scope)
  return (
    <button
      type="button"
      className={props.className}
      disabled={!allowed}
      title={allowed ? undefined : needs(props.permission, props.scope)}
      data-testid={props.testid}
      onClick={props.onClick}
    >
      {props.children}
    </button>
  )
}

const useHasSnapshot = () => {
  const client = usePermissionsClient()
  return useSyncExternalStore(client.subscribe, () => !!client.snapshot)
}

/** The holding that grants `permission` at `scope` and expires, if any. */
function useExpiry(permission: string, scope: string): string | null {
  const client = usePermissionsClient()
  return useSyncExternalStore(client.subscribe, () => expiryOf(client, permission, scope))
}

function expiryOf(client: PermissionsClient, permission: string, scope: string): string | null {
  if (!client.can(permission, scope)) return null
  const holdings: Holding[] = client.snapshot?.permissions ?? []
  const lasting = holdings.filter((h) => h.permission == permission || h.permission == '*' || (h.permission.endsWith(':*') && permission.startsWith(h.permission.slice(0, -1))))
  if (lasting.some((h) => h.expires_at == null)) return null
  return lasting.map((h) => h.expires_at!).sort().at(-1) ?? null
}

function Denied({ title }: { title: string }) {
  return (
    <section className="card denied" data-testid="denied">
      <h2>{title}</h2>
      <p>You don&apos;t have access to this page. An administrator can give it to you; this page will follow at once.</p>
      <Link to="/plans">See plans</Link>
    </section>
  )
}

/**
 * A whole route gated by a permission: a denial page when the user arrives without
 * it, and a move to the projects (with a notice) when it is taken away while here.
 */
function Gated({ title, check, children }: { title: string; check: (c: PermissionsClient) => boolean; children: ReactNode }) {
  const ready = useHasSnapshot()
  const wasAllowed = useRef(false)
  const allowed = useRouteGuard(check, () => {
    if (!wasAllowed.current) return
    notify('warning', <>Your access to <b>{title}</b> was removed, so you were moved to a page you may see.</>)
    navigate('/', { replace: true })
  })
  useEffect(() => {
    if (ready && allowed) wasAllowed.current = true
  }, [ready, allowed])
  if (!ready) return <p className="muted">Loading your permissions…</p>
  if (!allowed) return <Denied title={title} />
  return <>{children}</>
}

// --- projects -----------------------------------------------------------------------

export function ProjectsPage() {
  const [created, setCreated] = useState<string[]>([])
  return (
    <Gated title="Projects" check={(c) => c.canAnywhere('project:read')}>
      <div className="page-head">
        <h1>Projects</h1>
        <PermButton
          permission="project:create"
          scope={ORG}
          testid="new-project"
          className="primary"
          onClick={() => setCreated((c) => [...c, `New project ${c.length + 1}`])}
        >
          New project
        </PermButton>
      </div>
      <div className="grid">
        {PROJECTS.map((p) => (
          <ProjectCard key={p.id} id={p.id} />
        ))}
        {created.map((name) => (
          <article className="card project" key={name} data-testid="created-project">
            <h2>{name}</h2>
            <p className="muted">Created with the Pro plan. (Not saved: this is a demo.)</p>
          </article>
        ))}
      </div>
    </Gated>
  )
}

function ProjectCard({ id }: { id: string }) {
  const project = findProject(id)!
  const scope = projectScope(id)
  const readable = usePermission('project:read', scope)
  return (
    <article className="card project" data-testid={'project-' + id}>
      <h2>{project.name}</h2>
      <p className="muted">{project.summary}</p>
      <p className="scope">
        <code>{scope}</code>
      </p>
      <div className="actions">
        {readable ? (
          <Link to={`/projects/${id}`} className="button" data-testid={`open-project-${id}`}>
            Open
          </Link>
        ) : (
          <button type="button" disabled title={needs('project:read', scope)}>
            Open
          </button>
        )}
        <PermButton permission="doc:edit" scope={scope} testid={`edit-docs-${id}`}>
          Edit documents
        </PermButton>
        <PermButton permission="invoice:create" scope={scope} testid={`new-invoice-card-${id}`} onClick={() => navigate(`/projects/${id}/invoices/new`)}>
          New invoice
        </PermButton>
      </div>
    </article>
  )
}

export function ProjectPage({ id, user }: { id: string; user: string }) {
  const project = findProject(id)
  const scope = projectScope(id)
  const canCreate = usePermission('invoice:create', scope)
  const draft = loadDraft(user, id)
  if (!project) return <NotFound />
  return (
    <Gated title={project.name} check={(c) => c.can('project:read', scope)}>
      <div className="page-head">
        <h1 data-testid="project-title">{project.name}</h1>
        <code className="scope">{scope}</code>
      </div>
      <section className="card">
        <h2>Documents</h2>
        <ul className="rows">
          {project.documents.map((d, i) => (
            <li key={d}>
              <span>{d}</span>
              <span className="actions">
                <PermButton permission="doc:edit" scope={scope} testid={`doc-edit-${id}-${i}`}>
                  Edit
                </PermButton>
                <PermButton permission="comment:write" scope={scope} testid={`doc-comment-${id}-${i}`}>
                  Comment
                </PermButton>
                <PermButton permission="doc:publish" scope={scope} testid={`doc-publish-${id}-${i}`}>
                  Publish
                </PermButton>
              </span>
            </li>
          ))}
        </ul>
      </section>
      <section className="card">
        <h2>Invoices</h2>
        {draft && (
          <p className="draft-kept" data-testid="draft-kept">
            Draft invoice kept: <b>{draft.customer || '(no customer)'}</b>
            {draft.amount && <>, {draft.amount}</>}.{' '}
            {canCreate ? 'Continue it with “New invoice”.' : 'You can finish it when you may create invoices here again.'}
          </p>
        )}
        <PermButton
          permission="invoice:create"
          scope={scope}
          testid={`new-invoice-${id}`}
          className="primary"
          onClick={() => navigate(`/projects/${id}/invoices/new`)}
        >
          {draft ? 'Continue draft invoice' : 'New invoice'}
        </PermButton>
      </section>
    </Gated>
  )
}

/**
 * The draft form, on a route gated by `invoice:create` at the project. The draft is
 * kept in local storage as it is typed. A removal of the permission is first held
 * back (the SDK's `holdRemovals`): the page saves the draft, then applies the safe
 * point, and the route guard moves the user to the project with a notice.
 */
export function NewInvoicePage({ id, user }: { id: string; user: string }) {
  const client = usePermissionsClient()
  const project = findProject(id)
  const scope = projectScope(id)
  const [draft, setDraft] = useState<Draft>(() => loadDraft(user, id) ?? { customer: '', amount: '', note: '' })
  const latest = useRef(draft)
  latest.current = draft
  const [busy, setBusy] = useState(false)
  const [error, setError] = useState('')
  const ready = useHasSnapshot()
  const wasAllowed = useRef(false)

  const allowed = useRouteGuard(
    (c) => c.can('invoice:create', scope),
    () => {
      saveDraft(user, id, latest.current)
      notify(
        'warning',
        wasAllowed.current ? (
          <>
            An administrator removed your permission to create invoices in <b>{project?.name}</b>. Your draft is kept.
          </>
        ) : (
          <>
            You may not create invoices in <b>{project?.name}</b>.
          </>
        ),
      )
      navigate(`/projects/${id}`, { replace: true })
    },
  )
  useEffect(() => {
    if (ready && allowed) wasAllowed.current = true
  }, [ready, allowed])

  useEffect(() => {
    const unguard = guardWhileMounted('invoice:create', scope)
    const off = client.on('held', (holdings) => {
      if (!holdings.some(coversGuarded)) return
      // The safe point: nothing typed is lost, then the removal applies.
      saveDraft(user, id, latest.current)
      client.applySafePoint()
    })
    return () => {
      off()
      unguard()
      client.applySafePoint()
    }
  }, [client, scope, user, id])

  const update = (field: keyof Draft) => (value: string) => {
    const next = { ...latest.current, [field]: value }
    setDraft(next)
    saveDraft(user, id, next)
  }

  const submit = async (e: FormEvent) => {
    e.preventDefault()
    setBusy(true)
    setError('')
    try {
      const res = await client.fetch('/demo/api/invoices', {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ project: id, ...latest.current }),
      })
      const body = await res.json()
      if (!res.ok) {
        setError(body.detail ?? 'The invoice was refused.')
        return
      }
      saveDraft(user, id, null)
      notify('success', <>Invoice {body.id} created.</>)
      navigate(`/projects/${id}`)
    } catch {
      setError('The shop could not be reached.')
    } finally {
      setBusy(false)
    }
  }

  if (!project) return <NotFound />
  if (!ready || !allowed) return <p className="muted">Loading…</p>
  return (
    <>
      <div className="page-head">
        <h1>New invoice</h1>
        <span className="muted">
          in <Link to={`/projects/${id}`}>{project.name}</Link>
        </span>
      </div>
      <form className="card form" onSubmit={submit} data-testid="invoice-form">
        <label>
          Customer
          <input data-testid="draft-customer" value={draft.customer} onChange={(e) => update('customer')(e.target.value)} required maxLength={200} />
        </label>
        <label>
          Amount
          <input data-testid="draft-amount" inputMode="decimal" value={draft.amount} onChange={(e) => update('amount')(e.target.value)} required />
        </label>
        <label>
          Note
          <textarea data-testid="draft-note" value={draft.note} onChange={(e) => update('note')(e.target.value)} rows={3} maxLength={2000} />
        </label>
        {error && (
          <p className="error" role="alert">
            {error}
          </p>
        )}
        <div className="actions">
          <button type="submit" className="primary" disabled={busy} data-testid="draft-submit">
            Create invoice
          </button>
          <span className="muted">Your draft is saved as you type.</span>
        </div>
      </form>
    </>
  )
}

// --- reports and invoices -------------------------------------------------------------

export function ReportsPage() {
  const expires = useExpiry('report:export', ORG)
  const now = useNow(500)
  const [exported, setExported] = useState(0)
  return (
    <Gated title="Reports" check={(c) => c.canAnywhere('report:read')}>
      <div className="page-head">
        <h1>Reports</h1>
      </div>
      <section className="card">
        <ul className="rows">
          <li>
            <span>Revenue by quarter</span>
            <span className="muted">org/acme</span>
          </li>
          <li>
            <span>Customer churn</span>
            <span className="muted">org/acme</span>
          </li>
        </ul>
        <div className="actions">
          <PermButton permission="report:export" scope={ORG} testid="export-report" className="primary" onClick={() => setExported((n) => n + 1)}>
            Export report
          </PermButton>
          {expires && (
            <span className="muted" data-testid="export-expiry">
              access ends in {until(expires, now)}
            </span>
          )}
          {exported > 0 && <span className="muted">exported {exported}×</span>}
        </div>
      </section>
    </Gated>
  )
}

export function InvoicesPage() {
  return (
    <Gated title="Invoices" check={(c) => c.canAnywhere('invoice:read')}>
      <div className="page-head">
        <h1>Invoices</h1>
      </div>
      <section className="card">
        <table className="table" data-testid="invoices">
          <thead>
            <tr>
              <th>Invoice</th>
              <th>Project</th>
              <th>Customer</th>
              <th className="num">Amount</th>
              <th />
            </tr>
          </thead>
          <tbody>
            {INVOICES.map((inv) => (
              <tr key={inv.id}>
                <td>{inv.id}</td>
                <td>{findProject(inv.project)?.name}</td>
                <td>{inv.customer}</td>
                <td className="num">{inv.amount}</td>
                <td>
                  <PermButton permission="invoice:approve" scope={projectScope(inv.project)} testid={`approve-${inv.id}`}>
                    Approve
                  </PermButton>
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      </section>
    </Gated>
  )
}

// --- plans ----------------------------------------------------------------------------

/**
 * Buying goes through the shop's own backend (`POST /demo/api/buy`), which grants
 * the plan and answers with the buyer's new revision. The page waits for exactly
 * that revision: no reload, no cache to clear, no polling.
 */
export function PlansPage() {
  const client = usePermissionsClient()
  const pro = usePermissionAnywhere('shop:pro')
  const [state, setState] = useState<{ busy: boolean; error: string; done: string }>({ busy: false, error: '', done: '' })
  const buy = async () => {
    setState({ busy: true, error: '', done: '' })
    try {
      const res = await client.fetch('/demo/api/buy', {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ plan: 'pro' }),
      })
      const body = await res.json()
      if (!res.ok) throw new Error(body.detail ?? 'The purchase failed.')
      const answered = performance.now()
      await client.waitForRevision(body.revision)
      const ms = Math.round(performance.now() - answered)
      setState({
        busy: false,
        error: '',
        done: `The shop answered with revision ${body.revision}; this page held it ${ms} ms later.`,
      })
      notify('success', <>Welcome to Pro! You can now create projects.</>)
    } catch (e) {
      setState({ busy: false, error: e instanceof Error ? e.message : 'The purchase failed.', done: '' })
    }
  }
  return (
    <>
      <div className="page-head">
        <h1>Plans</h1>
      </div>
      <div className="grid">
        <article className="card plan">
          <h2>Free</h2>
          <p className="muted">Browse projects and documents your team shares with you.</p>
        </article>
        <article className="card plan" data-testid="plan-pro">
          <h2>
            Pro <span className="badge pro">demo: free</span>
          </h2>
          <p className="muted">Create projects in Acme. Granted by the shop&apos;s backend the moment you buy.</p>
          {pro ? (
            <p className="ok" data-testid="pro-active">
              You are on Pro.
            </p>
          ) : (
            <button type="button" className="primary" onClick={buy} disabled={state.busy} data-testid="buy-pro">
              Buy Pro
            </button>
          )}
          {state.done && (
            <p className="muted" data-testid="buy-result">
              {state.done}
            </p>
          )}
          {state.error && (
            <p className="error" role="alert">
              {state.error}
            </p>
          )}
        </article>
      </div>
    </>
  )
}

export function NotFound() {
  return (
    <section className="card">
      <h1>Not found</h1>
      <p>
        There is no such page. <Link to="/">Back to the projects</Link>
      </p>
    </section>
  )
}
