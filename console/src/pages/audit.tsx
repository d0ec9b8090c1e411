import { type Timestamp, timestampFromDate } from "@bufbuild/protobuf/wkt";
import {
  type AuditProofCode,
  type AuditProofResult,
  type PublicKey,
  verifyAuditProof,
  verifyCheckpoint,
} from "@licensd/client";
import type { AuditEvent, Checkpoint } from "@licensd/client/gen/licensd/audit/v1/audit_event_pb.js";
import { ChainProblem, ListOrder } from "@licensd/client/gen/licensd/audit/v1/audit_service_pb.js";
import { useState } from "preact/hooks";
import { errorText } from "../api";
import { Badge, Empty, ErrorBox, Field, Loading, Page, Pager, Table, usePages, useAsync, useScope, when } from "../ui";

/** What each verifier code means, for the person reading the page. */
const PROOF_TEXT: Record<AuditProofCode, string> = {
  VERIFIED: "verified",
  MALFORMED: "the checkpoint, entry or proof could not be read",
  UNKNOWN_KEY: "the checkpoint names a signing key that is not published",
  KEYS_UNAVAILABLE: "the signing keys could not be fetched",
  BAD_SIGNATURE: "the checkpoint's signature does not verify",
  NOT_INCLUDED: "the entry is not in the signed tree (or its content was altered)",
  NOT_CONSISTENT: "the checkpoint does not extend the older one",
};

const hex = (b: Uint8Array) => Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");

interface Filters {
  subject: string;
  typePrefix: string;
  actor: string;
  from: string;
  to: string;
  order: ListOrder;
}

const NO_FILTERS: Filters = {
  subject: "",
  typePrefix: "",
  actor: "",
  from: "",
  to: "",
  order: ListOrder.NEWEST_FIRST,
};

/** A `datetime-local` value (the browser's local time) as a Timestamp; unset when empty. */
function localTime(value: string): Timestamp | undefined {
  if (value === "") return undefined;
  const d = new Date(value);
  return Number.isNaN(d.getTime()) ? undefined : timestampFromDate(d);
}

/** The published keys that still verify (a retiring key past `not_after` verifies nothing). */
async function publishedKeys(client: ReturnType<typeof useScope>["client"]): Promise<PublicKey[]> {
  const { keys } = await client.activation.getSigningKeys({});
  const now = BigInt(Math.floor(Date.now() / 1000));
  return keys
    .filter((k) => !k.notAfter || k.notAfter.seconds > now)
    .map((k) => ({ kid: k.kid, publicKey: k.publicKey }));
}

