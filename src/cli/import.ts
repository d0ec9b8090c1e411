import { createReadStream } from "node:fs";
import { createInterface } from "node:readline";
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { LicensingService } from "@licensd/client";
import { LicenseStatus } from "@licensd/client/gen/licensd/licensing/v1/license_pb.js";
import {
  ImportLicensesRequestSchema,
  type ImportLicensesResponse,
} from "@licensd/client/gen/licensd/licensing/v1/licensing_service_pb.js";
import cliProgress from "cli-progress";
import { printJson } from "./output.js";
import type { Context } from "./runtime.js";

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
 * `licensd import FILE`: streams the file's rows to ImportLicenses with a progress bar (stderr, on a terminal);
 * returns whether every row was imported.
 */
export async function importFile(
  ctx: Context,
  opts: { file: string; format: "datatools" | "vinzy"; product: string },
): Promise<boolean> {
  const lines: string[] = [];
  for await (const line of createInterface({ input: createReadStream(opts.file), crlfDelay: Infinity }))
    if (line.trim() !== "") lines.push(line);
  const base: Row = { tenantId: ctx.tenant, productId: opts.product };
  const local: { line: number; text: string }[] = [];
  const sentLine: number[] = [];
  const bar =
    process.stderr.isTTY && !ctx.json
      ? new cliProgress.SingleBar(
          {
            format: "importing [{bar}] {percentage}% | {value}/{total} rows | {rate} rows/s",
            stream: process.stderr,
            hideCursor: true,
          },
          cliProgress.Presets.shades_classic,
        )
      : undefined;
  const started = Date.now();
  bar?.start(lines.length, 0, { rate: 0 });
  async function* rows() {
    for (let i = 0; i < lines.length; i++) {
      try {
        const row = parseLine(lines[i], opts.format, base);
        sentLine.push(i + 1);
        yield create(ImportLicensesRequestSchema, row);
      } catch (err) {
        local.push({ line: i + 1, text: `UNREADABLE: ${(err as Error).message}` });
      }
      bar?.update(i + 1, { rate: Math.round((i + 1) / Math.max((Date.now() - started) / 1000, 0.001)) });
    }
  }
  let summary: ImportLicensesResponse;
  try {
    summary = await ctx.streamClient(LicensingService).importLicenses(rows());
  } finally {
    bar?.stop();
  }
  // One report in file order: lines the command could not read, and rows the server refused.
  const refused = summary.errors.map((e) => ({ line: sentLine[Number(e.index)]!, text: `${e.reason}: ${e.message}` }));
  const problems = [...local, ...refused].sort((a, b) => a.line - b.line);
  const failed = Number(summary.failed) + local.length;
  if (ctx.json)
    printJson({
      received: Number(summary.received),
      imported: Number(summary.imported),
      customersCreated: Number(summary.customersCreated),
      failed,
      errors: problems,
    });
  else {
    process.stdout.write(
      `received ${summary.received}, imported ${summary.imported} (${summary.customersCreated} new customers), ` +
        `failed ${failed}\n`,
    );
    for (const e of problems) process.stdout.write(`line ${e.line}: ${e.text}\n`);
  }
  return failed === 0;
}
