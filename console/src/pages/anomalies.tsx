import { type Anomaly, Severity } from "@licensd/client/gen/licensd/usage/v1/usage_pb.js";
import { ResolutionFilter } from "@licensd/client/gen/licensd/usage/v1/usage_service_pb.js";
import { useEffect, useRef, useState } from "preact/hooks";
import { href } from "../router";
import {
  Badge,
  type Column,
  Empty,
  ErrorBox,
  enumName,
  Field,
  Loading,
  Page,
  Pager,
  Table,
  useAction,
  usePages,
  useScope,
  when,
} from "../ui";
import { count } from "./usage";
import "./usage.css";

const LICENSE_ID = /^(lic_[0-9a-z]{26})?$/;
const day = (a: Anomaly) => when(a.day).slice(0, 10);

/**
 * Days of a license's usage (or activations) far from its baseline: filter by severity,
 * resolution and license, page through, resolve one with a note. `#/anomalies/lic_…`
 * opens it filtered on that license.
 */
export function Anomalies({ params }: { params: string[] }) {
  const { client, tenantId } = useScope();
  const [severity, setSeverity] = useState(Severity.UNSPECIFIED);
  const [resolution, setResolution] = useState(ResolutionFilter.UNRESOLVED);
  const [licenseDraft, setLicenseDraft] = useState(params[0] ?? "");
  const [licenseId, setLicenseId] = useState(params[0] ?? "");
  const [resolving, setResolving] = useState<Anomaly>();
  const list = usePages(
    async (pageToken) => {
      const r = await client.usage.listAnomalies({
        tenantId,
        licenseId,
        minSeverity: severity,
        resolution,
        pageSize: 50,
        pageToken,
      });
      return { items: r.anomalies, next: r.nextPageToken };
    },
    [tenantId, licenseId, severity, resolution],
  );
  const draftOk = LICENSE_ID.test(licenseDraft.trim());

  const columns: Column<Anomaly>[] = [
    { title: "Day", cell: (a) => <time>{day(a)}</time> },
    { title: "License", cell: (a) => <a href={href("usage", a.licenseId)}>{a.licenseId}</a> },
    { title: "Metric", cell: (a) => <code>{a.metric}</code> },
    { title: "Value", cell: (a) => count(a.value) },
    { title: "Baseline", cell: (a) => `${a.mean.toFixed(1)} ± ${a.stddev.toFixed(1)}` },
    { title: "z", cell: (a) => (a.zScore === 999 ? "any change from a flat baseline" : a.zScore.toFixed(2)) },
    { title: "Severity", cell: (a) => <Badge value={enumName(Severity, a.severity)} /> },
    {
      title: "Status",
      cell: (a) =>
        a.resolved ? (
          <span class="resolution">
            <Badge value="resolved" />
            <small>
              by {a.resolver}, {when(a.resolveTime)}
            </small>
            {a.resolutionNote ? <q class="note">{a.resolutionNote}</q> : null}
          </span>
        ) : (
          <Badge value="unresolved" />
        ),
    },
    {
      title: "Action",
      cell: (a) =>
        a.resolved ? null : (
          <button
            type="button"
            aria-label={`Resolve ${a.metric} on ${day(a)} for ${a.licenseId}`}
            onClick={() => setResolving(a)}
          >
            Resolve…
          </button>
        ),
    },
  ];

  return (
    <Page title="Anomalies">
      <form
        class="filters"
        aria-label="anomaly filters"
        onSubmit={(e) => {
          e.preventDefault();
          if (draftOk) setLicenseId(licenseDraft.trim());
        }}
      >
        <Field id="anomaly-severity" label="Severity">
          <select
            id="anomaly-severity"
            value={String(severity)}
            onChange={(e) => setSeverity(Number(e.currentTarget.value) as Severity)}
          >
            <option value={String(Severity.UNSPECIFIED)}>any</option>
            <option value={String(Severity.MEDIUM)}>medium and above</option>
            <option value={String(Severity.HIGH)}>high and above</option>
            <option value={String(Severity.CRITICAL)}>critical</option>
          </select>
        </Field>
        <Field id="anomaly-resolution" label="Status">
          <select
            id="anomaly-resolution"
            value={String(resolution)}
            onChange={(e) => setResolution(Number(e.currentTarget.value) as ResolutionFilter)}
          >
            <option value={String(ResolutionFilter.UNRESOLVED)}>unresolved</option>
            <option value={String(ResolutionFilter.RESOLVED)}>resolved</option>
            <option value={String(ResolutionFilter.UNSPECIFIED)}>all</option>
          </select>
        </Field>
        <Field id="anomaly-license" label="License" hint="A license id (lic_…); empty for all.">
          <input
            id="anomaly-license"
            type="text"
            value={licenseDraft}
            aria-invalid={!draftOk}
            aria-describedby="anomaly-license-hint"
            spellcheck={false}
            onInput={(e) => setLicenseDraft(e.currentTarget.value)}
          />
        </Field>
        <div class="field">
          <button type="submit" disabled={!draftOk}>
            Apply
          </button>
        </div>
      </form>
      {resolving ? (
        <ResolveForm
          anomaly={resolving}
          onClose={() => setResolving(undefined)}
          onResolved={() => {
            setResolving(undefined);
            list.reload();
          }}
        />
      ) : null}
      <ErrorBox error={list.error} />
      {list.data && list.items.length === 0 && !list.hasPrevious ? (
        <Empty>
          {resolution === ResolutionFilter.UNRESOLVED && severity === Severity.UNSPECIFIED && licenseId === "" ? (
            <p>
              Nothing to look at: no unresolved anomalies. licensd scores each closed UTC day of every license's usage
              and activations against its previous 30 days and lists the days far off here; run detection for a day with{" "}
              <code>licensd anomaly detect</code>.
            </p>
          ) : (
            <p>No anomalies match these filters. Pick “all” under Status or “any” severity, or clear the license.</p>
          )}
        </Empty>
      ) : list.data ? (
        <>
          <Table label="anomalies" columns={columns} rows={list.items} />
          <Pager {...list} />
        </>
      ) : list.loading ? (
        <Loading />
      ) : null}
    </Page>
  );
}

