// The console's data: users, their details and open tabs, roles, and the audit log,
// kept current by the change feed. The feed is `GET /v1/changes/stream` (SSE,
// resumed after the last `seq` on every reconnect, e.g. when the token expires);
// while the stream is unavailable it polls `GET /v1/changes?after=`.

import { sseParser, type PermissionsClient } from '@permsync/client'
import { api, type ChangeRecord, type Role, type UserDetail, type UserSummary, type UserTabs } from './api'

export type Feed = 'connecting' | 'live' | 'polling'

export interface Delivery {
  kind: 'done' | 'pending' | 'none'
  text: string
}

export interface ConsoleState {
  users: UserSummary[]
  details: Record<string, UserDetail>
  roles: Role[]
  tabs: Record<string, UserTabs>
  /** Newest first. */
  changes: ChangeRecord[]
  /** Deliveries of changes that reached every tab open at the time, kept once complete. */
  delivered: Record<number, Delivery>
  feed: Feed
  /** The seq of the newest change seen, so the log can highlight arrivals. */
  newest: number
}

const KEEP = 200
const TABS_EVERY_MS = 1000

export class ConsoleStore {
  state: ConsoleState = { users: [], details: {}, roles: [], tabs: {}, changes: [], delivered: {}, feed: 'connecting', newest: 0 }
  private listeners = new Set<() => void>()
  private api
  /** Bumped by start() and stop(): loops of an older generation end. */
  private gen = 0
  private after = 0
  private reloadTimer: ReturnType<typeof setTimeout> | undefined
  private tabsTimer: ReturnType<typeof setInterval> | undefined
  private abort = new AbortController()
  private openedAt = Date.now()

  constructor(private client: PermissionsClient) {
    this.api = api(client)
  }

  subscribe = (fn: () => void) => {
    this.listeners.add(fn)
    return () => void this.listeners.delete(fn)
  }

  get = () => this.state

  private set(patch: Partial<ConsoleState>) {
    this.state = { ...this.state, ...patch }
    this.listeners.forEach((fn) => fn())
  }

  private get stopped() {
    return this.abort.signal.aborted
  }

  start() {
    this.abort = new AbortController()
    const gen = ++this.gen
    void this.reload()
    void this.follow(gen)
    this.tabsTimer = setInterval(() => void this.loadTabs(), TABS_EVERY_MS)
  }

  stop() {
    this.gen++
    this.abort.abort()
    clearTimeout(this.reloadTimer)
    clearInterval(this.tabsTimer)
  }

  /** Reloads users, their details and roles (after a change, or a console action). */
  async reload() {
    if (this.stopped) return
    try {
      const [{ users }, { roles }] = await Promise.all([this.api.users(), this.api.roles()])
      const details = Object.fromEntries(
        (await Promise.all(users.map((u) => this.api.user(u.user).catch(() => null)))).filter((d): d is UserDetail => !!d).map((d) => [d.user, d]),
      )
      if (!this.stopped) this.set({ users, roles, details })
    } catch {
      // Shown as stale data; the next change or action reloads.
    }
  }

  private scheduleReload() {
    clearTimeout(this.reloadTimer)
    this.reloadTimer = setTimeout(() => void this.reload(), 60)
  }

  private async loadTabs() {
    if (this.stopped || !this.state.users.length) return
    const lists = await Promise.all(this.state.users.map((u) => this.api.tabs(u.user).catch(() => null)))
    if (this.stopped) return
    const tabs: Record<string, UserTabs> = {}
    for (const l of lists) if (l) tabs[l.user] = l
    this.set({ tabs })
    this.freezeDeliveries()
  }

  private receive(changes: ChangeRecord[]) {
    if (!changes.length) return
    this.after = Math.max(this.after, ...changes.map((c) => c.seq))
    const merged = [...changes.filter((c) => !this.state.changes.some((o) => o.seq == c.seq)).reverse(), ...this.state.changes]
    this.set({ changes: merged.slice(0, KEEP), newest: this.after })
    this.scheduleReload()
  }