export function Audit() {
  const { client, tenantId } = useScope();
  const [filters, setFilters] = useState<Filters>(NO_FILTERS);
  const [draft, setDraft] = useState<Filters>(NO_FILTERS);
  const events = usePages(
    async (pageToken) => {
      const r = await client.audit.listAuditEvents({
        tenantId,
        subject: filters.subject.trim(),
        typePrefix: filters.typePrefix.trim(),
        actor: filters.actor.trim(),
        startTime: localTime(filters.from),
        endTime: localTime(filters.to),
        order: filters.order,
        pageSize: 50,
        pageToken,
      });
      return { items: r.events, next: r.nextPageToken };
    },
    [tenantId, filters],
  );
  const filtered = Object.entries(filters).some(([k, v]) => k !== "order" && v !== "");
  const set = (k: keyof Filters) => (e: { currentTarget: { value: string } }) =>
    setDraft({ ...draft, [k]: e.currentTarget.value });
  return (
    <Page title="Audit">
      <p class="muted">
        Every change to this tenant's data, in a hash-chained log. The checks below run in your browser against the
        published signing keys, so they do not rely on trusting the server.
      </p>
      <div class="audit-checks">
        <ChainBadge />
        <CheckpointPanel />
      </div>
      <details class="panel" open={filtered}>
        <summary>Filter</summary>
        <form
          class="inline"
          onSubmit={(e) => {
            e.preventDefault();
            setFilters(draft);
          }}
        >
          <Field id="audit-subject" label="Subject">
            <input id="audit-subject" value={draft.subject} placeholder="lic_…" onInput={set("subject")} />
          </Field>
          <Field id="audit-type" label="Type starts with">
            <input id="audit-type" value={draft.typePrefix} placeholder="license." onInput={set("typePrefix")} />
          </Field>
          <Field id="audit-actor" label="Actor">
            <input id="audit-actor" value={draft.actor} placeholder="key:key_…" onInput={set("actor")} />
          </Field>
          <Field id="audit-from" label="From">
            <input id="audit-from" type="datetime-local" value={draft.from} onInput={set("from")} />
          </Field>
          <Field id="audit-to" label="Before">
            <input id="audit-to" type="datetime-local" value={draft.to} onInput={set("to")} />
          </Field>
          <Field id="audit-order" label="Order">
            <select
              id="audit-order"
              value={String(draft.order)}
              onChange={(e) => setDraft({ ...draft, order: Number(e.currentTarget.value) as ListOrder })}
            >
              <option value={String(ListOrder.NEWEST_FIRST)}>Newest first</option>
              <option value={String(ListOrder.OLDEST_FIRST)}>Oldest first</option>
            </select>
          </Field>
          <div class="field">
            <button type="submit">Apply</button>
          </div>
          <div class="field">
            <button
              type="button"
              onClick={() => {
                setDraft(NO_FILTERS);
                setFilters(NO_FILTERS);
              }}
            >
              Clear
            </button>
          </div>
        </form>
      </details>
      <ErrorBox error={events.error} />
      {events.loading && events.items.length === 0 ? (
        <Loading />
      ) : events.items.length === 0 && !events.error ? (
        <Empty>
          {filtered ? (
            <p>No entry matches these filters. Clear them to see the whole log.</p>
          ) : (
            <p>
              The log is empty. Every change made through the API (a product, a license, a webhook endpoint…) writes one
              entry here.
            </p>
          )}
        </Empty>
      ) : (
        <EventTable events={events.items} />
      )}
      <Pager {...events} />
    </Page>
  );
}

/** VerifyAuditChain over the whole log: hashes, links, HMAC signatures and Merkle leaves. */
function ChainBadge() {
  const { client, tenantId } = useScope();
  const chain = useAsync(() => client.audit.verifyAuditChain({ tenantId }), [tenantId]);
  return (
    <section class="check" aria-labelledby="chain-title" aria-live="polite">
      <h2 id="chain-title">Hash chain</h2>
      <ErrorBox error={chain.error} />
      {chain.loading ? (
        <p class="muted">Checking…</p>
      ) : chain.data ? (
        chain.data.valid ? (
          <p data-testid="chain-status">
            <Badge value="verified" /> {String(chain.data.eventsChecked)} entries checked
            {chain.data.eventsChecked > 0n ? ` (seq ${chain.data.startSeq}–${chain.data.endSeq})` : ""}
          </p>
        ) : (
          <p data-testid="chain-status">
            <Badge value="broken" /> at seq {String(chain.data.firstBadSeq)}:{" "}
            {(ChainProblem[chain.data.problem] ?? "").toLowerCase().replace(/_/g, " ")}. {chain.data.detail}
          </p>
        )
      ) : null}
      <button type="button" onClick={chain.reload} disabled={chain.loading}>
        Verify chain again
      </button>
    </section>
  );
}

