/* `licensd audit list|tail|verify|chain|prune` (AuditService). */
import { setTimeout as sleep } from "node:timers/promises";
import type { Timestamp } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { AuditService } from "@licensd/client";
import { type AuditEvent, AuditEventSchema } from "@licensd/client/gen/licensd/audit/v1/audit_event_pb.js";
import {
  ChainProblemSchema,
  ListOrder,
  PruneAuditLogResponseSchema,
  VerifyAuditChainResponseSchema,
} from "@licensd/client/gen/licensd/audit/v1/audit_service_pb.js";
import type { Command } from "commander";
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
import { verifyAuditLog } from "./audit-verify.js";
import { fieldsOf, messageJson, note, paint, printJson, printRecord } from "./output.js";
import { parseCount, parsePositiveBig, parseSeconds, parseTime } from "./parse.js";
import { type Context, EXIT, UsageError } from "./runtime.js";

const columns = [
  { header: "SEQ", value: (e: AuditEvent) => String(e.seq) },
  { header: "TIME", value: (e: AuditEvent) => time(e.occurTime) },
  { header: "TYPE", value: (e: AuditEvent) => e.type },
  { header: "SUBJECT", value: (e: AuditEvent) => e.subject },
  { header: "ACTOR", value: (e: AuditEvent) => e.actor },
  { header: "ID", value: (e: AuditEvent) => e.id },
];

export function auditCommands(program: Command): void {
  const audit = program.command("audit").description("the tenant's hash-chained, signed audit log");
  listOptions(
    audit
      .command("list")
      .description("list audit entries (oldest first)")
      .option("--subject <id>", "only entries about this resource (lic_…, cus_…)")
      .option("--type <prefix>", "only entries whose type starts with this, e.g. license.")
      .option("--actor <actor>", "only entries by this actor")
      .option("--since <time>", "at or after: an ISO time or -1d", parseTime)
      .option("--until <time>", "before: an ISO time", parseTime)
      .option("--newest-first", "newest entries first"),
  ).action(
    act<
      ListOptions & {
        subject?: string;
        type?: string;
        actor?: string;
        since?: Timestamp;
        until?: Timestamp;
        newestFirst?: boolean;
      }
    >(async (ctx, o) => {
      const page = await collectPages(o, async (pageSize, pageToken) => {
        const r = await ctx.client(AuditService).listAuditEvents({
          tenantId: ctx.tenant,
          subject: o.subject ?? "",
          typePrefix: o.type ?? "",
          actor: o.actor ?? "",
          startTime: o.since,
          endTime: o.until,
          order: o.newestFirst ? ListOrder.NEWEST_FIRST : ListOrder.OLDEST_FIRST,
          pageSize,
          pageToken,
        });
        return { items: r.events, next: r.nextPageToken };
      });
      printList(ctx, "events", AuditEventSchema, page, columns);
    }),
  );
  audit
    .command("show")
    .description("show one audit entry with its payload")
    .argument("<id>", "entry id (evt_…)")
    .action(
      act(async (ctx, _o, [id]) => {
        const res = await ctx.client(AuditService).getAuditEvent({ tenantId: ctx.tenant, id });
        if (ctx.json) return printJson({ event: messageJson(AuditEventSchema, res.event!) });
        printRecord(ctx, fieldsOf(AuditEventSchema, res.event!));
      }),
    );
  audit
    .command("tail")
    .description(
      "follow the log as entries are committed (reconnects after a dropped connection, from the last entry seen); " +
        "with --json one JSON object per line",
    )
    .option("--after-seq <n>", "start after this entry (0: from the beginning); default: from now", parseCount)
    .option("--subject <id>", "only entries about this resource")
    .option("--type <prefix>", "only entries whose type starts with this")
    .option("--count <n>", "stop after n entries", parseCount)
    .action(
      act<{ afterSeq?: number; subject?: string; type?: string; count?: number }>(async (ctx, o) => {
        await tail(ctx, o);
      }),
    );
  audit
    .command("verify")
    .description(
      "check a tenant's signed checkpoint against the published signing keys, its consistency with the checkpoint " +
        "saved by the last run (--state), and optionally an entry's inclusion (--event, or --seq); trusts nothing " +
        "the server says without proof. Exit 4 when a check fails.",
    )
    .option("--state <file>", "where the last verified checkpoint is kept between runs")
    .option("--seq <n>", "also prove that the server's hash for entry n is in the log", parsePositiveBig)
    .option("--event <id>", "also prove that this entry (evt_…), hashed here from its fields, is in the log")
    .action(
      act<{ state?: string; seq?: bigint; event?: string }>(async (ctx, o) => {
        const { ok, checks } = await verifyAuditLog(ctx, { ...o, tenant: ctx.tenant });
        if (ctx.json) printJson({ ok, checks });
        else for (const c of checks) process.stdout.write(`${paint(ctx, c.ok ? "ok  " : "FAIL")} ${c.check}\n`);
        return ok ? EXIT.ok : EXIT.negative;
      }),
    );
  audit
    .command("chain")
    .description("have the server re-check the hash chain over a range of entries (VerifyAuditChain); exit 4 if broken")
    .option("--from-seq <n>", "first entry", parsePositiveBig)
    .option("--to-seq <n>", "last entry", parsePositiveBig)
    .action(
      act<{ fromSeq?: bigint; toSeq?: bigint }>(async (ctx, o) => {
        const res = await ctx
          .client(AuditService)
          .verifyAuditChain({ tenantId: ctx.tenant, startSeq: o.fromSeq ?? 0n, endSeq: o.toSeq ?? 0n });
        if (ctx.json) printJson(messageJson(VerifyAuditChainResponseSchema, res));
        else
          printRecord(ctx, [
            ["valid", String(res.valid)],
            ["checked", `${res.eventsChecked} entries (${res.startSeq}..${res.endSeq})`],
            ...(res.valid
              ? []
              : ([
                  ["first bad seq", String(res.firstBadSeq)],
                  ["problem", enumText(ChainProblemSchema, res.problem)],
                  ["detail", res.detail],
                ] as [string, string][])),
          ]);
        return res.valid ? EXIT.ok : EXIT.negative;
      }),
    );
  mutationOptions(
    audit
      .command("prune")
      .description(
        "the retention job (PruneAuditLog): remove a tenant's oldest entries, keeping a signed record of the cut " +
          "(and the Merkle tree, so proofs still hold)",
      )
      .option("--through-seq <n>", "remove entries 1..n", parsePositiveBig)
      .option("--older-than <duration>", "remove entries older than this, e.g. 365d", parseSeconds)
      .option("--older-than-days <d>", "remove entries older than d days", parsePositiveBig),
  ).action(
    act<{ throughSeq?: bigint; olderThan?: bigint; olderThanDays?: bigint; idempotencyKey?: string }>(
      async (ctx, o) => {
        const age = o.olderThan ?? (o.olderThanDays !== undefined ? o.olderThanDays * 86_400n : undefined);
        if ((o.throughSeq === undefined) === (age === undefined))
          throw new UsageError("give --through-seq or --older-than (one of them)");
        const cut =
          o.throughSeq !== undefined
            ? ({ case: "throughSeq", value: o.throughSeq } as const)
            : ({ case: "olderThan", value: { seconds: age!, nanos: 0 } } as const);
        const res = await ctx
          .client(AuditService)
          .pruneAuditLog({ tenantId: ctx.tenant, cut, idempotencyKey: idempotencyKey(o) });
        if (ctx.json) return printJson(messageJson(PruneAuditLogResponseSchema, res));
        printRecord(ctx, [
          ["removed", String(res.removedCount)],
          ["through seq", String(res.throughSeq)],
        ]);
      },
    ),
  );
}