  private async follow(gen: number) {
    let failures = 0
    const signal = this.abort.signal
    while (gen == this.gen) {
      try {
        const res = await this.client.fetch(`/v1/changes/stream?after=${this.after}`, {
          headers: { Accept: 'text/event-stream' },
          signal,
        })
        if (res.ok && res.body) {
          failures = 0
          this.set({ feed: 'live' })
          const reader = res.body.getReader()
          const decoder = new TextDecoder()
          let batch: ChangeRecord[] = []
          const feed = sseParser((e) => {
            if (e.type == 'change') batch.push(JSON.parse(e.data) as ChangeRecord)
          })
          for (;;) {
            const { done, value } = await reader.read()
            if (done) break
            feed(decoder.decode(value, { stream: true }))
            this.receive(batch)
            batch = []
          }
        } else {
          await res.body?.cancel()
          failures++
        }
      } catch {
        if (gen != this.gen) return
        failures++
      }
      // The stream ended (token expired, server restart) or is unavailable: catch up
      // by polling, then stream again from where the log is.
      this.set({ feed: failures ? 'polling' : 'connecting' })
      await this.poll()
      await new Promise((r) => setTimeout(r, failures ? Math.min(5000, 500 * failures) : 200))
    }
  }

  private async poll() {
    try {
      for (;;) {
        const page = await this.api.changes(this.after)
        this.receive(page.changes)
        if (page.changes.length < 1000) return
      }
    } catch {
      // Tried again on the next round.
    }
  }

  /** The users a change touched: its user, or the members of its role. */
  affected(change: ChangeRecord): string[] {
    if (change.user) return [change.user]
    if (change.role) return Object.values(this.state.details).filter((d) => d.bindings.some((b) => b.role == change.role)).map((d) => d.user)
    if (Array.isArray(change.detail?.users)) return change.detail.users as string[]
    return []
  }

  delivery(change: ChangeRecord): Delivery | null {
    return this.state.delivered[change.seq] ?? this.computeDelivery(change)
  }

  /**
   * "applied in 2 tabs after 37 ms": among the affected users' tabs that were open
   * when the change was committed, those whose reports show a revision at or
   * above the change's seq, and the slowest one's delay from the commit.
   */
  private computeDelivery(change: ChangeRecord): Delivery | null {
    const users = this.affected(change)
    if (!users.length || change.action == 'user_created') return null
    const at = Date.parse(change.at)
    let open = 0
    let applied = 0
    let slowest = -1
    for (const user of users) {
      for (const tab of this.state.tabs[user]?.tabs ?? []) {
        if (Date.parse(tab.opened_at) > at) continue
        open++
        const first = tab.applied.find((a) => a.revision >= change.seq)
        if (first) {
          applied++
          slowest = Math.max(slowest, Date.parse(first.applied_at) - at)
        } else if (tab.revision >= change.seq) applied++
      }
    }
    // Changes from before the console opened, when no tab was open: nothing to say.
    if (!open) return at >= this.openedAt ? { kind: 'none', text: 'no open tabs' } : null
    const tabs = (n: number) => `${n} tab${n == 1 ? '' : 's'}`
    if (applied < open) return { kind: 'pending', text: `applied in ${applied} of ${tabs(open)}` }
    return { kind: 'done', text: `applied in ${tabs(applied)}` + (slowest >= 0 ? ` after ${Math.max(0, slowest)} ms` : '') }
  }

  private freezeDeliveries() {
    let delivered: Record<number, Delivery> | null = null
    for (const change of this.state.changes.slice(0, 50)) {
      if (this.state.delivered[change.seq]) continue
      const d = this.computeDelivery(change)
      if (d?.kind == 'done') (delivered ??= { ...this.state.delivered })[change.seq] = d
    }
    if (delivered) this.set({ delivered })
  }
}
