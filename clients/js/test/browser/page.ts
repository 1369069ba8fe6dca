// A tiny app page for the browser tests and the benchmark: a static page and the SDK's
// built ESM bundle (dist/), served by node:http on an ephemeral port, and Debian's
// Chromium driven by playwright-core. The page signs in to permsync itself (CORS) and
// renders `can(permission)` into the DOM.

import { existsSync, readFileSync } from 'node:fs'
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { extname, join, normalize, resolve } from 'node:path'
import { chromium, type Browser } from 'playwright-core'
import { packageRoot as root } from '../contract/permsync.js'
const dist = join(root, 'dist')

/** Where screenshots go: target/browser/ at the repository root. */
export const screenshotDir = resolve(root, '../../target/browser')

const html = `<!doctype html>
<html lang="en">
<meta charset="utf-8">
<title>permsync tab</title>
<style>
  body { font: 18px system-ui, sans-serif; margin: 2em; }
  #can.yes { color: #070; } #can.no { color: #a00; }
  small { color: #555; }
</style>
<h1>Invoice 17</h1>
<p><span id="permission"></span>: <b id="can">…</b></p>
<p><button id="approve" disabled>Approve</button></p>
<p><small>revision <span id="revision">0</span> · <span id="status">connecting</span> · <span id="role">?</span> tab</small></p>
<script type="module" src="/app.js"></script>
</html>
`

// The app: sign in, create the client with tab sharing (real Web Locks and
// BroadcastChannel), render on every change. `window.domChanges` records when the
// answer in the DOM changed and `window.loads` the snapshot loads, for the benchmark.
const app = `import { createPermissions } from '/dist/index.js'
const q = new URLSearchParams(location.search)
const base = q.get('server'), user = q.get('user'), password = q.get('password')
const permission = q.get('permission') || 'invoice:approve'
let token = null
async function login() {
  const res = await fetch(base + '/v1/auth/login', {
    method: 'POST', headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ username: user, password }),
  })
  if (!res.ok) throw new Error('login: ' + res.status)
  return (token = (await res.json()).access_token)
}
// When each snapshot load started and ended (for the benchmark's breakdown).
window.loads = []
const clock = () => performance.timeOrigin + performance.now()
const timedFetch = (input, init) => {
  const start = clock()
  const res = fetch(input, init)
  if (String(input).endsWith('/v1/me/permissions')) res.then((r) => window.loads.push({ start, end: clock(), status: r.status }), () => {})
  return res
}
const permissions = createPermissions({
  baseUrl: base,
  key: 'permsync:' + base + ':' + user,
  getToken: ({ forceRefresh }) => (!token || forceRefresh ? login() : token),
  fetch: timedFetch,
})
window.permissions = permissions
window.domChanges = []
const $ = (id) => document.getElementById(id)
$('permission').textContent = permission
function render() {
  const allowed = permissions.can(permission)
  const text = allowed ? 'yes' : 'no'
  if ($('can').textContent != text) {
    $('can').textContent = text
    $('can').className = text
    window.domChanges.push({ at: clock(), text, revision: permissions.revision })
  }
  $('approve').disabled = !allowed
  $('revision').textContent = String(permissions.revision)
  $('status').textContent = permissions.status
  $('role').textContent = permissions.leader ? 'leader' : 'follower'
}
permissions.subscribe(render)
permissions.on('leader', render)
permissions.ready.then(render, () => {})
render()
`

const types: Record<string, string> = { '.js': 'text/javascript', '.map': 'application/json', '.html': 'text/html' }

export interface PageServer {
  /** `http://127.0.0.1:PORT` */
  url: string
  /** The page for `user`, talking to the permsync server at `permsync`. */
  page(permsync: string, user: string, permission?: string): string
  close(): Promise<void>
}

export async function startPageServer(): Promise<PageServer> {
  if (!existsSync(join(dist, 'index.js'))) throw new Error(`${dist}/index.js is missing: run \`npm run build\` first`)
  const server: Server = createServer((req, res) => {
    const path = new URL(req.url ?? '/', 'http://x').pathname
    let body: string | Buffer | undefined
    let type = 'text/html'
    if (path == '/') body = html
    else if (path == '/app.js') (body = app), (type = types['.js']!)
    else if (path.startsWith('/dist/')) {
      const file = normalize(join(dist, path.slice('/dist/'.length)))
      if (file.startsWith(dist + '/') && existsSync(file)) (body = readFileSync(file)), (type = types[extname(file)] ?? 'application/octet-stream')
    }
    if (body === undefined) return res.writeHead(404).end()
    res.writeHead(200, { 'content-type': type + '; charset=utf-8', 'cache-control': 'no-store' }).end(body)
  })
  await new Promise<void>((ok) => server.listen(0, '127.0.0.1', ok))
  const url = 'http://127.0.0.1:' + (server.address() as AddressInfo).port
  return {
    url,
    page: (permsync, user, permission = 'invoice:approve') =>
      `${url}/?${new URLSearchParams({ server: permsync, user, password: user + '-password', permission })}`,
    close: () =>
      new Promise<void>((ok) => {
        server.closeAllConnections()
        server.close(() => ok())
      }),
  }
}

/** Debian's Chromium (or `CHROMIUM`), headless, with nothing that reaches the network by itself. */
export async function launchChromium(): Promise<Browser> {
  const executablePath = process.env.CHROMIUM || '/usr/bin/chromium'
  if (!existsSync(executablePath))
    throw new Error(`Chromium not found at ${executablePath}: install it with \`apt-get update && apt-get install -y chromium\`, or set CHROMIUM`)
  return chromium.launch({
    executablePath,
    timeout: 30000,
    args: ['--no-sandbox', '--headless', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  })
}
