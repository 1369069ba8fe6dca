// The admin API (PROTOCOL §4 "Administration"), called through the SDK's
// `client.fetch`, which adds the token, retries a 401 once with a fresh one and
// keeps the console's own permissions current from `Permissions-Revision`.

import type { Holding, PermissionsClient } from '@permsync/client'

export interface UserSummary {
  user: string
  revision: number
}

export interface Grant {
  id: number
  permission: string
  scope: string | null
  expires_at: string | null
  created_at: string
  created_by: string
}

export interface Binding {
  id: number
  role: string
  scope: string | null
  expires_at: string | null
  created_at: string
  created_by: string
}

export interface UserDetail {
  user: string
  revision: number
  grants: Grant[]
  bindings: Binding[]
  permissions: Holding[]
}

export interface Role {
  role: string
  description: string
  permissions: string[]
  members: number
}

export interface ChangeRecord {
  seq: number
  at: string
  actor: string
  action: string
  user?: string
  role?: string
  permission?: string
  scope?: string
  detail?: Record<string, unknown>
}

export interface AppliedRevision {
  revision: number
  applied_at: string
  committed_at: string | null
  after_ms: number | null
}

export interface TabInfo {
  tab: string
  label: string | null
  leader: boolean
  revision: number
  opened_at: string
  seen_at: string
  applied: AppliedRevision[]
}

export interface UserTabs {
  user: string
  revision: number
  tabs: TabInfo[]
  ttl_seconds: number
}

export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message)
  }
}

export function api(client: PermissionsClient) {
  async function call<T>(method: string, path: string, body?: unknown): Promise<T> {
    const res = await client.fetch(path, {
      method,
      headers: body === undefined ? {} : { 'Content-Type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    })
    const text = await res.text()
    const data = text ? JSON.parse(text) : null
    if (!res.ok) throw new ApiError(res.status, data?.detail ?? `HTTP ${res.status}`)
    return data as T
  }
  const u = encodeURIComponent
  return {
    users: () => call<{ users: UserSummary[] }>('GET', '/v1/users?limit=1000'),
    user: (user: string) => call<UserDetail>('GET', `/v1/users/${u(user)}`),
    createUser: (user: string, password: string) => call('POST', '/v1/users', { user, password: password || undefined }),
    revokeSessions: (user: string) => call('POST', `/v1/users/${u(user)}/sessions/revoke`),
    grant: (user: string, permission: string, scope: string | null, expires_at: string | null) =>
      call<{ seq: number; revision: number }>('POST', `/v1/users/${u(user)}/grants`, {
        permission,
        scope: scope || undefined,
        expires_at: expires_at || undefined,
      }),
    revokeGrant: (user: string, id: number) => call('DELETE', `/v1/users/${u(user)}/grants/${id}`),
    bind: (user: string, role: string, scope: string | null, expires_at: string | null) =>
      call('POST', `/v1/users/${u(user)}/roles`, { role, scope: scope || undefined, expires_at: expires_at || undefined }),
    unbind: (user: string, id: number) => call('DELETE', `/v1/users/${u(user)}/roles/${id}`),
    roles: () => call<{ roles: Role[] }>('GET', '/v1/roles'),
    putRole: (role: string, permissions: string[], description: string) => call('PUT', `/v1/roles/${u(role)}`, { permissions, description }),
    deleteRole: (role: string) => call('DELETE', `/v1/roles/${u(role)}`),
    changes: (after: number) => call<{ changes: ChangeRecord[]; next_after: number }>('GET', `/v1/changes?after=${after}&limit=1000`),
    tabs: (user: string) => call<UserTabs>('GET', `/v1/users/${u(user)}/tabs`),
  }
}

export type Api = ReturnType<typeof api>