/** The signed checkpoint (tree head) and its signature, checked with the published keys. */
function CheckpointPanel() {
  const { client, tenantId } = useScope();
  const cp = useAsync(async () => {
    const [{ checkpoint }, keys] = await Promise.all([client.audit.getCheckpoint({ tenantId }), publishedKeys(client)]);
    if (!checkpoint) throw new Error("the server sent no checkpoint");
    return { checkpoint, result: await verifyCheckpoint(checkpoint, keys) };
  }, [tenantId]);
  return (
    <section class="check" aria-labelledby="checkpoint-title" aria-live="polite">
      <h2 id="checkpoint-title">Signed checkpoint</h2>
      <ErrorBox error={cp.error} />
      {cp.loading ? (
        <p class="muted">Fetching…</p>
      ) : cp.data ? (
        <>
          <p data-testid="checkpoint-status">
            <Badge value={cp.data.result.verified ? "verified" : "invalid"} />{" "}
            {cp.data.result.verified ? "signature verified" : PROOF_TEXT[cp.data.result.code]}
          </p>
          <dl class="facts">
            <dt>Tree size</dt>
            <dd>{String(cp.data.checkpoint.treeSize)}</dd>
            <dt>Root</dt>
            <dd>
              <code>{hex(cp.data.checkpoint.rootHash)}</code>
            </dd>
            <dt>Signed</dt>
            <dd>
              {when(cp.data.checkpoint.signTime)} by <code>{cp.data.checkpoint.kid}</code>
            </dd>
          </dl>
        </>
      ) : null}
      <button type="button" onClick={cp.reload} disabled={cp.loading}>
        New checkpoint
      </button>
    </section>
  );
}

type ProofState = { checking: true } | { checking: false; result?: AuditProofResult; error?: unknown; size?: bigint };

function EventTable({ events }: { events: AuditEvent[] }) {
  const { client, tenantId } = useScope();
  const [proofs, setProofs] = useState<Record<string, ProofState>>({});
  /** Fetches a fresh signed checkpoint and the entry's inclusion proof in it, and verifies both here. */
  const verify = async (e: AuditEvent) => {
    setProofs((p) => ({ ...p, [e.id]: { checking: true } }));
    try {
      const [{ checkpoint }, keys] = await Promise.all([
        client.audit.getCheckpoint({ tenantId }),
        publishedKeys(client),
      ]);
      const cp: Checkpoint | undefined = checkpoint;
      if (!cp) throw new Error("the server sent no checkpoint");
      const proof = await client.audit.getInclusionProof({ tenantId, seq: e.seq, treeSize: cp.treeSize });
      const result = await verifyAuditProof({ checkpoint: cp, keys, inclusion: { entry: e, proof } });
      setProofs((p) => ({ ...p, [e.id]: { checking: false, result, size: cp.treeSize } }));
    } catch (error) {
      setProofs((p) => ({ ...p, [e.id]: { checking: false, error } }));
    }
  };
  return (
    <Table
      label="audit entries"
      rows={events}
      columns={[
        { title: "Seq", cell: (e) => String(e.seq) },
        { title: "Time", cell: (e) => <time>{when(e.occurTime)}</time> },
        { title: "Type", cell: (e) => <code>{e.type}</code> },
        { title: "Subject", cell: (e) => <code>{e.subject}</code> },
        { title: "Actor", cell: (e) => e.actor },
        {
          title: "Inclusion proof",
          cell: (e) => {
            const s = proofs[e.id];
            return (
              <span class="proof" aria-live="polite">
                <button
                  type="button"
                  aria-label={`Verify entry ${e.seq}`}
                  disabled={s?.checking}
                  onClick={() => verify(e)}
                >
                  Verify
                </button>{" "}
                {s?.checking ? (
                  <span class="muted">checking…</span>
                ) : s?.error ? (
                  <span class="bad" data-testid={`proof-${e.seq}`}>
                    {errorText(s.error)}
                  </span>
                ) : s?.result ? (
                  <span data-testid={`proof-${e.seq}`}>
                    <Badge value={s.result.verified ? "verified" : "invalid"} />{" "}
                    {s.result.verified
                      ? `in the signed tree of ${s.size} entries`
                      : `${s.result.code}: ${PROOF_TEXT[s.result.code]}`}
                  </span>
                ) : null}
              </span>
            );
          },
        },
      ]}
    />
  );
}
