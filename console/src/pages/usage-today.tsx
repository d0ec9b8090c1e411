import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Aggregation } from "@licensd/client/gen/licensd/usage/v1/usage_pb.js";
import { href } from "../router";
import { useAsync, useScope } from "../ui";
import { count } from "./usage";

/** At most this many GetUsageSummary calls for the card; beyond, totals are shown as "n+". */
const CALLS = 200;

/**
 * The Overview's "Usage today" card: per SUM or COUNT metric, today's (UTC) total over the
 * tenant's customers. The API sums per license or per customer, so the card asks once per
 * (customer, metric) of a product that has the meter.
 */
export function UsageToday() {
  const { client, tenantId } = useScope();
  const today = useAsync(async () => {
    const { meters } = await client.usage.listMeters({ tenantId, pageSize: 1000 });
    const additive = meters.filter((m) => m.aggregation === Aggregation.SUM || m.aggregation === Aggregation.COUNT);
    const metrics = [...new Set(additive.map((m) => m.metric))];
    if (metrics.length === 0) return { totals: [] as [string, bigint][], partial: false };
    const customers = await client.licensing.listCustomers({
      tenantId,
      pageSize: Math.max(1, Math.floor(CALLS / metrics.length)),
    });
    const start = new Date(new Date().toISOString().slice(0, 10));
    const end = new Date(start.getTime() + 86_400_000);
    const pairs = metrics.flatMap((metric) => customers.customers.map((c) => [metric, c.id] as const));
    const sums = new Map<string, bigint>(metrics.map((m) => [m, 0n]));
    // A few calls at a time: quick for a handful of customers, gentle on the server for many.
    for (let i = 0; i < pairs.length; i += 8) {
      await Promise.all(
        pairs.slice(i, i + 8).map(async ([metric, customerId]) => {
          const s = await client.usage.getUsageSummary({
            tenantId,
            customerId,
            metric,
            startTime: timestampFromDate(start),
            endTime: timestampFromDate(end),
          });
          sums.set(metric, (sums.get(metric) ?? 0n) + s.total);
        }),
      );
    }
    const totals = [...sums.entries()];
    return { totals, partial: customers.nextPageToken !== "" };
  }, [tenantId]);
  return (
    <div class="card">
      <dt>Usage today</dt>
      <dd data-testid="usage-today">
        {today.error ? (
          <span class="muted">unavailable</span>
        ) : !today.data ? (
          "…"
        ) : today.data.totals.length === 0 ? (
          <a href={href("usage")}>no meters</a>
        ) : (
          <a href={href("usage")}>
            {today.data.totals.map(([metric, total]) => (
              <span class="usage-today" key={metric}>
                {count(total)}
                {today.data?.partial ? "+" : ""} <small>{metric}</small>
              </span>
            ))}
          </a>
        )}
      </dd>
    </div>
  );
}
