// Runs the real permsync binary for the contract and browser tests and the benchmark:
// a temporary SQLite database, an ephemeral port, the demo accounts, and plain
// `fetch` wrappers for what an admin (or a backend) does. Every process started here
// is stopped by `stop()`, and killed on exit as a last resort.

import { spawn, execFile, type ChildProcess } from 'node:child_process'
import { chmodSync, copyFileSync, existsSync, linkSync, mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'

/**
 * clients/js, found by walking up from this module (which may also run bundled, from
 * node_modules/.cache, for the benchmark).
 */
export const packageRoot = (() => {
  for (let dir = dirname(fileURLToPath(import.meta.url)); ; dir = dirname(dir)) {
    const manifest = join(dir, 'package.json')
    if (existsSync(manifest) && JSON.parse(readFileSync(manifest, 'utf8')).name == '@permsync/client') return dir
    if (dirname(dir) == dir) throw new Error('cannot find the @permsync/client package root')
  }
})()

/** `PERMSYNC_BIN`, or the workspace's debug build. */
export const permsyncBin = (): string => {
  const bin = resolve(process.env.PERMSYNC_BIN ?? join(packageRoot, '../../target/debug/permsync'))
  if (!existsSync(bin))
    throw new Error(
      `permsync binary not found at ${bin}. Build it first with \`cargo build -p permsync\` ` +
        '(from the repository root), or point PERMSYNC_BIN at one.',
    )
  return bin
}

const running = new Set<ChildProcess>()
process.once('exit', () => running.forEach((p) => p.kill('SIGKILL')))

export interface ServerOptions {
  /** Origins the server allows via CORS (`--cors-origin`). */
  corsOrigins?: string[]
  /** More `serve` flags. */
  args?: string[]
}

export interface ApiResponse<T = any> {
  status: number
  headers: Headers
  body: T
}

export class PermsyncServer {
  /** `http://127.0.0.1:PORT` */
  url = ''
  port = 0
  private child: ChildProcess | null = null
  private log = ''

  private constructor(
    readonly bin: string,
    readonly dir: string,
    readonly db: string,
    readonly options: ServerOptions,
  ) {}

  /** Starts `permsync serve --demo` on a fresh database and an ephemeral port. */
  static async start(options: ServerOptions = {}): Promise<PermsyncServer> {
    const source = permsyncBin()
    const dir = mkdtempSync(join(tmpdir(), 'permsync-js-'))
    // A link to this build (a copy across file systems), so that a restart runs the same
    // binary even if cargo replaces target/debug/permsync in the meantime.
    const bin = join(dir, 'permsync')
    try {
      linkSync(source, bin)
    } catch {
      copyFileSync(source, bin)
      chmodSync(bin, 0o755)
    }
    const server = new PermsyncServer(bin, dir, 'sqlite://' + join(dir, 'db'), options)
    try {
      await server.launch(0)
    } catch (e) {
      await server.dispose()
      throw e
    }
    return server
  }

  private async launch(port: number): Promise<void> {
    const args = ['serve', '--demo', '--addr', `127.0.0.1:${port}`, '--db', this.db]
    for (const origin of this.options.corsOrigins ?? []) args.push('--cors-origin', origin)
    args.push(...(this.options.args ?? []))
    const child = spawn(this.bin, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, NO_COLOR: '1' } })
    running.add(child)
    this.child = child
    child.once('exit', () => running.delete(child))
    const keep = (chunk: Buffer) => (this.log = (this.log + chunk.toString()).slice(-20000))
    child.stderr!.on('data', keep)
    const url = await new Promise<string>((ok, fail) => {
      let out = ''
      const timer = setTimeout(() => fail(new Error('permsync did not start within 20 s:\n' + this.log)), 20000)
      child.stdout!.on('data', (chunk: Buffer) => {
        keep(chunk)
        out += chunk.toString()
        const m = /permsync listening on (http:\/\/\S+)/.exec(out)
        if (m) clearTimeout(timer), ok(m[1]!)
      })
      child.once('exit', (code) => {
        clearTimeout(timer)
        fail(new Error(`permsync exited with ${code} before listening:\n` + this.log))
      })
    })
    this.url = url
    this.port = +new URL(url).port
  }

  /** Stops the server (SIGTERM, SIGKILL after 5 s) and waits until it has exited. */
  async stop(): Promise<void> {
    const child = this.child
    this.child = null
    if (!child || child.exitCode != null || child.signalCode != null) return
    await new Promise<void>((ok) => {
      const kill = setTimeout(() => child.kill('SIGKILL'), 5000)
      child.once('exit', () => (clearTimeout(kill), ok()))
      child.kill('SIGTERM')
    })
  }

  /** Starts the server again on the same database and the same port. */
  async restart(): Promise<void> {
    await this.stop()
    // The port was just released; retry briefly in case the kernel still holds it.
    for (let i = 0; ; i++) {
      try {
        return await this.launch(this.port)
      } catch (e) {
        if (i >= 20 || !/address|in use/i.test(String(e))) throw e
        await sleep(250)
      }
    }
  }

  /** Stops the server and removes its database. */
  async dispose(): Promise<void> {
    await this.stop()
    rmSync(this.dir, { recursive: true, force: true })
  }

  /** The server's output so far (for failure messages). */
  output(): string {
    return this.log
  }

  /** Runs a `permsync` subcommand on this server's database; resolves with its stdout. */
  cli(...args: string[]): Promise<string> {
    return new Promise((ok, fail) =>
      execFile(this.bin, [...args, '--db', this.db], { timeout: 20000, env: { ...process.env, NO_COLOR: '1' } }, (err, stdout, stderr) =>
        err ? fail(new Error(`permsync ${args.join(' ')}: ${err.message}\n${stderr}`)) : ok(stdout),
      ),
    )
  }

  async login(user: string, password = user + '-password'): Promise<{ access_token: string; refresh_token: string }> {
    const res = await this.api(null, 'POST', '/v1/auth/login', { username: user, password })
    if (res.status != 200) throw new Error(`login ${user}: ${res.status} ${JSON.stringify(res.body)}`)
    return res.body
  }

  /** One JSON request; `token` null for none. */
  async api<T = any>(token: string | null, method: string, path: string, body?: unknown): Promise<ApiResponse<T>> {
    const headers: Record<string, string> = {}
    if (token) headers.authorization = 'Bearer ' + token
    if (body !== undefined) headers['content-type'] = 'application/json'
    const res = await fetch(this.url + path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) })
    const text = await res.text()
    let parsed: any = text
    try {
      parsed = text ? JSON.parse(text) : null
    } catch {
      // Not JSON (metrics, say): keep the text.
    }
    return { status: res.status, headers: res.headers, body: parsed }
  }

  /** `permsync_open_streams` from `/metrics`, per transport and summed. */
  async openStreams(): Promise<{ total: number; byTransport: Record<string, number> }> {
    const res = await fetch(this.url + '/metrics')
    const text = await res.text()
    const byTransport: Record<string, number> = {}
    let total = 0
    for (const m of text.matchAll(/^permsync_open_streams(?:\{([^}]*)\})?\s+(\S+)$/gm)) {
      const transport = /transport="([^"]*)"/.exec(m[1] ?? '')?.[1] ?? ''
      byTransport[transport] = (byTransport[transport] ?? 0) + Number(m[2])
      total += Number(m[2])
    }
    return { total, byTransport }
  }
}

export const sleep = (ms: number) => new Promise<void>((ok) => setTimeout(ok, ms))

/** Polls `check` every 20 ms until it returns a truthy value; fails after `timeoutMs` naming `what`. */
export async function until<T>(check: () => T | Promise<T>, what: string, timeoutMs = 10000): Promise<T> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const v = await check()
    if (v) return v
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)
    await sleep(20)
  }
}
