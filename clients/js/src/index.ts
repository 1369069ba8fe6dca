// @permsync/client: framework-free core, no runtime dependencies.
export { createPermissions, HttpError } from './client.js'
export { checkPermission, patternMatches, scopeCovers, validPermission, validScope } from './match.js'
export { backoff, classify, type Action } from './policy.js'
export { sseParser, type SseEvent } from './sse.js'
export type * from './types.js'