function ResolveForm({
  anomaly,
  onClose,
  onResolved,
}: {
  anomaly: Anomaly;
  onClose: () => void;
  onResolved: () => void;
}) {
  const { client, tenantId } = useScope();
  const [note, setNote] = useState("");
  const action = useAction();
  const field = useRef<HTMLTextAreaElement>(null);
  useEffect(() => field.current?.focus(), [anomaly.id]);
  return (
    <form
      class="resolve-form"
      aria-labelledby="resolve-title"
      onSubmit={async (e) => {
        e.preventDefault();
        const done = await action.run(() =>
          client.usage.resolveAnomaly({ tenantId, id: anomaly.id, note: note.trim() }),
        );
        if (done) onResolved();
      }}
      onKeyDown={(e) => e.key === "Escape" && onClose()}
    >
      <h2 id="resolve-title">
        Resolve {anomaly.metric} on {day(anomaly)}
      </h2>
      <p class="muted">
        {anomaly.licenseId}: {count(anomaly.value)} against a baseline of {anomaly.mean.toFixed(1)}.
      </p>
      <Field
        id="resolve-note"
        label="Note"
        hint="What was found or done; kept with the anomaly (up to 2000 characters)."
      >
        <textarea
          id="resolve-note"
          ref={field}
          rows={3}
          maxLength={2000}
          value={note}
          aria-describedby="resolve-note-hint"
          onInput={(e) => setNote(e.currentTarget.value)}
        />
      </Field>
      <ErrorBox error={action.error} />
      <div class="actions">
        <button type="submit" disabled={action.busy}>
          Resolve
        </button>
        <button type="button" onClick={onClose}>
          Cancel
        </button>
      </div>
    </form>
  );
}
