import { hkdfSync } from "node:crypto";
import { type DataKeyring, seal } from "./crypto.js";
import { type Database, sql } from "./db.js";

/**
 * Keys licensd derived from the data key before it could rotate, and still uses: they sign or look up what outlives a
 * data key (license keys' HMAC, the audit log's HMACs, page tokens a client holds). Each is made once, from the data
 * key of the first start that finds it missing, by the HKDF it always had (so an install keeps its values), and kept
 * in `data_key_material` sealed under the data key: a rotation re-seals them and they stay the same.
 */
export interface DataKeyMaterial {
  /** The audit HMAC key of kid `dk1`: HKDF-SHA256(data key, "", "licensd audit hmac v1"). */
  auditHmacDk1: Buffer;
  /** License-key HMAC version 0 without LICENSD_HMAC_KEYS (hex text): HKDF(…, "licensd license key hmac v0"). */
  licenseKeyHmacV0: string;
  /** The page tokens' HMAC key: HKDF(…, "licensd page token v1"). */
  pageTokenKey: Buffer;
}

/** The rows of data_key_material: name → the HKDF info the first value is derived with. */
const DERIVATIONS = {
  "audit-hmac-dk1": "licensd audit hmac v1",
  "license-key-hmac-v0": "licensd license key hmac v0",
  "page-tokens-v1": "licensd page token v1",
} as const;
type MaterialName = keyof typeof DERIVATIONS;

/** The associated data a material row is sealed with: its name, so rows cannot be swapped. */
export const materialAad = (name: string) => JSON.stringify(["licensd data key material v1", name]);

const derive = (dataKey: Buffer, info: string) => Buffer.from(hkdfSync("sha256", dataKey, Buffer.alloc(0), info, 32));

/** The material as the data key derives it: what a first start stores, and every install had before it was stored. */
export function deriveDataKeyMaterial(dataKey: Buffer): DataKeyMaterial {
  return materialOf((name) => derive(dataKey, DERIVATIONS[name]));
}

function materialOf(get: (name: MaterialName) => Buffer): DataKeyMaterial {
  return {
    auditHmacDk1: get("audit-hmac-dk1"),
    licenseKeyHmacV0: get("license-key-hmac-v0").toString("hex"),
    pageTokenKey: get("page-tokens-v1"),
  };
}

/** A start whose data keys do not fit the database: the message says which setting to fix. */
export class DataKeyError extends Error {
  override name = "DataKeyError";
}

/**
 * Reads the material, creating what is missing from the current data key first. Instances starting together insert
 * the same rows with `on conflict do nothing` and then all read the rows that won, so they agree. A database that
 * already holds sealed values (an install from before the material was stored) gets its material only from a key
 * that opens them: a first start with a wrong key must not store keys derived from it.
 */
export async function loadDataKeyMaterial(db: Database, keys: DataKeyring): Promise<DataKeyMaterial> {
  const names = Object.keys(DERIVATIONS) as MaterialName[];
  const read = () =>
    sql<{ name: MaterialName; sealed: Buffer }>(db, "select name, sealed from data_key_material where name = any($1)", [
      names,
    ]);
  let rows = await read();
  if (rows.length < names.length) {
    const [signingKey] = await sql<{ kid: string; private_key_sealed: Buffer }>(
      db,
      "select kid, private_key_sealed from signing_keys order by created_at, kid limit 1",
    );
    if (signingKey && !keys.unseal(signingKey.private_key_sealed, signingKey.kid))
      throw wrongKeys(keys, `signing key ${signingKey.kid}`);
    const values = names.map((_, i) => `($${2 * i + 1}, $${2 * i + 2}, now())`).join(", ");
    await sql(
      db,
      `insert into data_key_material (name, sealed, created_at) values ${values} on conflict (name) do nothing`,
      names.flatMap((name) => [name, seal(keys, derive(keys.current, DERIVATIONS[name]), materialAad(name))]),
    );
    rows = await read();
  }
  const opened = new Map<MaterialName, Buffer>();
  for (const row of rows) {
    const value = keys.unseal(row.sealed, materialAad(row.name));
    if (!value) throw wrongKeys(keys, `the data-key material "${row.name}"`);
    opened.set(row.name, value.plaintext);
  }
  return materialOf((name) => opened.get(name)!);
}

function wrongKeys(keys: DataKeyring, what: string): DataKeyError {
  const [current, ...previous] = keys.fingerprints();
  return new DataKeyError(
    `no configured data key opens ${what} stored in this database: it was sealed under another key than ` +
      `LICENSD_DATA_KEY (fingerprint ${current})` +
      (previous.length > 0
        ? ` and LICENSD_DATA_KEY_PREVIOUS (fingerprints ${previous.join(", ")})`
        : " (LICENSD_DATA_KEY_PREVIOUS is unset)") +
      ". Start with the data key this database was sealed under; during a rotation, give the old one in " +
      "LICENSD_DATA_KEY_PREVIOUS (docs/operations.md, Data-key rotation)",
  );
}
