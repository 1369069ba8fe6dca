// Two single-page apps in one build: the shop (index.html, served at /) and the
// admin console (admin/index.html, served at /admin). The SDK is used from its
// sources, so the demo always runs the SDK of this checkout. `npm run build`
// writes dist/, which is committed and embedded in the permsync binary
// (crates/cli/src/web.rs); `npm run check:dist` fails when it is out of date.
import { fileURLToPath } from 'node:url'
import { defineConfig, type Plugin } from 'vite'

const here = (path: string) => fileURLToPath(new URL(path, import.meta.url))

/** `npm run dev`: routes under /admin/ are the console's (the binary does the same, web.rs). */
const adminFallback: Plugin = {
  name: 'admin-fallback',
  configureServer(server) {
    server.middlewares.use((req, _res, next) => {
      const path = (req.url ?? '').split('?')[0] ?? ''
      if (/^\/admin(\/[^.]*)?$/.test(path)) req.url = '/admin/index.html'
      next()
    })
  },
}

export default defineConfig({
  plugins: [adminFallback],
  resolve: {
    alias: [
      { find: /^@permsync\/client\/react$/, replacement: here('../clients/js/src/react.tsx') },
      { find: /^@permsync\/client$/, replacement: here('../clients/js/src/index.ts') },
    ],
    // The SDK's React adapter lives outside this package: make it use our React.
    dedupe: ['react', 'react-dom'],
  },
  esbuild: { jsx: 'automatic' },
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    target: 'es2022',
    sourcemap: false,
    modulePreload: { polyfill: false },
    rollupOptions: {
      input: { shop: here('index.html'), admin: here('admin/index.html') },
      output: {
        // React in one chunk, the SDK and the shared pieces in another.
        manualChunks: (id) => (id.includes('/node_modules/') ? 'react' : id.includes('/clients/js/src/') || id.includes('/src/shared/') ? 'shared' : undefined),
      },
    },
  },
  server: {
    // `npm run dev` against a local `permsync serve --demo`.
    proxy: { '/v1': 'http://127.0.0.1:7080', '/demo/api': 'http://127.0.0.1:7080' },
  },
})
