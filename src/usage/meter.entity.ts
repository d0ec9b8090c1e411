import { defineEntity, p } from "@mikro-orm/core";
import { baseProperties } from "../platform/base-entity.js";

export type Aggregation = "sum" | "count" | "max" | "min" | "unique_count" | "latest";
export type LimitPeriod = "month" | "day" | "license_term";

export const MeterSchema = defineEntity({
  name: "Meter",
  tableName: "meters",
  properties: {
    ...baseProperties,
    productId: p.string(),
    metric: p.string(),
    aggregation: p.string().$type<Aggregation>(),
    uniqueAttribute: p.string(),
    period: p.string().$type<LimitPeriod>(),
    description: p.string(),
    /** Each agent's events are also held to its token_allowance (SUM meters only). */
    agentTokens: p.boolean().default(false),
  },
});
export class Meter extends MeterSchema.class {}
MeterSchema.setClass(Meter);
