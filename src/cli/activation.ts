/*
 * `licensd machine …`, `licensd process …`, `licensd lease verify`, `licensd activation request|respond` and
 * `licensd keys …` (ActivationService). `lease verify` and `activation request` work offline.
 */
import { readFileSync, writeFileSync } from "node:fs";
import os from "node:os";
import { fromJson, type JsonValue } from "@bufbuild/protobuf";
import { ActivationService, createOfflineActivationRequest, verifyLease } from "@licensd/client";
import {
  GetSigningKeysResponseSchema,
  RotateSigningKeyResponseSchema,
} from "@licensd/client/gen/licensd/activation/v1/activation_service_pb.js";
import { MachineSchema, MachineStatusSchema } from "@licensd/client/gen/licensd/activation/v1/machine_pb.js";
import { ProcessSchema, ProcessStatusSchema } from "@licensd/client/gen/licensd/activation/v1/process_pb.js";
import { SigningKeySchema, SigningKeyStatusSchema } from "@licensd/client/gen/licensd/activation/v1/signing_key_pb.js";
import { type Command, Option } from "commander";
import {
  act,
  collectPages,
  enumText,
  idempotencyKey,
  type ListOptions,
  listOptions,
  mutationOptions,
  printList,
  time,
} from "./command.js";
import { fieldsOf, messageJson, note, printJson, printRecord } from "./output.js";
import { enumParser, parseSeconds } from "./parse.js";
import { CliFailure, type Context, EXIT } from "./runtime.js";

