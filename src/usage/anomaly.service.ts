import type { Clock } from "../platform/clock.js";
import { sql, type Database, type EntityManager } from "../platform/db.js";
import { notFound } from "../platform/errors.js";
import { newId } from "../platform/ids.js";
import type { Page } from "../platform/pagination.js";
import type { Events } from "../events/events.js";
import { dailyCounts } from "../events/event-log.js";
import { BASELINE_DAYS, score, type Severity } from "./anomaly.js";

export const ACTIVATION_VELOCITY = "activation_velocity";
const DAY = 86_400_000;

export interface AnomalyRow {
  id: string;
  tenant_id: string;
  license_id: string;
  metric: string;
  day_ms: string;
  value: string;
  mean: number;
  stddev: number;
  z_score: number;
  severity: Severity;
  resolved: boolean;
  resolver: string;
  resolution_note: string;
  resolved_ms: string | null;
  created_ms: string;
}

const COLUMNS = `id, tenant_id, license_id, metric, (extract(epoch from day) * 1000)::bigint as day_ms,
  value, mean, stddev, z_score, severity, resolved, resolver, resolution_note,
  (extract(epoch from resolved_at) * 1000)::bigint as resolved_ms,
  (extract(epoch from created_at) * 1000)::bigint as created_ms`;
const SEVERITY_RANK: Record<Severity, number> = { medium: 1, high: 2, critical: 3 };

/**
 * Anomaly detection after Vinzy-Engine: per license and metric, a UTC day's total is
 * scored against the previous 30 daily totals (days with usage), and so is the day's
 * number of activations (new machines) per license. A license with no history at all is
 * not scored (its first day would always be "999": every new customer flagged).
 */
