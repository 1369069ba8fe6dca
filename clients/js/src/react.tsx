// React bindings: a thin layer over useSyncExternalStore. Every hook reads a primitive
// (boolean, string, number) from the client, so React's equality check alone decides
// whether a component re-renders, and a change elsewhere in the snapshot costs nothing.

import { createContext, useContext, useEffect, useRef, useSyncExternalStore, type ReactNode } from 'react'
import type { PermissionsClient, Status } from './index.js'

const Context = createContext<PermissionsClient | null>(null)

export function PermissionsProvider({ client, children }: { client: PermissionsClient; children?: ReactNode }) {
  return <Context.Provider value={client}>{children}</Context.Provider>
}

export function usePermissionsClient(): PermissionsClient {
  const client = useContext(Context)
  if (!client) throw new Error('usePermissionsClient: no <PermissionsProvider> above this component')
  return client
}

/** Re-renders when `read(client)` changes; `read` must return a primitive. */
function useClientValue<T>(read: (client: PermissionsClient) => T): T {
  const client = usePermissionsClient()
  const get = () => read(client)
  // The server snapshot is the same read: with `initialSnapshot` the server render
  // and hydration agree; without it both answer "not allowed".
  return useSyncExternalStore(client.subscribe, get, get)
}

/** `client.can(permission, scope)`, kept current. */
export const usePermission = (permission: string, scope?: string | null): boolean =>
  useClientValue((c) => c.can(permission, scope))

/** `client.canAnywhere(permission)`, kept current. */
export const usePermissionAnywhere = (permission: string): boolean => useClientValue((c) => c.canAnywhere(permission))

export const usePermissionsStatus = (): Status => useClientValue((c) => c.status)

/** Revision held by the cache; 0 until the first snapshot. */
export const usePermissionsRevision = (): number => useClientValue((c) => c.revision)

export interface CanProps {
  permission: string
  scope?: string | null
  /** Ignore scopes: allowed if held anywhere. */
  anywhere?: boolean
  /** Rendered when not allowed. */
  fallback?: ReactNode
  /** Rendered before the first snapshot arrives (defaults to `fallback`). */
  loading?: ReactNode
  children?: ReactNode
}

/** Renders `children` when allowed, else `fallback` (or `loading` before the first snapshot). */
export function Can({ permission, scope, anywhere, fallback = null, loading, children }: CanProps) {
  const state = useClientValue((c) => (!c.snapshot ? 0 : (anywhere ? c.canAnywhere(permission) : c.can(permission, scope)) ? 2 : 1))
  return <>{state == 2 ? children : state == 0 && loading !== undefined ? loading : fallback}</>
}

/**
 * Re-checks the current route whenever permissions or the status change, and calls
 * `onDenied` when `check` turns false (after the first snapshot, never before: an
 * empty cache is not a denial). Use it to leave a page whose permission was just
 * revoked, without reloading.
 */
export function useRouteGuard(check: (client: PermissionsClient) => boolean, onDenied: () => void): boolean {
  const allowed = useClientValue((c) => !c.snapshot || check(c))
  const latest = useRef(onDenied)
  latest.current = onDenied
  useEffect(() => {
    if (!allowed) latest.current()
  }, [allowed])
  return allowed
}
