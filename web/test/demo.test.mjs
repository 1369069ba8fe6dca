// The demo scenario, end to end: a real `permsync serve --demo` (temporary database,
// port 0, 10-second access tokens) and Debian's Chromium driven by playwright-core,
// with one browser context for the admin and one for alice (two tabs). Every step
// is asserted on the DOM and leaves a screenshot in target/demo/; the time from the
// admin's click to the change in alice's page is measured and printed.
//
// Environment: PERMSYNC_BIN (default: cargo build, then target/debug/permsync),
// CHROMIUM (default /usr/bin/chromium).

import { after, before, test } from 'node:test'
import assert from 'node:assert/strict'
import { execFileSync, spawn } from 'node:child_process'
import { mkdirSync, mkdtempSync, rmSync, writeFileSync, createWriteStream } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { chromium } from 'playwright-core'

const ROOT = fileURLToPath(new URL('../..', import.meta.url))
const SHOTS = join(ROOT, 'target', 'demo')
const CHROMIUM_ARGS = [
  '--no-sandbox',
  '--headless',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
]
/** A change must reach alice's page within this (the brief's "within a second"). */
const LIVE_MS = 1000

let server
let base
let browser
let dir
const timings = []
/** Console errors, page errors and failed API responses, per page name. */
const problems = []

