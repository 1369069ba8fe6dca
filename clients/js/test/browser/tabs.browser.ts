// Real Chromium, real Web Locks and BroadcastChannel, the real permsync server on
// another origin (CORS): two tabs of one user share one event stream, both re-render
// when an admin changes something, and the second tab takes over the stream when the
// first one closes.

import { mkdirSync } from 'node:fs'
import { join } from 'node:path'
import type { Browser, BrowserContext, Page } from 'playwright-core'
import { afterAll, beforeAll, expect, test } from 'vitest'
import { PermsyncServer, until } from '../contract/permsync.js'
import { launchChromium, screenshotDir, startPageServer, type PageServer } from './page.js'

let server: PermsyncServer
let pages: PageServer
let browser: Browser
let context: BrowserContext
let admin: string

beforeAll(async () => {
  pages = await startPageServer()
  server = await PermsyncServer.start({ corsOrigins: [pages.url] })
  admin = (await server.login('admin')).access_token
  browser = await launchChromium()
  mkdirSync(screenshotDir, { recursive: true })
})

afterAll(async () => {
  await context?.close().catch(() => {})
  await browser?.close().catch(() => {})
  await pages?.close()
  await server?.dispose()
})

const text = (page: Page, id: string) => page.locator('#' + id).textContent()

/** Waits until the element's text is `value` (the page is never reloaded for it). */
const shows = (page: Page, id: string, value: string, timeout = 10000) =>
  page.waitForFunction(([id, value]) => document.getElementById(id!)?.textContent == value, [id, value], { timeout })

async function grant(permission: string) {
  const res = await server.api(admin, 'POST', '/v1/users/alice/grants', { permission })
  expect(res.status, JSON.stringify(res.body)).toBe(201)
  return res.body as { grant: { id: number }; revision: number }
}

async function revoke(id: number) {
  const res = await server.api(admin, 'DELETE', `/v1/users/alice/grants/${id}`)
  expect(res.status, JSON.stringify(res.body)).toBe(200)
  return res.body as { revision: number }
}

test('two tabs: one stream for both, both re-render, the second takes over when the first closes', async () => {
  context = await browser.newContext({ viewport: { width: 640, height: 360 } })
  // Which tab asked the server for what, from the browser's own network events.
  const requests: { tab: Page; path: string }[] = []
  context.on('request', (req) => {
    const url = new URL(req.url())
    if (url.origin == server.url) requests.push({ tab: req.frame().page(), path: url.pathname })
  })
  const count = (tab: Page, path: string) => requests.filter((r) => r.tab == tab && r.path == path).length
  const navigations = new Map<Page, number>()
  const track = (tab: Page) => tab.on('framenavigated', (f) => f == tab.mainFrame() && navigations.set(tab, (navigations.get(tab) ?? 0) + 1))

  const first = await context.newPage()
  track(first)
  await first.goto(pages.page(server.url, 'alice'))
  await shows(first, 'role', 'leader')
  await shows(first, 'status', 'live')
  await shows(first, 'can', 'no')

  const second = await context.newPage()
  track(second)
  await second.goto(pages.page(server.url, 'alice'))
  await shows(second, 'role', 'follower')
  await shows(second, 'revision', (await text(first, 'revision'))!)
  await shows(second, 'status', 'live') // the leader's status, relayed
  await shows(second, 'can', 'no')

  // One stream for the browser: the server's gauge and the browser's requests agree.
  await until(async () => (await server.openStreams()).total == 1, 'exactly one open stream')
  expect(count(first, '/v1/me/events')).toBe(1)
  expect(count(second, '/v1/me/events')).toBe(0)
  // The follower got its snapshot from the leader, not from the server.
  expect(count(second, '/v1/me/permissions')).toBe(0)

  const granted = await grant('invoice:approve')
  await Promise.all([shows(first, 'can', 'yes'), shows(second, 'can', 'yes')])
  await shows(second, 'revision', String(granted.revision))
  expect(await second.locator('#approve').isEnabled()).toBe(true)
  await first.screenshot({ path: join(screenshotDir, 'tabs-1-leader-granted.png') })
  await second.screenshot({ path: join(screenshotDir, 'tabs-2-follower-granted.png') })

  const revoked = await revoke(granted.grant.id)
  await Promise.all([shows(first, 'can', 'no'), shows(second, 'can', 'no')])
  await shows(second, 'revision', String(revoked.revision))
  expect((await server.openStreams()).total).toBe(1)
  expect(count(first, '/v1/me/events')).toBe(1)
  expect(count(second, '/v1/me/events')).toBe(0)
  expect(count(second, '/v1/me/permissions')).toBe(0)
  // Re-rendered in place: each tab navigated once, when it was opened.
  expect([navigations.get(first), navigations.get(second)]).toEqual([1, 1])

  // The leader's tab closes: the browser hands the Web Lock to the other tab, which connects.
  await first.close()
  await shows(second, 'role', 'leader')
  await until(() => count(second, '/v1/me/events') == 1, 'the new leader to open a stream')
  await shows(second, 'status', 'live')
  // The closed tab's stream ends on the server; the new one is the only one.
  await until(async () => (await server.openStreams()).total == 1, 'one open stream after the takeover', 20000)

  const again = await grant('invoice:approve')
  await shows(second, 'can', 'yes')
  await shows(second, 'revision', String(again.revision))
  expect(navigations.get(second)).toBe(1)
  await second.screenshot({ path: join(screenshotDir, 'tabs-3-new-leader-granted.png') })
  await revoke(again.grant.id)
  await shows(second, 'can', 'no')
  expect(count(second, '/v1/me/events')).toBe(1)
})
