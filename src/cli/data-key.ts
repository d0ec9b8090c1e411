/*
 * `licensd data-key …`: the data key's rotation (docs/operations.md, Data-key rotation). rotate and check open the
 * database with the instances' settings (LICENSD_DATABASE_URL, LICENSD_DATA_KEY, LICENSD_DATA_KEY_PREVIOUS), as
 * migrate does; generate needs nothing.
 */
import { randomBytes } from "node:crypto";
import { type Command, InvalidArgumentError } from "commander";
import type { Config } from "../config.js";
import { DataKeyring } from "../platform/crypto.js";
import type { SealedTableCount, SealedValuesReport } from "../platform/data-key-rotation.js";
import { printJson } from "./output.js";
import { CliFailure, EXIT, type GlobalOptions } from "./runtime.js";

const HEADER = ["table", "values", "current", "previous", "resealed", "unopenable"] as const;

export function dataKeyCommands(program: Command, config: () => Config): void {
  const dataKey = program
    .command("data-key")
    .description(
      "the data key that seals stored secrets: generate a new one, re-seal under it, check that no value needs the " +
        "old one (docs/operations.md, Data-key rotation)",
    );

  dataKey
    .command("generate")
    .description("print a new data key: 32 random bytes, base64 (for LICENSD_DATA_KEY)")
    .action(() => {
      process.stdout.write(`${randomBytes(32).toString("base64")}\n`);
    });

  dataKey
    .command("rotate")
    .description(
      "re-seal under LICENSD_DATA_KEY every sealed value that a LICENSD_DATA_KEY_PREVIOUS key opens, in batches, " +
        "while instances serve; prints counts per table; exit 1 when a value opens under no configured key",
    )
    .addOption(
      program
        .createOption("--batch-size <n>", "rows read per statement (1 to 100000)")
        .argParser(batchSize)
        .default(500),
    )
    .action(async (opts: { batchSize: number }, cmd: Command) => {
      const report = await sweep(config(), cmd, { reseal: true, batchSize: opts.batchSize });
      const resealed = sum(report.tables, "resealed");
      if (!json(cmd))
        process.stdout.write(
          `re-sealed ${resealed} value${resealed === 1 ? "" : "s"} under the current data key` +
            `${report.unopenable.length > 0 ? `; ${report.unopenable.length} open under no configured key` : ""}\n`,
        );
      process.exitCode = report.unopenable.length > 0 ? EXIT.server : EXIT.ok;
    });

  dataKey
    .command("check")
    .description(
      "count the sealed values still under a LICENSD_DATA_KEY_PREVIOUS key (or under none); exit 0 when every " +
        "one is under LICENSD_DATA_KEY, so the previous keys can be retired, else 1",
    )
    .action(async (_opts: unknown, cmd: Command) => {
      const report = await sweep(config(), cmd, { reseal: false });
      const previous = sum(report.tables, "previous");
      if (!json(cmd))
        process.stdout.write(
          previous === 0 && report.unopenable.length === 0
            ? "every sealed value is under the current data key: LICENSD_DATA_KEY_PREVIOUS can be retired\n"
            : `${previous} value${previous === 1 ? "" : "s"} still under a previous data key` +
                `${report.unopenable.length > 0 ? `, ${report.unopenable.length} under no configured key` : ""}` +
                `: ${
                  previous > 0
                    ? "run licensd data-key rotate, and keep LICENSD_DATA_KEY_PREVIOUS"
                    : "see docs/operations.md, Data-key rotation, If something fails"
                }\n`,
        );
      process.exitCode = previous === 0 && report.unopenable.length === 0 ? EXIT.ok : EXIT.server;
    });
}

function batchSize(value: string): number {
  const n = Number(value);
  if (!/^\d{1,6}$/.test(value) || n < 1 || n > 100_000) throw new InvalidArgumentError("a whole number, 1 to 100000");
  return n;
}

const json = (cmd: Command) => (cmd.optsWithGlobals() as GlobalOptions).json === true;
const sum = (tables: SealedTableCount[], field: keyof Omit<SealedTableCount, "table">) =>
  tables.reduce((n, t) => n + t[field], 0);

/** Opens the database, sweeps every sealed column, prints the counts (a table per line, or one JSON document). */
async function sweep(config: Config, cmd: Command, opts: { reseal: boolean; batchSize?: number }) {
  const asJson = json(cmd);
  // The server's modules load only for the commands that open the database (main.ts).
  const [{ createLogger }, { openStorage }, { sweepSealedValues }, { sql }] = await Promise.all([
    import("../platform/logger.js"),
    import("../app.js"),
    import("../platform/data-key-rotation.js"),
    import("../platform/db.js"),
  ]);
  const keys = new DataKeyring(config.dataKey, config.previousDataKeys);
  const [current, ...previous] = keys.fingerprints();
  // Log lines (an embedded database starting, say) go to stderr: stdout is the report.
  const logger = createLogger(config.logLevel === "info" ? "warn" : config.logLevel, process.stderr);
  const { db, embedded } = await openStorage(config, logger, { migrate: false });
  let report: SealedValuesReport;
  try {
    const [migrated] = await sql<{ t: string | null }>(db, "select to_regclass('data_key_material')::text as t");
    if (!migrated?.t)
      throw new CliFailure(
        "this database has no data_key_material table: it was not migrated by this licensd version",
        EXIT.usage,
        "start an instance of this version (or run licensd migrate) first",
      );
    if (!asJson) {
      process.stdout.write(
        `current data key ${current}; previous: ${previous.length > 0 ? previous.join(", ") : "none"}\n` +
          `${HEADER.join("\t")}\n`,
      );
    }
    report = await sweepSealedValues(db, keys, {
      ...opts,
      onTable: (t) => {
        if (!asJson) process.stdout.write(`${HEADER.map((h) => t[h]).join("\t")}\n`);
      },
    });
  } finally {
    await db.close();
    await embedded?.stop();
  }
  for (const u of report.unopenable)
    process.stderr.write(`unopenable: ${u.table} ${u.id} ${u.column}: no configured data key opens it\n`);
  if (asJson) printJson({ currentKey: current, previousKeys: previous, ...report });
  return report;
}
