/**
 * Who may import whom in src/ (ARCHITECTURE.md, "Who may import whom"), checked by
 * `npm run deps` in .ci/run. A broken rule fails the build with the rule's name.
 *
 *   entry     src/app.ts, src/cli/, src/server.ts, src/connect.ts, src/config.ts, src/entities.ts
 *             (the composition root and what sits beside it): may import anything in src/.
 *   domains   src/tenants, licensing, activation, usage, audit, webhooks, provisioning: import platform/,
 *             events/, generated code, and other domains only through the arrows listed below.
 *   events/   the event log: imports only platform/.
 *   platform/ imports no domain, no events/, no entry.
 *   clients/  @licensd/client (clients/ts) is what product code installs: the server never imports
 *             it; the CLI, a client of the API itself, may.
 *
 * Type-only imports count (tsPreCompilationDeps).
 */
const DOMAINS = "(tenants|licensing|activation|usage|audit|webhooks|provisioning)";
const ENTRY = "^src/(app|server|connect|config|entities)\\.ts$|^src/cli/|^src/migrations/";

module.exports = {
  forbidden: [
    {
      name: "platform-knows-no-domain",
      comment: "platform/ is the floor every room stands on: it imports no domain, no events/, no entry file.",
      severity: "error",
      from: { path: "^src/platform/" },
      to: { path: [`^src/${DOMAINS}/`, "^src/events/", ENTRY] },
    },
    {
      name: "events-imports-only-platform",
      comment:
        "events/ (emit, the Merkle tree, the feed, the read API) serves every domain: it imports only platform/.",
      severity: "error",
      from: { path: "^src/events/" },
      to: { path: "^src/", pathNot: ["^src/events/", "^src/platform/", "^src/types/"] },
    },
    {
      name: "domain-imports-no-entry",
      comment:
        "Domains are wired by the composition root; they never import app.ts, cli/, server.ts, connect.ts, " +
        "config.ts, entities.ts or the migrations.",
      severity: "error",
      from: { path: `^src/${DOMAINS}/` },
      to: { path: ENTRY },
    },
    {
      name: "domain-imports-no-other-domain",
      comment:
        "A domain asks another through a port it owns (an interface app.ts fills with the other domain's " +
        "implementation, e.g. licensing/license-machines.ts). Licensing imports no other domain at all. " +
        "Known arrows, allowed until a later issue removes them: activation and usage use licensing's modules " +
        "listed in only-listed-licensing-modules (licensing is upstream of both).",
      severity: "error",
      from: { path: `^src/${DOMAINS}/` },
      to: { path: `^src/${DOMAINS}/`, pathNot: ["^src/$1/", "^src/licensing/"] },
    },
    {
      name: "only-activation-and-usage-import-licensing",
      comment: "Tenants, audit and webhooks import no domain, licensing included.",
      severity: "error",
      from: { path: "^src/(tenants|audit|webhooks)/" },
      to: { path: "^src/licensing/" },
    },
    {
      name: "only-listed-licensing-modules",
      comment:
        "activation/ and usage/ reach licensing/ only through these modules: license-key, license-file(-verify), " +
        "lease-verify, licensing.entity, catalog.service, license.service, entitlements and the port license-machines.",
      severity: "error",
      from: { path: "^src/(activation|usage)/" },
      to: {
        path: "^src/licensing/",
        pathNot: [
          "^src/licensing/(license-key|license-file|license-file-verify|lease-verify|entitlements|license-machines)\\.ts$",
          "^src/licensing/(licensing\\.entity|catalog\\.service|license\\.service)\\.ts$",
        ],
      },
    },
    {
      name: "server-imports-no-client",
      comment:
        "@licensd/client (clients/ts) is what product code installs, and it imports nothing of src/; the server " +
        "does not import it either (it owns the formats it signs: licensing/lease-verify.ts, …). Only the CLI, " +
        "itself a client of the API, may.",
      severity: "error",
      from: { path: "^src/", pathNot: "^src/cli/" },
      to: { path: ["^clients/", "^node_modules/@licensd/client/"] },
    },
    {
      name: "src-imports-no-tests",
      comment: "Nothing in src/ imports test/, bench/ or scripts/.",
      severity: "error",
      from: { path: "^src/" },
      to: { path: "^(test|bench|scripts)/" },
    },
    {
      name: "no-circular",
      comment: "No import cycles in src/.",
      severity: "error",
      from: { path: "^src/" },
      to: { circular: true },
    },
    {
      name: "not-to-unresolvable",
      comment: "Every import resolves (a moved file whose importers were not updated).",
      severity: "error",
      from: { path: "^src/" },
      to: { couldNotResolve: true },
    },
  ],
  options: {
    doNotFollow: { path: ["node_modules", "^gen/"] },
    // @licensd/client stays in view when installed from a tarball too, for server-imports-no-client.
    exclude: { path: ["^dist/", "^node_modules/(?!@licensd/client/)"] },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: "tsconfig.json" },
    enhancedResolveOptions: {
      exportsFields: ["exports"],
      // licensd-source: @licensd/client (clients/ts) resolves to its sources, as in tsconfig.json.
      conditionNames: ["licensd-source", "import", "require", "node", "default"],
      extensions: [".ts", ".js", ".json", ".d.ts"],
    },
    reporterOptions: { text: { highlightFocused: true } },
  },
};
