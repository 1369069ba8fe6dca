// Fails when dist/ (committed, and embedded in the permsync binary) is not what the
// sources build to now: builds into a temporary folder and compares every file.
// Fix with `npm run build` and commit web/dist.
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, relative } from 'node:path'
import { fileURLToPath } from 'node:url'
import { build } from 'vite'

const root = fileURLToPath(new URL('..', import.meta.url))
const committed = join(root, 'dist')
const fresh = mkdtempSync(join(tmpdir(), 'permsync-web-dist-'))

const files = (dir) =>
  readdirSync(dir, { recursive: true, withFileTypes: true })
    .filter((e) => e.isFile())
    .map((e) => relative(dir, join(e.parentPath ?? e.path, e.name)))
    .sort()

try {
  await build({ root, logLevel: 'warn', build: { outDir: fresh, emptyOutDir: true } })
  const want = files(fresh)
  let have = []
  try {
    have = files(committed)
  } catch {
    // No dist/ at all: every file is missing.
  }
  const problems = [
    ...want.filter((f) => !have.includes(f)).map((f) => `missing: dist/${f}`),
    ...have.filter((f) => !want.includes(f)).map((f) => `left over: dist/${f}`),
    ...want.filter((f) => have.includes(f) && !readFileSync(join(fresh, f)).equals(readFileSync(join(committed, f)))).map((f) => `differs: dist/${f}`),
  ]
  if (problems.length) {
    console.error(`web/dist is out of date with the sources:\n  ${problems.join('\n  ')}\nRun \`npm run build\` in web/ and commit web/dist.`)
    process.exitCode = 1
  } else {
    console.log(`web/dist is up to date (${want.length} files)`)
  }
} finally {
  rmSync(fresh, { recursive: true, force: true })
}