export function createAnomalyService(deps: { db: Database; clock: Clock; events: Events }) {
  const { db, clock, events } = deps;

  /**
   * Daily series per (license, metric) for [day − 30 days, day], from the rollups and the
   * audit log. Day totals saturate at 2^53−1: they are scored as JavaScript numbers and
   * stored in a bigint, and the rollups (numeric) may hold more.
   */
  async function series(em: EntityManager, day: Date, tenantId?: string) {
    const from = new Date(day.getTime() - BASELINE_DAYS * DAY);
    const to = new Date(day.getTime() + DAY);
    const tenant = tenantId ? "and r.tenant_id = $5" : "";
    const usage = await sql<{ tenant_id: string; license_id: string; metric: string; day_ms: string; value: string }>(
      em,
      `select r.tenant_id, r.license_id, m.metric,
              (extract(epoch from date_trunc('day', r.hour, 'UTC')) * 1000)::bigint as day_ms,
              least(sum(r.total), 9007199254740991)::bigint as value
         from usage_rollups r join meters m on m.id = r.meter_id
        where r.hour >= $1 and r.hour < $2 ${tenant}
          and (r.license_id, r.meter_id) in
              (select license_id, meter_id from usage_rollups where hour >= $3 and hour < $4)
        group by 1, 2, 3, 4`,
      [from, to, day, to, ...(tenantId ? [tenantId] : [])],
    );
    // An Activate answers before its entry is sequenced (docs/audit.md): count every one that has answered.
    await events.settle(tenantId);
    const activations = await dailyCounts(em, { type: "machine.activated", field: "license_id", from, to, tenantId });
    const bySeries = new Map<
      string,
      { tenantId: string; licenseId: string; metric: string; days: Map<number, number> }
    >();
    for (const r of [...usage, ...activations.map((a) => ({ ...a, license_id: a.key, metric: ACTIVATION_VELOCITY }))]) {
      const k = `${r.license_id}|${r.metric}`;
      if (!bySeries.has(k))
        bySeries.set(k, { tenantId: r.tenant_id, licenseId: r.license_id, metric: r.metric, days: new Map() });
      bySeries.get(k)!.days.set(Number(r.day_ms), Number(r.value));
    }
    return [...bySeries.values()];
  }

  return {
    /** Scores one UTC day; records (once) and announces what is anomalous; returns that day's anomalies. */
    async detect(day: Date = new Date(clock.now().getTime() - DAY), tenantId?: string): Promise<AnomalyRow[]> {
      const start = new Date(Math.floor(day.getTime() / DAY) * DAY);
      return db.tx(async (em) => {
        for (const s of await series(em, start, tenantId)) {
          const value = s.days.get(start.getTime());
          if (value === undefined) continue;
          const baseline = [...s.days.entries()]
            .filter(([d]) => d < start.getTime())
            .sort(([a], [b]) => a - b)
            .map(([, v]) => v);
          if (baseline.length === 0) continue;
          const r = score(baseline, value);
          if (!r.severity) continue;
          const id = newId("anm");
          const inserted = await sql<{ id: string }>(
            em,
            `insert into anomalies
               (id, tenant_id, license_id, metric, day, value, mean, stddev, z_score, severity, created_at)
             values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
             on conflict (license_id, metric, day) do nothing returning id`,
            [id, s.tenantId, s.licenseId, s.metric, start, value, r.mean, r.stddev, r.z, r.severity, clock.now()],
          );
          if (inserted.length === 0) continue; // found before, by this or another instance
          await events.emit(em, {
            tenantId: s.tenantId,
            type: "anomaly.detected",
            subject: id,
            actor: "system",
            payload: {
              license_id: s.licenseId,
              metric: s.metric,
              day: start.toISOString(),
              value,
              mean: r.mean,
              stddev: r.stddev,
              z_score: r.z,
              severity: r.severity,
            },
          });
        }
        const tenant = tenantId ? "and tenant_id = $2" : "";
        const params = [start, ...(tenantId ? [tenantId] : [])];
        return sql<AnomalyRow>(em, `select ${COLUMNS} from anomalies where day = $1 ${tenant} order by id`, params);
      });
    },

    async list(
      em: EntityManager,
      q: { tenantId: string; licenseId: string; minSeverity: Severity | null; resolved: boolean | null; page: Page },
    ): Promise<AnomalyRow[]> {
      const params: unknown[] = [];
      const conds = [`tenant_id = $${params.push(q.tenantId)}`];
      if (q.licenseId) conds.push(`license_id = $${params.push(q.licenseId)}`);
      if (q.minSeverity) {
        const allowed = (Object.keys(SEVERITY_RANK) as Severity[]).filter(
          (s) => SEVERITY_RANK[s] >= SEVERITY_RANK[q.minSeverity!],
        );
        conds.push(`severity in (${allowed.map((s) => `$${params.push(s)}`).join(", ")})`);
      }
      if (q.resolved !== null) conds.push(`resolved = $${params.push(q.resolved)}`);
      if (q.page.after) conds.push(`id < $${params.push(q.page.after)}`);
      const where = conds.join(" and ");
      return sql<AnomalyRow>(
        em,
        `select ${COLUMNS} from anomalies where ${where} order by id desc limit ${q.page.size + 1}`,
        params,
      );
    },

    async resolve(em: EntityManager, tenantId: string, actor: string, id: string, note: string): Promise<AnomalyRow> {
      const [row] = await sql<{ id: string }>(
        em,
        `update anomalies set resolved = true, resolver = $1, resolution_note = $2, resolved_at = $3
          where id = $4 and tenant_id = $5 returning id`,
        [actor, note, clock.now(), id, tenantId],
      );
      if (!row) throw notFound("anomaly", id);
      await events.emit(em, { tenantId, type: "anomaly.resolved", subject: id, actor, payload: { note } });
      const [out] = await sql<AnomalyRow>(em, `select ${COLUMNS} from anomalies where id = $1`, [id]);
      return out!;
    },
  };
}

export type AnomalyService = ReturnType<typeof createAnomalyService>;