export function activationCommands(program: Command): void {
  const machine = program.command("machine").description("machines: the activations of licenses");
  listOptions(
    machine
      .command("list")
      .description("list machines")
      .option("--license <id>", "only this license's (lic_…)")
      .option("--status <status>", "alive or dead", enumParser(MachineStatusSchema)),
  ).action(
    act<ListOptions & { license?: string; status?: number }>(async (ctx, o) => {
      const page = await collectPages(o, async (pageSize, pageToken) => {
        const r = await ctx
          .client(ActivationService)
          .listMachines({ tenantId: ctx.tenant, licenseId: o.license ?? "", status: o.status, pageSize, pageToken });
        return { items: r.machines, next: r.nextPageToken };
      });
      printList(ctx, "machines", MachineSchema, page, [
        { header: "ID", value: (m) => m.id },
        { header: "LICENSE", value: (m) => m.licenseId },
        { header: "FINGERPRINT", value: (m) => m.fingerprint },
        { header: "HOSTNAME", value: (m) => m.hostname },
        { header: "STATUS", value: (m) => enumText(MachineStatusSchema, m.status), status: true },
        { header: "LAST HEARTBEAT", value: (m) => time(m.lastHeartbeatTime) },
      ]);
    }),
  );
  machine
    .command("show")
    .description("show a machine")
    .argument("<id>", "machine id (mach_…)")
    .action(
      act(async (ctx, _o, [id]) => {
        const res = await ctx.client(ActivationService).getMachine({ tenantId: ctx.tenant, id });
        if (ctx.json) return printJson({ machine: messageJson(MachineSchema, res.machine!) });
        printRecord(ctx, fieldsOf(MachineSchema, res.machine!));
      }),
    );
  mutationOptions(
    machine
      .command("deactivate")
      .description("deactivate a machine: it frees a seat and its lease stops being renewed")
      .argument("<id>", "machine id (mach_…)"),
  ).action(
    act<{ idempotencyKey?: string }>(async (ctx, o, [id]) => {
      const res = await ctx
        .client(ActivationService)
        .deactivate({ tenantId: ctx.tenant, machineId: id, idempotencyKey: idempotencyKey(o) });
      if (ctx.json) return printJson({ machine: messageJson(MachineSchema, res.machine!) });
      printRecord(ctx, fieldsOf(MachineSchema, res.machine!));
      note(ctx, "deactivated: the machine above (as it was) no longer holds a seat");
    }),
  );

  const processes = program
    .command("process")
    .description("processes: running instances of an app on activated machines (max_processes)");
  listOptions(
    processes
      .command("list")
      .description("list processes, dead ones included until the heartbeat monitor removes them")
      .option("--license <id>", "only this license's (lic_…)")
      .option("--machine <id>", "only this machine's (mach_…)"),
  ).action(
    act<ListOptions & { license?: string; machine?: string }>(async (ctx, o) => {
      const page = await collectPages(o, async (pageSize, pageToken) => {
        const r = await ctx.client(ActivationService).listProcesses({
          tenantId: ctx.tenant,
          licenseId: o.license ?? "",
          machineId: o.machine ?? "",
          pageSize,
          pageToken,
        });
        return { items: r.processes, next: r.nextPageToken };
      });
      printList(ctx, "processes", ProcessSchema, page, [
        { header: "ID", value: (p) => p.id },
        { header: "MACHINE", value: (p) => p.machineId },
        { header: "PID", value: (p) => p.pid },
        { header: "STATUS", value: (p) => enumText(ProcessStatusSchema, p.status), status: true },
        { header: "LAST PING", value: (p) => time(p.lastHeartbeatTime) },
      ]);
    }),
  );
  processes
    .command("show")
    .description("show a process")
    .argument("<id>", "process id (proc_…)")
    .action(
      act(async (ctx, _o, [id]) => {
        const res = await ctx.client(ActivationService).getProcess({ tenantId: ctx.tenant, id });
        if (ctx.json) return printJson({ process: messageJson(ProcessSchema, res.process!) });
        printRecord(ctx, fieldsOf(ProcessSchema, res.process!));
      }),
    );
  mutationOptions(
    processes
      .command("kill")
      .description("kill a process: its slot of max_processes is free at once")
      .argument("<id>", "process id (proc_…)"),
  ).action(
    act<{ idempotencyKey?: string }>(async (ctx, o, [id]) => {
      const res = await ctx
        .client(ActivationService)
        .killProcess({ tenantId: ctx.tenant, id, idempotencyKey: idempotencyKey(o) });
      if (ctx.json) return printJson({ process: messageJson(ProcessSchema, res.process!) });
      printRecord(ctx, fieldsOf(ProcessSchema, res.process!));
      note(ctx, "killed: the process above (as it was) no longer holds a slot");
    }),
  );

  program
    .command("lease")
    .description("activation leases")
    .command("verify")
    .description(
      "verify a lease (or an offline activation response) offline: signature, expiry and machine binding " +
        "(exit 4 when it does not verify)",
    )
    .argument("<file>", "the lease token, one line")
    .option("--keys <file>", "the signing keys (`licensd keys list --json` saved); else fetched from --url")
    .option("--fingerprint <fp>", "the machine it must be bound to; without it the binding is shown, not checked")
    .action(
      act<{ keys?: string; fingerprint?: string }>(async (ctx, o, [file]) => {
        const token = readFileSync(file, "utf8").trim();
        const keys = await signingKeys(ctx, o.keys);
        const bound = leaseFingerprint(token);
        const check = await verifyLease(token, keys, { fingerprint: o.fingerprint ?? bound ?? "" });
        const lease = check.payload as Record<string, unknown> | undefined;
        const summary = {
          valid: check.valid,
          code: check.code,
          kid: lease?.kid,
          licenseId: lease?.license_id ?? lease?.lid,
          machineId: lease?.machine_id,
          fingerprint: lease?.fingerprint,
          fingerprintChecked: o.fingerprint !== undefined,
          features: lease?.features,
          expiresAt: lease?.expires_at,
        };
        if (ctx.json) printJson(summary);
        else
          printRecord(
            ctx,
            Object.entries(summary)
              .filter(([, v]) => v !== undefined)
              .map(([k, v]) => [k, Array.isArray(v) ? v.join(", ") : String(v)]),
          );
        if (o.fingerprint === undefined && bound) note(ctx, "the machine binding was not checked: give --fingerprint");
        return check.valid ? EXIT.ok : EXIT.negative;
      }),
    );

  const activation = program
    .command("activation")
    .description("air-gapped activation: a request file from the offline machine, a response file back");
  activation
    .command("request")
    .description(
      "on the machine that cannot reach licensd: write an activation request file (it names the license by the " +
        "key's SHA-256 and is MACed with the key; the key itself is not in it). Works offline.",
    )
    .requiredOption("--license-key <key>", "the license key")
    .requiredOption("--fingerprint <fingerprint>", "this machine's fingerprint")
    .option("--hostname <name>", "host name to record", os.hostname())
    .option("--platform <platform>", "platform to record", `${process.platform}-${process.arch}`)
    .requiredOption("--out <file>", "where to write the request file")
    .action(
      act<{ licenseKey: string; fingerprint: string; hostname: string; platform: string; out: string }>(
        async (ctx, o) => {
          let text: string;
          try {
            text = createOfflineActivationRequest({
              key: o.licenseKey,
              fingerprint: o.fingerprint,
              hostname: o.hostname,
              platform: o.platform,
              cores: os.availableParallelism(),
            });
          } catch (err) {
            throw new CliFailure(`--${(err as Error).message}`, EXIT.usage);
          }
          writeFileSync(o.out, `${text}\n`, { mode: 0o600 });
          if (ctx.json) printJson({ out: o.out });
          else process.stdout.write(`wrote ${o.out}: carry it to your vendor, who answers with a response file\n`);
          return undefined;
        },
      ),
    );
  mutationOptions(
    activation
      .command("respond")
      .description(
        "at the vendor: upload a request file (ActivateOffline) and write the response file (a lease bound to " +
          "that machine) to carry back",
      )
      .argument("<request-file>", "the request file")
      .requiredOption("--out <file>", "where to write the response file"),
  ).action(
    act<{ out: string; idempotencyKey?: string }>(async (ctx, o, [file]) => {
      const res = await ctx.client(ActivationService).activateOffline({
        tenantId: ctx.tenant,
        request: readFileSync(file, "utf8"),
        idempotencyKey: idempotencyKey(o),
      });
      writeFileSync(o.out, `${res.lease!.token}\n`);
      const summary = {
        machineId: res.machine!.id,
        fingerprint: res.machine!.fingerprint,
        expiresAt: time(res.lease!.expireTime) || null,
        out: o.out,
      };
      if (ctx.json) return printJson(summary);
      printRecord(
        ctx,
        Object.entries(summary).map(([k, v]) => [k, String(v ?? "never")]),
      );
    }),
  );

  const keys = program
    .command("keys")
    .description("the Ed25519 keys that sign leases, license files, validations and audit checkpoints");
  keys
    .command("list")
    .description("the published signing keys (save with --json for `lease verify --keys`)")
    .action(
      act(async (ctx) => {
        const res = await ctx.client(ActivationService).getSigningKeys({});
        if (ctx.json) return printJson(messageJson(GetSigningKeysResponseSchema, res));
        printList(ctx, "keys", SigningKeySchema, { items: res.keys, next: "" }, [
          { header: "KID", value: (k) => k.kid },
          { header: "ALGORITHM", value: (k) => k.algorithm },
          { header: "STATUS", value: (k) => enumText(SigningKeyStatusSchema, k.status), status: true },
          { header: "NOT BEFORE", value: (k) => time(k.notBefore) },
          { header: "NOT AFTER", value: (k) => time(k.notAfter) },
        ]);
      }),
    );
  mutationOptions(
    keys
      .command("rotate")
      .description(
        "start a new signing key (RotateSigningKey, super-admin); the old one keeps verifying for --retire-after, " +
          "then retires (0: it leaked, so it and every retiring key are withdrawn at once)",
      )
      .addOption(
        new Option(
          "--retire-after <duration>",
          "how long what the old key signed stays verifiable (e.g. 30d; 0 withdraws it and every retiring key now)",
        )
          .argParser(parseSeconds)
          .default(2_592_000n, "30d"),
      ),
  ).action(
    act<{ retireAfter: bigint; idempotencyKey?: string }>(async (ctx, o) => {
      const res = await ctx.client(ActivationService).rotateSigningKey({
        retireAfter: { seconds: o.retireAfter, nanos: 0 },
        idempotencyKey: idempotencyKey(o),
      });
      if (ctx.json) return printJson(messageJson(RotateSigningKeyResponseSchema, res));
      printRecord(ctx, [
        ...fieldsOf(SigningKeySchema, res.key!),
        ["retiring", res.retiringKids.join(", ")],
        ["retired", res.retiredKids.join(", ")],
      ]);
    }),
  );
}

/** The machine a lease is bound to, read from its payload (unverified: only to show it). */
function leaseFingerprint(token: string): string | undefined {
  try {
    const payload = JSON.parse(Buffer.from(token.split(".")[1] ?? "", "base64url").toString("utf8")) as {
      fingerprint?: unknown;
    };
    return typeof payload.fingerprint === "string" ? payload.fingerprint : undefined;
  } catch {
    return undefined;
  }
}

/** Public keys from a saved `keys list --json`, else from the server (GetSigningKeys). */
export async function signingKeys(ctx: Context, file: string | undefined) {
  if (file === undefined) return (await ctx.client(ActivationService).getSigningKeys({})).keys;
  let json: JsonValue;
  try {
    json = JSON.parse(readFileSync(file, "utf8")) as JsonValue;
    return fromJson(GetSigningKeysResponseSchema, json, { ignoreUnknownFields: true }).keys;
  } catch (err) {
    throw new CliFailure(
      `--keys ${file}: not a signing-key list: ${(err as Error).message}`,
      EXIT.usage,
      "save one with `licensd keys list --json > keys.json`",
    );
  }
}
