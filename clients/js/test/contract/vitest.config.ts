// `npm run test:contract`: the client against the real permsync binary.
import { fileURLToPath } from 'node:url'
import { defineConfig } from 'vitest/config'

export default defineConfig({
  root: fileURLToPath(new URL('../..', import.meta.url)),
  test: {
    include: ['test/contract/**/*.contract.ts'],
    environment: 'node',
    // Each file runs its own server; two at a time on two cores.
    pool: 'forks',
    poolOptions: { forks: { maxForks: 2, minForks: 1 } },
    testTimeout: 30000,
    hookTimeout: 30000,
    teardownTimeout: 10000,
  },
})
