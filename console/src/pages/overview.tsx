import type { AuditEvent } from "@licensd/client/gen/licensd/audit/v1/audit_event_pb.js";
import { LicenseStatus } from "@licensd/client/gen/licensd/licensing/v1/license_pb.js";
import { MachineStatus } from "@licensd/client/gen/licensd/activation/v1/machine_pb.js";
import { ResolutionFilter } from "@licensd/client/gen/licensd/usage/v1/usage_service_pb.js";
import { useEffect, useState } from "preact/hooks";
import { errorText } from "../api";
import { href } from "../router";
import { ErrorBox, Loading, Page, useAsync, useScope, when } from "../ui";
import { UsageToday } from "./usage-today";

const CAP = 1000;
/** "1000+" when there is more than one page of 1,000. */
const shown = (n: number, more: boolean) => (more ? `${n}+` : String(n));

export function Overview() {
  const { client, tenantId } = useScope();
  const counts = useAsync(async () => {
    const licenses = await Promise.all(
      (["ACTIVE", "SUSPENDED", "EXPIRED", "REVOKED"] as const).map(async (s) => {
        const r = await client.licensing.listLicenses({ tenantId, status: LicenseStatus[s], pageSize: CAP });
        return [s.toLowerCase(), shown(r.licenses.length, r.nextPageToken !== "")] as const;
      }),
    );
    const machines = await client.activation.listMachines({ tenantId, status: MachineStatus.ALIVE, pageSize: CAP });
    const anomalies = await client.usage.listAnomalies({
      tenantId,
      resolution: ResolutionFilter.UNRESOLVED,
      pageSize: CAP,
    });
    return {
      licenses,
      machines: shown(machines.machines.length, machines.nextPageToken !== ""),
      anomalies: shown(anomalies.anomalies.length, anomalies.nextPageToken !== ""),
    };
  }, [tenantId]);
  return (
    <Page title="Overview">
      <ErrorBox error={counts.error} />
      {counts.data ? (
        <dl class="cards">
          {counts.data.licenses.map(([status, n]) => (
            <div class="card" key={status}>
              <dt>Licenses {status}</dt>
              <dd data-testid={`licenses-${status}`}>
                <a href={href("licenses")}>{n}</a>
              </dd>
            </div>
          ))}
          <div class="card">
            <dt>Machines alive</dt>
            <dd data-testid="machines-alive">{counts.data.machines}</dd>
          </div>
          <UsageToday />
          <div class="card">
            <dt>Open anomalies</dt>
            <dd data-testid="anomalies-open">
              <a href={href("anomalies")}>{counts.data.anomalies}</a>
            </dd>
          </div>
        </dl>
      ) : counts.loading ? (
        <Loading />
      ) : null}
      <LiveFeed />
    </Page>
  );
}

/** The tenant's audit events as they are committed (TailAuditEvents, server streaming), newest first. */
function LiveFeed() {
  const { client, tenantId } = useScope();
  const [events, setEvents] = useState<AuditEvent[]>([]);
  const [state, setState] = useState<"connecting" | "live" | string>("connecting");
  useEffect(() => {
    const abort = new AbortController();
    (async () => {
      // From the log's size when the feed opens (so an entry committed before the stream reaches the server is not
      // missed), then, after a drop, from the last one seen.
      let after: bigint | undefined;
      for (let attempt = 0; !abort.signal.aborted; attempt++) {
        try {
          after ??= (await client.audit.getCheckpoint({ tenantId }, { signal: abort.signal })).checkpoint?.treeSize;
          setState("live");
          const stream = client.audit.tailAuditEvents({ tenantId, afterSeq: after }, { signal: abort.signal });
          for await (const res of stream) {
            if (res.message.case !== "event") continue;
            const event = res.message.value;
            after = event.seq;
            attempt = 0;
            setEvents((list) => [event, ...list].slice(0, 50));
          }
        } catch (err) {
          if (abort.signal.aborted) return;
          setState(`reconnecting: ${errorText(err)}`);
          await new Promise((r) => setTimeout(r, Math.min(30_000, 1000 * 2 ** attempt)));
        }
      }
    })().catch((err: unknown) => setState(errorText(err)));
    return () => abort.abort();
  }, [tenantId]);
  return (
    <section aria-labelledby="feed-title" class="feed">
      <h2 id="feed-title">
        Live audit feed <span class={`live live-${state === "live" ? "on" : "off"}`}>{state}</span>
      </h2>
      {events.length === 0 ? (
        <p class="muted">No events since this page opened. Changes made anywhere appear here as they commit.</p>
      ) : (
        <ol class="events" aria-live="polite">
          {events.map((e) => (
            <li key={e.id} data-type={e.type}>
              <time>{when(e.occurTime)}</time> <code>{e.type}</code> <span>{e.subject}</span>{" "}
              <span class="muted">by {e.actor}</span>
            </li>
          ))}
        </ol>
      )}
    </section>
  );
}
