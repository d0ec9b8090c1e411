// Copies the generated TypeScript stubs the client needs (licensd's six services and the
// google.rpc error details) from the repository's gen/ts into this package's gen/, which
// is not committed: gen/ts stays the one generated copy, checked fresh in CI.
import { cpSync, existsSync, rmSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const pkg = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const from = path.resolve(pkg, "../../gen/ts");
const to = path.join(pkg, "gen");
if (!existsSync(from)) {
  // Packed from a tarball (no repository around it): gen/ was copied when it was packed.
  if (existsSync(to)) process.exit(0);
  console.error(`copy-gen: ${from} not found`);
  process.exit(1);
}
rmSync(to, { recursive: true, force: true });
for (const dir of ["licensd", "google"]) cpSync(path.join(from, dir), path.join(to, dir), { recursive: true });
