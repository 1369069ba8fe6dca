// @vitest-environment happy-dom
import { act } from 'react'
import { createRoot, type Root } from 'react-dom/client'
import { renderToString } from 'react-dom/server'
import { afterEach, describe, expect, it, vi } from 'vitest'
import { createPermissions, type PermissionsClient, type PermissionsOptions } from '../src/index.js'
import { Can, PermissionsProvider, usePermission, usePermissionsRevision, usePermissionsStatus, useRouteGuard } from '../src/react.js'
import { BASE, FakeServer, createClock, fakeEnv, flush } from './harness.js'

;(globalThis as { IS_REACT_ACT_ENVIRONMENT?: boolean }).IS_REACT_ACT_ENVIRONMENT = true

let open: PermissionsClient[] = []
let roots: Root[] = []
afterEach(() => {
  act(() => roots.forEach((r) => r.unmount()))
  roots = []
  open.forEach((c) => c.close())
  open = []
  document.body.innerHTML = ''
})

function setup(options: Partial<PermissionsOptions> = {}) {
  const server = new FakeServer()
  const clock = createClock()
  const client = createPermissions({
    baseUrl: BASE,
    fetch: server.fetch,
    timers: clock.timers,
    now: clock.now,
    env: fakeEnv().env,
    locks: null,
    BroadcastChannel: null,
    ...options,
  })
  open.push(client)
  return { client, server, clock }
}

function Panel() {
  const canWrite = usePermission('doc:write', 'project/7')
  const status = usePermissionsStatus()
  const revision = usePermissionsRevision()
  return (
    <p>
      {status} r{revision} write:{String(canWrite)}
      <Can permission="doc:read" fallback="no-read" loading="…">
        read
      </Can>
    </p>
  )
}

async function mount(client: PermissionsClient, node: React.ReactNode) {
  const el = document.createElement('div')
  document.body.append(el)
  const root = createRoot(el)
  roots.push(root)
  await act(async () => {
    root.render(<PermissionsProvider client={client}>{node}</PermissionsProvider>)
    await flush()
  })
  return { el, root }
}

describe('React adapter', () => {
  it('renders on the server from an initial snapshot', () => {
    const server = new FakeServer()
    const { client } = setup({ initialSnapshot: server.snapshot() })
    const html = renderToString(
      <PermissionsProvider client={client}>
        <Can permission="doc:read">yes</Can>
        <Can permission="doc:write" fallback="no">
          yes
        </Can>
      </PermissionsProvider>,
    )
    expect(html).toBe('yes<!-- -->no')
  })

  it('shows `loading` before the first snapshot, then follows changes', async () => {
    const { client, server } = setup()
    server.holdSnapshots = true
    const { el } = await mount(client, <Panel />)
    // The stream is open (live) while the snapshot is still on its way.
    expect(el.textContent).toBe('live r0 write:false…')
    await act(async () => {
      server.releaseSnapshots()
      await flush()
    })
    expect(el.textContent).toBe('live r1 write:falseread')
    await act(async () => {
      server.change([{ permission: 'doc:write', scope: 'project', expires_at: null }, { permission: 'doc:write', scope: 'project/7', expires_at: null }])
      await flush()
    })
    expect(el.textContent).toBe('live r2 write:trueno-read')
  })

  it('useRouteGuard calls onDenied when the current route is no longer allowed, never before the first snapshot', async () => {
    const { client, server } = setup()
    server.permissions = [{ permission: 'invoice:approve', scope: 'org/acme', expires_at: null }]
    server.holdSnapshots = true
    const onDenied = vi.fn()
    function Route() {
      const ok = useRouteGuard((c) => c.can('invoice:approve', 'org/acme/invoice/1'), onDenied)
      return <>{ok ? 'page' : 'leaving'}</>
    }
    const { el } = await mount(client, <Route />)
    expect(onDenied).not.toHaveBeenCalled()
    await act(async () => {
      server.releaseSnapshots()
      await flush()
    })
    expect(el.textContent).toBe('page')
    expect(onDenied).not.toHaveBeenCalled()
    await act(async () => {
      server.change([])
      await flush()
    })
    expect(el.textContent).toBe('leaving')
    expect(onDenied).toHaveBeenCalledTimes(1)
  })

  it('a component re-renders only when its own answer changes', async () => {
    const { client, server } = setup()
    let renders = 0
    function Narrow() {
      renders++
      return <>{String(usePermission('doc:read'))}</>
    }
    await mount(client, <Narrow />)
    await act(async () => {
      await client.ready
      await flush()
    })
    const before = renders
    await act(async () => {
      server.change([{ permission: 'doc:read', scope: null, expires_at: null }, { permission: 'other:x', scope: null, expires_at: null }])
      await flush()
    })
    expect(renders).toBe(before)
  })

  it('throws a clear error without a provider', () => {
    function Orphan() {
      usePermission('a')
      return null
    }
    expect(() => renderToString(<Orphan />)).toThrow(/PermissionsProvider/)
  })
})
