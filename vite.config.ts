import { gzipSync } from 'node:zlib';
import { defineConfig, type Plugin } from 'vite';

// The storefront (web/) builds into public/, which the service and nginx serve. Asset names carry
// a hex content hash (`index.1a2b3c4d.js`) so the static-file policy marks them immutable
// (src/infra/static-files.ts); index.html stays `no-cache`.

/** The storefront's first load may carry at most this much gzip JavaScript (issue 15). */
export const jsBudgetBytes = 60 * 1024;

function bundleBudget(): Plugin {
  return {
    name: 'shipshape-bundle-budget',
    apply: 'build',
    generateBundle(_options, bundle) {
      let total = 0;
      for (const file of Object.values(bundle)) {
        if (file.type === 'chunk') total += gzipSync(file.code).length;
      }
      const line = `storefront JavaScript: ${(total / 1024).toFixed(1)} KB gzip (budget ${jsBudgetBytes / 1024} KB)`;
      if (total > jsBudgetBytes) this.error(`${line}: over budget`);
      process.stderr.write(`${line}\n`);
    },
  };
}

export default defineConfig({
  root: 'web',
  publicDir: false,
  logLevel: 'warn',
  plugins: [bundleBudget()],
  build: {
    outDir: '../public',
    emptyOutDir: true,
    target: 'es2022',
    modulePreload: { polyfill: false },
    rollupOptions: {
      output: {
        entryFileNames: 'assets/[name].[hash].js',
        chunkFileNames: 'assets/[name].[hash].js',
        assetFileNames: 'assets/[name].[hash][extname]',
        hashCharacters: 'hex',
      },
    },
  },
});
