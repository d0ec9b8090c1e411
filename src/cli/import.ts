import { createReadStream } from "node:fs";
import { createInterface } from "node:readline";
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { LicenseStatus } from "../../gen/ts/licensd/licensing/v1/license_pb.js";
import {
  ImportLicensesRequestSchema,
  LicensingService,
} from "../../gen/ts/licensd/licensing/v1/licensing_service_pb.js";

type Row = MessageInitShape<typeof ImportLicensesRequestSchema>;

/** Parses one line of the source file into a row; throws with a reason when it cannot. */
function parseLine(line: string, format: "datatools" | "vinzy", base: Row): Row {
  const r = JSON.parse(line) as Record<string, unknown>;
  const str = (...names: string[]) => {
    for (const n of names) if (typeof r[n] === "string") return r[n] as string;
    return "";
  };
  const time = (name: string) => {
    const v = str(name);
    if (!v) return undefined;
    const d = new Date(v);
    if (Number.isNaN(d.getTime())) throw new Error(`${name}: not a date: ${JSON.stringify(v)}`);
    return timestampFromDate(d);
  };
  if (format === "datatools") {
    // DataTools issuance log: {license_key, name, email, tier, issued_at, expires_at, blob}
    return {
      ...base,
      licenseKey: str("license_key"),
      customerName: str("name"),
      customerEmail: str("email"),
      tier: str("tier"),
      issuedAt: time("issued_at"),
      expireTime: time("expires_at"),
      metadata: { source: "datatools" },
    };
  }
  // Vinzy licenses: {key, customer_name|name, customer_email|email, organization, tier|policy, status, expires_at}
  const status = str("status").toLowerCase();
  return {
    ...base,
    licenseKey: str("key", "license_key"),
    customerName: str("customer_name", "name"),
    customerEmail: str("customer_email", "email"),
    customerOrganization: str("organization"),
    tier: str("tier", "policy"),
    issuedAt: time("created_at"),
    expireTime: time("expires_at"),
    status:
      status === "suspended"
        ? LicenseStatus.SUSPENDED
        : status === "revoked"
          ? LicenseStatus.REVOKED
          : LicenseStatus.ACTIVE,
    metadata: { source: "vinzy" },
  };
}

/**
 * `licensd import FILE`: streams the file's rows to ImportLicenses with a progress bar; returns whether every row was
 * imported.
 */
export async function importFile(opts: {
  file: string;
  format: "datatools" | "vinzy";
  product: string;
  tenant: string;
  url: string;
  key: string;
}): Promise<boolean> {
  const lines: string[] = [];
  for await (const line of createInterface({ input: createReadStream(opts.file), crlfDelay: Infinity }))
    if (line.trim() !== "") lines.push(line);
  const base: Row = { tenantId: opts.tenant, productId: opts.product };
  const local: { line: number; text: string }[] = [];
  const sentLine: number[] = [];
  const tty = process.stderr.isTTY;
  const bar = (done: number) => {
    const width = 30;
    const filled = Math.round((done / Math.max(lines.length, 1)) * width);
    const gauge = `${"#".repeat(filled)}${"-".repeat(width - filled)}`;
    process.stderr.write(`${tty ? "\r" : ""}importing [${gauge}] ${done}/${lines.length}${tty ? "" : "\n"}`);
  };
  async function* rows() {
    for (let i = 0; i < lines.length; i++) {
      try {
        const row = parseLine(lines[i], opts.format, base);
        sentLine.push(i + 1);
        yield create(ImportLicensesRequestSchema, row);
      } catch (err) {
        local.push({ line: i + 1, text: `UNREADABLE: ${(err as Error).message}` });
      }
      if (tty || (i + 1) % 500 === 0 || i + 1 === lines.length) bar(i + 1);
    }
  }
  const transport = createGrpcTransport({
    baseUrl: opts.url,
    interceptors: [
      (next) => (req) => {
        req.header.set("authorization", `Bearer ${opts.key}`);
        return next(req);
      },
    ],
  });
  const summary = await createClient(LicensingService, transport).importLicenses(rows());
  if (tty) process.stderr.write("\n");
  console.log(
    `received ${summary.received}, imported ${summary.imported} (${summary.customersCreated} new customers), ` +
      `failed ${Number(summary.failed) + local.length}`,
  );
  // One report in file order: lines the command could not read, and rows the server refused.
  const refused = summary.errors.map((e) => ({ line: sentLine[Number(e.index)]!, text: `${e.reason}: ${e.message}` }));
  for (const e of [...local, ...refused].sort((a, b) => a.line - b.line)) console.log(`line ${e.line}: ${e.text}`);
  return Number(summary.failed) === 0 && local.length === 0;
}
