import { randomBytes } from "node:crypto";
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";

/** What development mode generates once and keeps in `<data dir>/secrets.json`. */
export interface DevSecrets {
  superAdminKey: string;
  dataKey: string;
  embeddedDbPassword: string;
}

/** The development secrets file: created once with mode 0600, then reused. */
export function loadDevSecrets(dataDir: string): DevSecrets {
  return openDevSecrets(dataDir).secrets;
}

/** The development secrets, and whether this call created the file. */
export function openDevSecrets(dataDir: string): { secrets: DevSecrets; created: boolean } {
  const file = path.join(dataDir, "secrets.json");
  if (existsSync(file)) return { secrets: JSON.parse(readFileSync(file, "utf8")) as DevSecrets, created: false };
  mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  const secrets: DevSecrets = {
    superAdminKey: randomBytes(32).toString("base64url"),
    dataKey: randomBytes(32).toString("base64"),
    embeddedDbPassword: randomBytes(24).toString("base64url"),
  };
  try {
    // Exclusive: of two processes starting at once, one writes and both use what it wrote.
    writeFileSync(file, JSON.stringify(secrets, null, 2), { mode: 0o600, flag: "wx" });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
    return { secrets: JSON.parse(readFileSync(file, "utf8")) as DevSecrets, created: false };
  }
  chmodSync(file, 0o600);
  return { secrets, created: true };
}
