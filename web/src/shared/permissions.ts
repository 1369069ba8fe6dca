// One SDK client per signed-in user, as the SDK's README advises: tabs of the same
// app and user share one connection (the key names both), every tab reports what it
// has applied (`ack`), and removals can be held back while a page needs them.

import { createPermissions, patternMatches, scopeCovers, type Holding, type PermissionsClient } from '@permsync/client'
import type { Session } from './session'

/** What the current page must not lose under its feet until it reaches a safe point. */
let guarded: { permission: string; scope: string } | null = null

export function guardWhileMounted(permission: string, scope: string): () => void {
  const mine = { permission, scope }
  guarded = mine
  return () => {
    if (guarded == mine) guarded = null
  }
}

/** Does the held-back holding grant what the current page is guarded by? */
export const coversGuarded = (h: Holding) =>
  !!guarded && patternMatches(h.permission, guarded.permission) && scopeCovers(h.scope, guarded.scope)

export function createClient(app: string, session: Session, user: string): PermissionsClient {
  return createPermissions({
    baseUrl: '',
    getToken: (request) => session.getToken(request),
    key: `permsync:${app}:${user}`,
    holdRemovals: coversGuarded,
    ack: { label: () => `${app} ${location.pathname}` },
  })
}
