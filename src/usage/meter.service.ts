import { LockMode, UniqueConstraintViolationException } from "@mikro-orm/core";
import type { Clock } from "../platform/clock.js";
import { sql, type EntityManager } from "../platform/db.js";
import { alreadyExists, failedPrecondition, invalidArgument, notFound } from "../platform/errors.js";
import { newId } from "../platform/ids.js";
import type { Page } from "../platform/pagination.js";
import type { Events } from "../events/events.js";
import type { CatalogService } from "../licensing/catalog.service.js";
import { Meter, type Aggregation, type LimitPeriod } from "./meter.entity.js";

export interface MeterInput {
  productId: string;
  metric: string;
  aggregation: Aggregation;
  uniqueAttribute: string;
  period: LimitPeriod;
  description: string;
  agentTokens: boolean;
}

/** Meters: the metrics of a product, how they aggregate and over which period their limits apply. */
export function createMeterService(deps: { clock: Clock; events: Events; catalog: CatalogService }) {
  const { clock, events, catalog } = deps;

  async function getMeter(em: EntityManager, tenantId: string, id: string, lock = false): Promise<Meter> {
    const meter = await em.findOne(Meter, { id, tenantId }, lock ? { lockMode: LockMode.PESSIMISTIC_WRITE } : {});
    if (!meter) throw notFound("meter", id);
    return meter;
  }

  const emit = (em: EntityManager, m: Meter, type: string, actor: string) =>
    events.emit(em, {
      tenantId: m.tenantId,
      type,
      subject: m.id,
      actor,
      payload: {
        product_id: m.productId,
        metric: m.metric,
        aggregation: m.aggregation,
        period: m.period,
        agent_tokens: m.agentTokens,
      },
    });

  return {
    getMeter,

    async createMeter(em: EntityManager, tenantId: string, actor: string, input: MeterInput): Promise<Meter> {
      await catalog.getProduct(em, tenantId, input.productId);
      if (input.aggregation === "unique_count" && !/^[A-Za-z0-9._/-]{1,63}$/.test(input.uniqueAttribute)) {
        throw invalidArgument(
          "unique_attribute",
          "UNIQUE_COUNT meters name the attribute whose distinct values they count (1 to 63 of [A-Za-z0-9._/-])",
        );
      }
      if (input.aggregation !== "unique_count" && input.uniqueAttribute)
        throw invalidArgument("unique_attribute", "only UNIQUE_COUNT meters take one");
      if (input.agentTokens && input.aggregation !== "sum")
        throw invalidArgument("agent_tokens", "only a SUM meter counts agent tokens");
      const now = clock.now();
      const meter = em.create(Meter, { id: newId("mtr"), tenantId, ...input, createdAt: now, updatedAt: now });
      try {
        await em.flush();
      } catch (err) {
        if (err instanceof UniqueConstraintViolationException)
          throw alreadyExists("METRIC_TAKEN", `metric: the product already has a meter ${input.metric}`, {
            field: "metric",
          });
        throw err;
      }
      await emit(em, meter, "meter.created", actor);
      return meter;
    },

    list: (em: EntityManager, tenantId: string, page: Page, productId: string) =>
      em.find(
        Meter,
        { tenantId, ...(productId ? { productId } : {}), ...(page.after ? { id: { $gt: page.after } } : {}) },
        { orderBy: { id: "asc" }, limit: page.size + 1 },
      ),

    async updateMeter(
      em: EntityManager,
      tenantId: string,
      actor: string,
      id: string,
      patch: Partial<Pick<MeterInput, "period" | "description" | "agentTokens">>,
    ) {
      const meter = await getMeter(em, tenantId, id, true);
      if (patch.agentTokens && meter.aggregation !== "sum")
        throw invalidArgument("agent_tokens", "only a SUM meter counts agent tokens");
      if (patch.agentTokens !== undefined && patch.agentTokens !== meter.agentTokens) {
        // Agents' period totals are kept only while the meter counts agent tokens: stale
        // ones go, and ingestion rebuilds each from the hourly rollups when it next needs it.
        await sql(em, `delete from usage_periods where meter_id = $1 and agent_id <> ''`, [meter.id]);
      }
      Object.assign(meter, Object.fromEntries(Object.entries(patch).filter(([, v]) => v !== undefined)), {
        updatedAt: clock.now(),
      });
      await em.flush();
      await emit(em, meter, "meter.updated", actor);
      return meter;
    },

    async deleteMeter(em: EntityManager, tenantId: string, actor: string, id: string) {
      const meter = await getMeter(em, tenantId, id, true);
      const [used] = await sql<{ n: number }>(
        em,
        `select count(*)::int as n from (select 1 from usage_rollups where meter_id = $1 limit 1) x`,
        [id],
      );
      if (used!.n > 0)
        throw failedPrecondition("METER_IN_USE", "the meter has recorded usage; it stays for the record", {
          meter_id: id,
        });
      em.remove(meter);
      await em.flush();
      await emit(em, meter, "meter.deleted", actor);
      return meter;
    },
  };
}

export type MeterService = ReturnType<typeof createMeterService>;
