// `npm run test:browser`: the built SDK in Debian's Chromium against the real permsync binary.
import { fileURLToPath } from 'node:url'
import { defineConfig } from 'vitest/config'

export default defineConfig({
  root: fileURLToPath(new URL('../..', import.meta.url)),
  test: {
    include: ['test/browser/**/*.browser.ts'],
    environment: 'node',
    pool: 'forks',
    poolOptions: { forks: { maxForks: 1, minForks: 1 } },
    testTimeout: 60000,
    hookTimeout: 60000,
    teardownTimeout: 15000,
  },
})
