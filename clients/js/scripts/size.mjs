// Minified + gzipped size of the core entry, as an app bundler would ship it.
import { build } from 'esbuild'
import { gzipSync } from 'node:zlib'

const LIMIT = 5 * 1024
const out = await build({ entryPoints: ['src/index.ts'], bundle: true, minify: true, format: 'esm', target: 'es2020', write: false })
const code = out.outputFiles[0].contents
const gz = gzipSync(code, { level: 9 }).length
console.log(`core: ${code.length} B min, ${gz} B min+gz (${(gz / 1024).toFixed(2)} KiB; limit ${LIMIT / 1024} KiB)`)
const only = await build({
  stdin: { contents: "export { createPermissions } from './src/index.ts'", resolveDir: '.', loader: 'ts' },
  bundle: true, minify: true, format: 'esm', target: 'es2020', write: false,
})
console.log(`createPermissions alone: ${gzipSync(only.outputFiles[0].contents, { level: 9 }).length} B min+gz`)
if (gz > LIMIT) process.exit(1)
