import { defaultClientConditions, defineConfig } from "vite";

// Hashed file names under /console/assets/ (served immutable); index.html is the only
// unhashed file (served uncached). No inline script or style is emitted: the console runs
// under a strict Content-Security-Policy (src/platform/console.ts).
export default defineConfig({
  root: import.meta.dirname,
  base: "/console/",
  build: {
    outDir: "dist",
    emptyOutDir: true,
    assetsDir: "assets",
    target: "es2022",
    modulePreload: { polyfill: false },
    assetsInlineLimit: 0,
  },
  // The client package's TypeScript sources (the repository builds it too, but need not first).
  resolve: { conditions: ["licensd-source", ...defaultClientConditions] },
  oxc: { jsx: { runtime: "automatic", importSource: "preact" } },
});
