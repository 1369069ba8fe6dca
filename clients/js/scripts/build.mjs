// Bundles each entry to one ESM file; the React entry imports the core from
// './index.js' so an app that uses both gets a single client implementation.
import { build } from 'esbuild'
import { execFileSync } from 'node:child_process'
import { rmSync } from 'node:fs'

rmSync('dist', { recursive: true, force: true })

const shared = { bundle: true, format: 'esm', target: 'es2020', platform: 'neutral', sourcemap: true, logLevel: 'warning' }

await build({ ...shared, entryPoints: ['src/index.ts'], outfile: 'dist/index.js' })

const coreExternal = {
  name: 'core-external',
  setup(b) {
    b.onResolve({ filter: /^\.\/index(\.js)?$/ }, () => ({ path: './index.js', external: true }))
  },
}
await build({
  ...shared,
  entryPoints: ['src/react.tsx'],
  outfile: 'dist/react.js',
  jsx: 'automatic',
  external: ['react', 'react/jsx-runtime'],
  plugins: [coreExternal],
})

execFileSync(process.execPath, ['node_modules/typescript/bin/tsc', '-p', 'tsconfig.build.json'], { stdio: 'inherit' })