function startServer() {
  const bin = process.env.PERMSYNC_BIN ?? join(ROOT, 'target', 'debug', 'permsync')
  if (!process.env.PERMSYNC_BIN) execFileSync('cargo', ['build', '--quiet', '-p', 'permsync'], { cwd: ROOT, stdio: 'inherit' })
  dir = mkdtempSync(join(tmpdir(), 'permsync-demo-'))
  const db = `sqlite://${join(dir, 'demo.db')}`
  const env = { ...process.env, RUST_LOG: 'info,sqlx=warn' }
  for (const name of Object.keys(env)) if (name.startsWith('PERMSYNC_')) delete env[name]
  const child = spawn(bin, ['serve', '--demo', '--addr', '127.0.0.1:0', '--db', db, '--access-token-ttl', '10'], {
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  child.stderr.pipe(createWriteStream(join(SHOTS, 'server.log')))
  return new Promise((resolve, reject) => {
    let out = ''
    const timer = setTimeout(() => reject(new Error('the server did not start within 60 s:\n' + out)), 60000)
    child.on('exit', (code) => {
      clearTimeout(timer)
      reject(new Error(`the server exited (${code}):\n${out}`))
    })
    child.stdout.on('data', (chunk) => {
      out += chunk
      const m = out.match(/permsync listening on (http:\/\/\S+)/)
      if (m) {
        clearTimeout(timer)
        resolve({ child, url: m[1] })
      }
    })
  })
}

function watch(page, name) {
  page.on('console', (m) => m.type() == 'error' && problems.push(`${name}: console error: ${m.text()}`))
  page.on('pageerror', (e) => problems.push(`${name}: page error: ${e.message}`))
  page.on('response', (r) => {
    // Every API answer in the scenario is a success: no 401 (tokens are renewed
    // before they expire), no 403 (the UI never offers what is not allowed).
    if (r.status() >= 400) problems.push(`${name}: ${r.status()} from ${r.request().method()} ${new URL(r.url()).pathname}`)
  })
  return page
}

async function login(page, user) {
  await page.fill('input[name=username]', user)
  await page.fill('input[name=password]', `${user}-password`)
  await page.click('button[type=submit]')
}

const shot = (page, name) => page.screenshot({ path: join(SHOTS, name + '.png') })

/** Resolves, in the page, with Date.now() when `selector` reaches `state`. */
async function observe(page, selector, state) {
  await page.evaluate(
    ({ selector, state }) => {
      const reached = () => {
        const el = document.querySelector(selector)
        if (state == 'present') return !!el
        if (state == 'absent') return !el
        return !!el && (state == 'enabled' ? !el.disabled : el.disabled)
      }
      if (reached()) throw new Error(`${selector} is ${state} already`)
      window.__reached = new Promise((resolve) => {
        const observer = new MutationObserver(() => {
          if (!reached()) return
          observer.disconnect()
          resolve(Date.now())
        })
        observer.observe(document.documentElement, { subtree: true, childList: true, attributes: true })
      })
    },
    { selector, state },
  )
}

/**
 * Clicks `button` in one page (the admin's) and measures the time from the click
 * event to `selector` reaching `state` in another (alice's); both clocks are this
 * machine's.
 */
async function clickAndMeasure(what, clickPage, button, watchPage, selector, state) {
  await observe(watchPage, selector, state)
  await clickPage.locator(button).evaluate((el) => el.addEventListener('click', () => (window.__clickedAt = Date.now()), { once: true, capture: true }))
  await clickPage.locator(button).click()
  const reached = await watchPage.evaluate(() => Promise.race([window.__reached, new Promise((r) => setTimeout(() => r(null), 5000))]))
  const clicked = await clickPage.evaluate(() => window.__clickedAt)
  assert.ok(reached, `${what}: ${selector} never became ${state}`)
  const ms = reached - clicked
  timings.push({ step: what, ms })
  console.log(`  click → DOM: ${what}: ${ms} ms`)
  return ms
}

const enabled = (page, testid) => page.locator(`[data-testid="${testid}"]`).isEnabled()

async function grant(admin, permission, scope, expirySeconds = 0) {
  await admin.fill('[data-testid=grant-permission]', permission)
  await admin.fill('[data-testid=grant-scope]', scope)
  await admin.selectOption('[data-testid=grant-expiry]', String(expirySeconds))
}

const grantRow = (admin, permission, scope) => admin.locator(`[data-testid=grant-row][data-permission="${permission}"][data-scope="${scope}"]`)

let adminContext, aliceContext, admin, alice, alice2, aliceLoggedInAt

before(async () => {
  mkdirSync(SHOTS, { recursive: true })
  const started = await startServer()
  server = started.child
  base = started.url
  browser = await chromium.launch({ executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium', args: CHROMIUM_ARGS })
  adminContext = await browser.newContext({ viewport: { width: 1400, height: 900 } })
  aliceContext = await browser.newContext({ viewport: { width: 1200, height: 760 } })
})

after(async () => {
  await browser?.close()
  if (server && server.exitCode == null) {
    server.kill('SIGTERM')
    await new Promise((resolve) => {
      const t = setTimeout(() => (server.kill('SIGKILL'), resolve()), 8000)
      server.on('exit', () => (clearTimeout(t), resolve()))
    })
  }
  if (dir) rmSync(dir, { recursive: true, force: true })
  writeFileSync(join(SHOTS, 'timings.json'), JSON.stringify(timings, null, 2) + '\n')
  if (timings.length) {
    console.log('\nclick → DOM timings (a click in the admin console, or alice\'s own, to the change in alice\'s page):')
    for (const t of timings) console.log(`  ${String(t.ms).padStart(5)} ms  ${t.step}`)
  }
})

test('alice browses: buttons, menu and routes follow her permissions, scoped per project', { timeout: 60000 }, async () => {
  alice = watch(await aliceContext.newPage(), 'alice')
  await alice.goto(base + '/')
  await login(alice, 'alice')
  aliceLoggedInAt = Date.now()
  await alice.waitForSelector('[data-testid=status-footer][data-status=live]')
  const menu = await alice.locator('[data-testid=menu] a').allTextContents()
  assert.deepEqual(menu, ['Projects', 'Reports', 'Plans'])
  // Editor at project 7, viewer at the organization: editing only in project 7.
  assert.equal(await enabled(alice, 'edit-docs-7'), true)
  assert.equal(await enabled(alice, 'edit-docs-9'), false)
  assert.equal(await enabled(alice, 'new-invoice-card-7'), false)
  assert.equal(await enabled(alice, 'new-project'), false)
  await alice.click('[data-testid=open-project-7]')
  await alice.waitForSelector('[data-testid=project-title]')
  assert.equal(await alice.textContent('[data-testid=project-title]'), 'Website relaunch')
  assert.equal(await enabled(alice, 'doc-publish-7-0'), true, 'doc:* of the editor role')
  assert.equal(await enabled(alice, 'new-invoice-7'), false)
  // Her invoices route is refused outright.
  const direct = watch(await aliceContext.newPage(), 'alice (direct link)')
  await direct.goto(base + '/invoices')
  await direct.waitForSelector('[data-testid=denied]')
  await direct.close()
  await shot(alice, '01-alice-browses')

  // A second tab of alice's: it follows the first one's connection.
  alice2 = watch(await aliceContext.newPage(), 'alice tab 2')
  await alice2.goto(base + '/')
  await alice2.waitForSelector('[data-testid=status-footer][data-status=live]')
  assert.match(await alice2.textContent('[data-testid=status-footer]'), /following another tab/)

  admin = watch(await adminContext.newPage(), 'admin')
  await admin.goto(base + '/admin')
  await login(admin, 'admin')
  await admin.waitForSelector('[data-testid=detail-user]')
  assert.equal(await admin.textContent('[data-testid=detail-user]'), 'alice')
  await admin.waitForSelector('[data-testid=feed-status]:has-text("live")')
  // The console lists alice's two tabs, each at her current revision.
  await admin.waitForFunction(() => document.querySelectorAll('[data-testid=tab-row]').length == 2)
  await shot(admin, '01-admin-console')
})

test('the admin grants her invoice:create in project 7: her button enables within a second, in both tabs', { timeout: 60000 }, async () => {
  await grant(admin, 'invoice:create', 'org/acme/project/7')
  const ms = await clickAndMeasure('grant invoice:create → "New invoice" enables', admin, '[data-testid=grant-submit]', alice, '[data-testid="new-invoice-7"]', 'enabled')
  assert.ok(ms < LIVE_MS, `${ms} ms`)
  await alice2.waitForSelector('[data-testid="new-invoice-card-7"]:enabled', { timeout: LIVE_MS })
  assert.equal(await enabled(alice2, 'new-invoice-card-9'), false, 'project 9 is out of the grant’s scope')
  // The console reports the delivery: both tabs acknowledged the new revision.
  const delivery = admin.locator('[data-testid=audit-log] li[data-action=grant_added]').first().locator('[data-testid^=delivery-]')
  await delivery.filter({ hasText: /applied in 2 tabs after \d+ ms/ }).waitFor({ timeout: 5000 })
  console.log(`  console: ${await delivery.textContent()}`)
  await shot(alice, '02-alice-granted')
  await shot(admin, '02-admin-granted')
})

test('the admin edits a role alice holds: her menu changes', { timeout: 60000 }, async () => {
  await admin.click('[data-testid=menu-roles]')
  await admin.click('[data-testid=edit-role-viewer]')
  const textarea = admin.locator('[data-testid=role-permissions]')
  await textarea.fill((await textarea.inputValue()) + '\ninvoice:read')
  const ms = await clickAndMeasure('viewer role gets invoice:read → "Invoices" menu item', admin, '[data-testid=role-save]', alice, '[data-testid=menu-invoices]', 'present')
  assert.ok(ms < LIVE_MS, `${ms} ms`)
  assert.deepEqual(await alice.locator('[data-testid=menu] a').allTextContents(), ['Projects', 'Reports', 'Invoices', 'Plans'])
  await alice.click('[data-testid=menu-invoices]')
  await alice.waitForSelector('[data-testid=invoices]')
  assert.equal(await enabled(alice, 'approve-INV-1041'), false, 'reading is not approving')
  await shot(alice, '03-alice-menu-changed')
  await admin.click('[data-testid=user-alice]')
  await admin.waitForSelector('[data-testid=detail-user]')
})

test('the admin revokes invoice:create while alice drafts an invoice: she is told, moved, and keeps her draft', { timeout: 60000 }, async () => {
  await alice.click('[data-testid=menu-projects]')
  await alice.click('[data-testid=open-project-7]')
  await alice.click('[data-testid="new-invoice-7"]')
  await alice.waitForSelector('[data-testid=invoice-form]')
  await alice.fill('[data-testid=draft-customer]', 'Globex')
  await alice.fill('[data-testid=draft-amount]', '1200')
  await shot(alice, '04-alice-drafting')

  const revoke = '[data-testid=grant-row][data-permission="invoice:create"][data-scope="org/acme/project/7"] [data-testid=revoke-grant]'
  const ms = await clickAndMeasure('revoke invoice:create → moved off the draft, draft kept', admin, revoke, alice, '[data-testid=draft-kept]', 'present')
  assert.ok(ms < LIVE_MS, `${ms} ms`)
  assert.equal(new URL(alice.url()).pathname, '/projects/7')
  const notice = await alice.locator('[data-testid=notice]').last().textContent()
  assert.match(notice, /removed your permission to create invoices in Website relaunch/)
  assert.match(notice, /Your draft is kept/)
  assert.match(await alice.textContent('[data-testid=draft-kept]'), /Globex, 1200/)
  assert.equal(await enabled(alice, 'new-invoice-7'), false)
  await shot(alice, '04-alice-moved-draft-kept')
  await grantRow(admin, 'invoice:create', 'org/acme/project/7').waitFor({ state: 'detached' })

  // Granted again, she picks up where she left off and finishes the invoice.
  await grant(admin, 'invoice:create', 'org/acme/project/7')
  await clickAndMeasure('grant invoice:create again → "Continue draft invoice" enables', admin, '[data-testid=grant-submit]', alice, '[data-testid="new-invoice-7"]', 'enabled')
  assert.equal(await alice.textContent('[data-testid="new-invoice-7"]'), 'Continue draft invoice')
  await alice.click('[data-testid="new-invoice-7"]')
  assert.equal(await alice.inputValue('[data-testid=draft-customer]'), 'Globex')
  assert.equal(await alice.inputValue('[data-testid=draft-amount]'), '1200')
  await alice.fill('[data-testid=draft-note]', 'Half up front')
  await alice.click('[data-testid=draft-submit]')
  await alice.waitForSelector('[data-testid=notice]:has-text("Invoice INV-")')
  assert.equal(new URL(alice.url()).pathname, '/projects/7')
  assert.equal(await alice.locator('[data-testid=draft-kept]').count(), 0, 'the draft is gone once the invoice exists')
})

test('a grant with a 10-second expiry runs out live', { timeout: 60000 }, async () => {
  await alice.click('[data-testid=menu-reports]')
  await alice.waitForSelector('[data-testid=export-report]')
  await grant(admin, 'report:export', 'org/acme', 10)
  const ms = await clickAndMeasure('grant report:export for 10 s → "Export report" enables', admin, '[data-testid=grant-submit]', alice, '[data-testid=export-report]', 'enabled')
  assert.ok(ms < LIVE_MS, `${ms} ms`)
  const grantedAt = Date.now()
  await alice.waitForSelector('[data-testid=export-expiry]')
  assert.match(await alice.textContent('[data-testid=export-expiry]'), /access ends in \d+ s/)
  await shot(alice, '05-alice-export-for-10s')
  await alice.waitForSelector('[data-testid=export-report]:disabled', { timeout: 14000 })
  const lasted = Date.now() - grantedAt
  console.log(`  the grant lasted ${lasted} ms in alice's page (10 s expiry)`)
  assert.ok(lasted > 8000 && lasted < 12500, `${lasted} ms`)
  assert.equal(await alice.locator('[data-testid=export-expiry]').count(), 0)
  // The server committed the expiry too: the console's log shows it.
  await admin.locator('[data-testid=audit-log] li[data-action=grant_expired]').first().waitFor({ timeout: 5000 })
  await grantRow(admin, 'report:export', 'org/acme').waitFor({ state: 'detached', timeout: 5000 })
  await shot(alice, '05-alice-export-expired')
  await shot(admin, '05-admin-expired')
})

test('her 10-second access token expires and is renewed without her noticing', { timeout: 60000 }, async () => {
  // The access tokens live 10 s; by now alice's first one is long gone.
  const since = Date.now() - aliceLoggedInAt
  assert.ok(since > 11000, `${since} ms since login`)
  const footer = alice.locator('[data-testid=status-footer]')
  assert.ok(Number(await footer.getAttribute('data-renewals')) >= 1, 'renewed in the background')
  assert.equal(await footer.getAttribute('data-status'), 'live')
  assert.equal(await alice.locator('[data-testid=login-form]').count(), 0, 'never sent back to the login form')
  // Requests keep working: a change still arrives, over a stream opened with a renewed token.
  await grant(admin, 'doc:edit', 'org/acme/project/9')
  await alice.click('[data-testid=menu-projects]')
  await clickAndMeasure('grant doc:edit in project 9 (after token renewals) → "Edit documents" enables', admin, '[data-testid=grant-submit]', alice, '[data-testid="edit-docs-9"]', 'enabled')
  console.log(`  alice's tab renewed its token ${await footer.getAttribute('data-renewals')}× in ${Math.round(since / 1000)} s`)
  assert.ok(!problems.some((p) => / 401 /.test(p)), problems.join('\n'))
})

test('buying a plan updates the UI through the shop backend’s revision', { timeout: 60000 }, async () => {
  await alice.click('[data-testid=menu-plans]')
  await alice.waitForSelector('[data-testid=buy-pro]')
  const ms = await clickAndMeasure('alice buys Pro (her own click) → "You are on Pro"', alice, '[data-testid=buy-pro]', alice, '[data-testid=pro-active]', 'present')
  assert.ok(ms < LIVE_MS, `${ms} ms`)
  const result = await alice.textContent('[data-testid=buy-result]')
  assert.match(result, /The shop answered with revision \d+; this page held it \d+ ms later/)
  console.log(`  buy: ${result}`)
  assert.equal(await alice.locator('[data-testid=pro-badge]').count(), 1)
  await shot(alice, '06-alice-bought-pro')
  await alice.click('[data-testid=menu-projects]')
  assert.equal(await enabled(alice, 'new-project'), true)
  await alice.click('[data-testid=new-project]')
  await alice.waitForSelector('[data-testid=created-project]')
  await shot(alice, '06-alice-creates-project')
  // The shop's backend shows in the audit log as the actor of the binding.
  await admin.locator('[data-testid=audit-log] li[data-action=binding_added]', { hasText: 'by shop' }).first().waitFor({ timeout: 5000 })
  await shot(admin, '06-admin-audit')
})

test('every page of both apps loads with no console errors', { timeout: 90000 }, async () => {
  const pages = [
    [aliceContext, ['/', '/projects/7', '/projects/9', '/projects/7/invoices/new', '/reports', '/invoices', '/plans', '/no/such/page']],
    [adminContext, ['/admin', '/admin/users/alice', '/admin/users/bob', '/admin/roles']],
  ]
  for (const [context, paths] of pages) {
    for (const path of paths) {
      const before = problems.length
      const page = watch(await context.newPage(), path)
      const res = await page.goto(base + path)
      assert.equal(res.status(), 200, path)
      assert.equal(res.headers()['content-type'], 'text/html; charset=utf-8', path)
      await page.waitForSelector('[data-testid=status-footer][data-status=live]')
      await page.waitForTimeout(400)
      await page.close()
      assert.deepEqual(problems.slice(before), [], path)
    }
  }
})

test('tabs presenting one refresh token at the same moment all stay signed in', { timeout: 90000 }, async () => {
  // The demo's session code serializes renewals with a Web Lock; here the lock is
  // bypassed: each tab posts the same refresh token at the same instant, as tabs
  // without such a lock (or several browsers sharing a token) would.
  const TABS = 4
  const bobContext = await browser.newContext({ viewport: { width: 1000, height: 700 } })
  const tabs = [watch(await bobContext.newPage(), 'bob tab 1')]
  await tabs[0].goto(base + '/')
  await login(tabs[0], 'bob')
  await tabs[0].waitForSelector('[data-testid=status-footer][data-status=live]')
  for (let i = 2; i <= TABS; i++) {
    const tab = watch(await bobContext.newPage(), `bob tab ${i}`)
    await tab.goto(base + '/')
    await tab.waitForSelector('[data-testid=status-footer][data-status=live]')
    tabs.push(tab)
  }
  /** The shop's stored token pair, read in a tab (IndexedDB, as the session code keeps it). */
  const stored = (tab) =>
    tab.evaluate(
      () =>
        new Promise((resolve, reject) => {
          const req = indexedDB.open('permsync-demo', 1)
          req.onsuccess = () => {
            const get = req.result.transaction('kv').objectStore('kv').get('shop.session')
            get.onsuccess = () => resolve(get.result)
            get.onerror = () => reject(get.error)
          }
          req.onerror = () => reject(req.error)
        }),
    )
  const before = await stored(tabs[0])
  assert.equal(before.user, 'bob')

  // Every tab waits for the same instant, then refreshes and stores the answer,
  // as the session code does after a renewal.
  const at = Date.now() + 1500
  const answers = await Promise.all(
    tabs.map((tab) =>
      tab.evaluate(
        async ({ at, refresh }) => {
          while (Date.now() < at) await new Promise((r) => setTimeout(r, 1))
          const res = await fetch('/v1/auth/refresh', {
            method: 'POST',
            headers: { 'Content-Type': 'application/json' },
            body: JSON.stringify({ refresh_token: refresh }),
          })
          const body = await res.json()
          if (res.ok) {
            const next = { user: 'bob', access: body.access_token, refresh: body.refresh_token, expiresAt: Date.now() + body.expires_in * 1000, ttl: body.expires_in * 1000 }
            await new Promise((resolve, reject) => {
              const req = indexedDB.open('permsync-demo', 1)
              req.onsuccess = () => {
                const tx = req.result.transaction('kv', 'readwrite')
                tx.objectStore('kv').put(next, 'shop.session')
                tx.oncomplete = resolve
                tx.onerror = () => reject(tx.error)
              }
            })
          }
          return { status: res.status, cacheControl: res.headers.get('cache-control'), ...body }
        },
        { at, refresh: before.refresh },
      ),
    ),
  )
  for (const a of answers) {
    assert.equal(a.status, 200, JSON.stringify(a))
    assert.equal(a.cacheControl, 'no-store')
  }
  const successors = new Set(answers.map((a) => a.refresh_token))
  assert.equal(successors.size, 1, 'every tab got the same new refresh token')
  assert.notEqual(answers[0].refresh_token, before.refresh)

  // Every tab still works: its next authenticated request, with the token it got
  // and with the one it held before (the session was not revoked), is 200.
  for (const [i, tab] of tabs.entries()) {
    const statuses = await tab.evaluate(
      async (tokens) =>
        Promise.all(tokens.map((t) => fetch('/v1/me/permissions', { headers: { Authorization: `Bearer ${t}` } }).then((r) => r.status))),
      [answers[i].access_token, before.access],
    )
    assert.deepEqual(statuses, [200, 200], `tab ${i + 1}`)
  }
  // Past the grace window, the tabs' own code renews with the stored successor
  // (10-second access tokens: at least one renewal in 12 s) and every tab's
  // event stream stays live throughout.
  const allRenewals = async () => {
    let n = 0
    for (const tab of tabs) n += Number(await tab.locator('[data-testid=status-footer]').getAttribute('data-renewals'))
    return n
  }
  const renewalsBefore = await allRenewals()
  const deadline = Date.now() + 12000
  while (Date.now() < deadline) {
    for (const tab of tabs) assert.equal(await tab.locator('[data-testid=status-footer]').getAttribute('data-status'), 'live')
    await tabs[0].waitForTimeout(1000)
  }
  const renewals = await allRenewals()
  assert.ok(renewals > renewalsBefore, `renewed since the race (${renewals} renewals in all)`)
  const after = await stored(tabs[0])
  assert.notEqual(after.refresh, answers[0].refresh_token, 'the successor was rotated in turn')
  for (const tab of tabs) {
    assert.equal(await tab.locator('[data-testid=login-form]').count(), 0, 'never sent back to the login form')
    const status = await tab.evaluate((t) => fetch('/v1/me/permissions', { headers: { Authorization: `Bearer ${t}` } }).then((r) => r.status), after.access)
    assert.equal(status, 200)
  }
  await shot(tabs[0], '07-bob-tabs-raced')
  await bobContext.close()
})

test('the whole scenario produced no console errors, page errors or failed requests', () => {
  assert.deepEqual(problems, [])
})
