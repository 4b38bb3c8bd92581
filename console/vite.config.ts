import { defineConfig } from 'vite';

// `npm run dev` serves the page with hot reload and forwards /api and /healthz to a running token
// service (`livenexus-console`, default 127.0.0.1:8080; override with LIVENEXUS_CONSOLE_API).
const api = process.env.LIVENEXUS_CONSOLE_API ?? 'http://127.0.0.1:8080';

export default defineConfig({
  base: '/',
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    target: 'es2022',
    sourcemap: true,
    // livekit-client is most of the bundle; one chunk keeps the page to two requests.
    chunkSizeWarningLimit: 1024,
  },
  server: {
    host: '127.0.0.1',
    proxy: { '/api': api, '/healthz': api },
  },
});