async function tail(ctx: Context, o: { afterSeq?: number; subject?: string; type?: string; count?: number }) {
  let after = o.afterSeq !== undefined ? BigInt(o.afterSeq) : undefined;
  let seen = 0;
  const print = (e: AuditEvent) => {
    if (ctx.json) process.stdout.write(`${JSON.stringify(messageJson(AuditEventSchema, e))}\n`);
    else process.stdout.write(`${columns.map((c) => c.value(e)).join(ctx.tty ? "  " : "\t")}\n`);
  };
  for (let attempt = 0; ; attempt++) {
    try {
      const stream = ctx.streamClient(AuditService).tailAuditEvents({
        tenantId: ctx.tenant,
        afterSeq: after,
        subject: o.subject ?? "",
        typePrefix: o.type ?? "",
      });
      for await (const msg of stream) {
        attempt = 0;
        if (msg.message.case !== "event") continue;
        print(msg.message.value);
        after = msg.message.value.seq;
        if (o.count !== undefined && ++seen >= o.count) return;
      }
      return;
    } catch (err) {
      // A dropped connection (a server restart, a load balancer's idle cut) resumes from the last entry seen;
      // anything the server refused, or a server that stays away, ends the command.
      const transient = err instanceof ConnectError && err.code === Code.Unavailable && after !== undefined;
      if (!transient || attempt >= 5) throw err;
      note(ctx, `connection lost; resuming after seq ${after}`);
      await sleep(500 * 2 ** attempt);
    }
  }
}
