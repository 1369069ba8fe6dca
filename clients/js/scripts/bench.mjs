// `npm run bench`: runs scripts/bench.ts, bundled with esbuild (a dev dependency
// already) so plain Node runs it; dependencies stay in node_modules.
import { build } from 'esbuild'
import { fileURLToPath } from 'node:url'

const root = fileURLToPath(new URL('..', import.meta.url))
const outfile = root + 'node_modules/.cache/permsync-bench/bench.mjs'
await build({
  entryPoints: [root + 'scripts/bench.ts'],
  bundle: true,
  platform: 'node',
  format: 'esm',
  target: 'node20',
  packages: 'external',
  outfile,
  logLevel: 'warning',
})
await import(outfile)
