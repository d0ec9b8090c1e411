import { create } from "@bufbuild/protobuf";
import { type Duration, DurationSchema } from "@bufbuild/protobuf/wkt";
import type { Entitlement, ModelTier as ModelTierT } from "@licensd/client/gen/licensd/licensing/v1/policy_pb.js";
import { ModelTier } from "@licensd/client/gen/licensd/licensing/v1/policy_pb.js";
import {
  ComposeStrategy,
  type FeatureDefinition,
  FeatureKind,
} from "@licensd/client/gen/licensd/licensing/v1/product_pb.js";
import { useState } from "preact/hooks";
import { ErrorBox, useAction } from "../ui";
import "./catalog.css";

/**
 * The row editors the Products, Policies and Customers pages share: a product's features,
 * a policy's entitlements, metadata pairs; and the two-step delete.
 */

let nextRow = 0;
/** A stable key per row so that removing one keeps the others' inputs (and focus) in place. */
const rowKey = () => `r${++nextRow}`;

export interface FeatureRow {
  key: string;
  name: string;
  kind: FeatureKind;
  compose: ComposeStrategy;
  description: string;
}

/** The strategy that fits a kind: limits add up, tiers take the highest, flags OR. */
const COMPOSE_FOR: Record<number, ComposeStrategy> = {
  [FeatureKind.FLAG]: ComposeStrategy.UNION,
  [FeatureKind.LIMIT]: ComposeStrategy.SUM,
  [FeatureKind.TIER]: ComposeStrategy.MAX,
};

export const featureRows = (features: FeatureDefinition[]): FeatureRow[] =>
  features.map((f) => ({ key: rowKey(), name: f.name, kind: f.kind, compose: f.compose, description: f.description }));

export const featuresOf = (rows: FeatureRow[]) =>
  rows.map(({ name, kind, compose, description }) => ({ name: name.trim(), kind, compose, description }));

const KINDS: [FeatureKind, string][] = [
  [FeatureKind.FLAG, "Flag (on or off)"],
  [FeatureKind.LIMIT, "Limit (a number)"],
  [FeatureKind.TIER, "Tier (basic … enterprise)"],
];
const COMPOSES: [ComposeStrategy, string][] = [
  [ComposeStrategy.SUM, "Sum"],
  [ComposeStrategy.MAX, "Highest"],
  [ComposeStrategy.UNION, "Union / first set"],
];

export const kindName = (k: FeatureKind) => (FeatureKind[k] ?? String(k)).toLowerCase();

/** The product's features: a row each (name, kind, how values combine, description). */
export function FeatureEditor({
  rows,
  onChange,
  idPrefix,
}: {
  rows: FeatureRow[];
  onChange: (rows: FeatureRow[]) => void;
  idPrefix: string;
}) {
  const set = (i: number, patch: Partial<FeatureRow>) =>
    onChange(rows.map((r, j) => (i === j ? { ...r, ...patch } : r)));
  return (
    <fieldset class="rows">
      <legend>Features</legend>
      {rows.length === 0 ? <p class="muted">No features: add the ones its plans will entitle.</p> : null}
      {rows.map((r, i) => {
        const id = `${idPrefix}-feature-${r.key}`;
        return (
          <fieldset class="row" key={r.key} aria-label={`Feature ${i + 1}`}>
            <div class="cell">
              <label for={`${id}-name`}>Name</label>
              <input
                id={`${id}-name`}
                value={r.name}
                required
                placeholder="reports"
                onInput={(e) => set(i, { name: e.currentTarget.value })}
              />
            </div>
            <div class="cell">
              <label for={`${id}-kind`}>Kind</label>
              <select
                id={`${id}-kind`}
                value={String(r.kind)}
                onChange={(e) => {
                  const kind = Number(e.currentTarget.value) as FeatureKind;
                  set(i, { kind, compose: COMPOSE_FOR[kind] ?? r.compose });
                }}
              >
                {KINDS.map(([k, label]) => (
                  <option key={k} value={String(k)}>
                    {label}
                  </option>
                ))}
              </select>
            </div>
            <div class="cell">
              <label for={`${id}-compose`}>Across licenses</label>
              <select
                id={`${id}-compose`}
                value={String(r.compose)}
                onChange={(e) => set(i, { compose: Number(e.currentTarget.value) as ComposeStrategy })}
              >
                {COMPOSES.map(([c, label]) => (
                  <option key={c} value={String(c)}>
                    {label}
                  </option>
                ))}
              </select>
            </div>
            <div class="cell grow">
              <label for={`${id}-description`}>Description</label>
              <input
                id={`${id}-description`}
                value={r.description}
                onInput={(e) => set(i, { description: e.currentTarget.value })}
              />
            </div>
            <button type="button" class="danger" onClick={() => onChange(rows.filter((_, j) => j !== i))}>
              Remove feature {i + 1}
            </button>
          </fieldset>
        );
      })}
      <button
        type="button"
        onClick={() =>
          onChange([
            ...rows,
            { key: rowKey(), name: "", kind: FeatureKind.FLAG, compose: ComposeStrategy.UNION, description: "" },
          ])
        }
      >
        Add feature
      </button>
    </fieldset>
  );
}

export interface EntitlementRow {
  key: string;
  feature: string;
  enabled: boolean;
  limit: string;
  tier: ModelTierT;
}

const TIERS: [ModelTierT, string][] = [
  [ModelTier.BASIC, "Basic"],
  [ModelTier.STANDARD, "Standard"],
  [ModelTier.PREMIUM, "Premium"],
  [ModelTier.ENTERPRISE, "Enterprise"],
];

export const entitlementRows = (list: Entitlement[]): EntitlementRow[] =>
  list.map((e) => ({
    key: rowKey(),
    feature: e.feature,
    enabled: e.value.case === "enabled" ? e.value.value : true,
    limit: e.value.case === "limit" ? String(e.value.value) : "",
    tier: e.value.case === "tier" ? e.value.value : ModelTier.BASIC,
  }));

/** The entitlements as the API takes them: the value that matches the feature's kind. */
export function entitlementsOf(rows: EntitlementRow[], features: FeatureDefinition[]) {
  const kinds = new Map(features.map((f) => [f.name, f.kind]));
  return rows.map((r) => {
    const kind = kinds.get(r.feature);
    if (kind === FeatureKind.LIMIT) {
      const limit = /^-?\d+$/.test(r.limit.trim()) ? BigInt(r.limit.trim()) : 0n;
      return { feature: r.feature, value: { case: "limit" as const, value: limit } };
    }
    if (kind === FeatureKind.TIER) return { feature: r.feature, value: { case: "tier" as const, value: r.tier } };
    return { feature: r.feature, value: { case: "enabled" as const, value: r.enabled } };
  });
}

export function entitlementText(e: Entitlement): string {
  switch (e.value.case) {
    case "enabled":
      return `${e.feature}: ${e.value.value ? "on" : "off"}`;
    case "limit":
      return `${e.feature}: ${e.value.value}`;
    case "tier":
      return `${e.feature}: ${(ModelTier[e.value.value] ?? "").toLowerCase()}`;
    default:
      return e.feature;
  }
}

/** A policy's entitlements: one row per feature of its product, the value input typed by the feature's kind. */
export function EntitlementEditor({
  rows,
  onChange,
  features,
  idPrefix,
}: {
  rows: EntitlementRow[];
  onChange: (rows: EntitlementRow[]) => void;
  features: FeatureDefinition[];
  idPrefix: string;
}) {
  const set = (i: number, patch: Partial<EntitlementRow>) =>
    onChange(rows.map((r, j) => (i === j ? { ...r, ...patch } : r)));
  const kinds = new Map(features.map((f) => [f.name, f.kind]));
  const unused = features.filter((f) => !rows.some((r) => r.feature === f.name));
  return (
    <fieldset class="rows">
      <legend>Entitlements</legend>
      {features.length === 0 ? (
        <p class="muted">The product defines no features yet: add them on the product's page first.</p>
      ) : rows.length === 0 ? (
        <p class="muted">No entitlements: add the features this plan grants.</p>
      ) : null}
      {rows.map((r, i) => {
        const id = `${idPrefix}-ent-${r.key}`;
        const kind = kinds.get(r.feature);
        return (
          <fieldset class="row" key={r.key} aria-label={`Entitlement ${i + 1}`}>
            <div class="cell">
              <label for={`${id}-feature`}>Feature</label>
              <select
                id={`${id}-feature`}
                value={r.feature}
                onChange={(e) => set(i, { feature: e.currentTarget.value })}
              >
                {kind === undefined ? <option value={r.feature}>{r.feature} (not defined)</option> : null}
                {features
                  .filter((f) => f.name === r.feature || unused.includes(f))
                  .map((f) => (
                    <option key={f.name} value={f.name}>
                      {f.name} ({kindName(f.kind)})
                    </option>
                  ))}
              </select>
            </div>
            {kind === FeatureKind.LIMIT ? (
              <div class="cell">
                <label for={`${id}-limit`}>Limit</label>
                <input
                  id={`${id}-limit`}
                  type="number"
                  inputMode="numeric"
                  step="1"
                  min="0"
                  required
                  value={r.limit}
                  onInput={(e) => set(i, { limit: e.currentTarget.value })}
                />
              </div>
            ) : kind === FeatureKind.TIER ? (
              <div class="cell">
                <label for={`${id}-tier`}>Tier</label>
                <select
                  id={`${id}-tier`}
                  value={String(r.tier)}
                  onChange={(e) => set(i, { tier: Number(e.currentTarget.value) as ModelTierT })}
                >
                  {TIERS.map(([t, label]) => (
                    <option key={t} value={String(t)}>
                      {label}
                    </option>
                  ))}
                </select>
              </div>
            ) : (
              <div class="cell check">
                <input
                  id={`${id}-enabled`}
                  type="checkbox"
                  checked={r.enabled}
                  onChange={(e) => set(i, { enabled: e.currentTarget.checked })}
                />
                <label for={`${id}-enabled`}>Enabled</label>
              </div>
            )}
            <button type="button" class="danger" onClick={() => onChange(rows.filter((_, j) => j !== i))}>
              Remove entitlement {i + 1}
            </button>
          </fieldset>
        );
      })}
      {unused.length > 0 ? (
        <button
          type="button"
          onClick={() =>
            onChange([
              ...rows,
              { key: rowKey(), feature: unused[0]!.name, enabled: true, limit: "", tier: ModelTier.BASIC },
            ])
          }
        >
          Add entitlement
        </button>
      ) : null}
    </fieldset>
  );
}

export interface MetadataRow {
  key: string;
  name: string;
  value: string;
}

export const metadataRows = (m: Record<string, string>): MetadataRow[] =>
  Object.entries(m).map(([name, value]) => ({ key: rowKey(), name, value }));

export const metadataOf = (rows: MetadataRow[]): Record<string, string> =>
  Object.fromEntries(rows.filter((r) => r.name.trim() !== "").map((r) => [r.name.trim(), r.value]));

/** Free-form labels: key/value rows. */
export function MetadataEditor({
  rows,
  onChange,
  idPrefix,
}: {
  rows: MetadataRow[];
  onChange: (rows: MetadataRow[]) => void;
  idPrefix: string;
}) {
  const set = (i: number, patch: Partial<MetadataRow>) =>
    onChange(rows.map((r, j) => (i === j ? { ...r, ...patch } : r)));
  return (
    <fieldset class="rows">
      <legend>Metadata</legend>
      {rows.map((r, i) => {
        const id = `${idPrefix}-meta-${r.key}`;
        return (
          <fieldset class="row" key={r.key} aria-label={`Metadata ${i + 1}`}>
            <div class="cell">
              <label for={`${id}-key`}>Key</label>
              <input id={`${id}-key`} value={r.name} onInput={(e) => set(i, { name: e.currentTarget.value })} />
            </div>
            <div class="cell grow">
              <label for={`${id}-value`}>Value</label>
              <input id={`${id}-value`} value={r.value} onInput={(e) => set(i, { value: e.currentTarget.value })} />
            </div>
            <button type="button" class="danger" onClick={() => onChange(rows.filter((_, j) => j !== i))}>
              Remove metadata {i + 1}
            </button>
          </fieldset>
        );
      })}
      <button type="button" onClick={() => onChange([...rows, { key: rowKey(), name: "", value: "" }])}>
        Add metadata
      </button>
    </fieldset>
  );
}

export function MetadataList({ metadata }: { metadata: Record<string, string> }) {
  const entries = Object.entries(metadata);
  if (entries.length === 0) return <span class="muted">—</span>;
  return (
    <ul class="plain">
      {entries.map(([k, v]) => (
        <li key={k}>
          <code>{k}</code> = {v}
        </li>
      ))}
    </ul>
  );
}

/** Delete in two steps: the button asks, the confirmation does it. */
export function DeleteButton({ what, onDelete }: { what: string; onDelete: () => Promise<unknown> }) {
  const [asking, setAsking] = useState(false);
  const action = useAction();
  if (!asking)
    return (
      <button type="button" class="danger" onClick={() => setAsking(true)}>
        Delete {what}
      </button>
    );
  return (
    <fieldset class="confirm">
      <legend>Delete {what}? This cannot be undone.</legend>
      <button type="button" class="danger" disabled={action.busy} onClick={() => action.run(onDelete)}>
        Yes, delete {what}
      </button>
      <button
        type="button"
        onClick={() => {
          action.clear();
          setAsking(false);
        }}
      >
        Cancel
      </button>
      <ErrorBox error={action.error} />
    </fieldset>
  );
}

/** A duration typed in whole units ("" for unset) ⇄ the API's Duration. */
export function durationOf(text: string, unitSeconds: number): Duration | undefined {
  const t = text.trim();
  if (t === "") return undefined;
  const n = Number(t);
  return create(DurationSchema, { seconds: BigInt(Math.round((Number.isFinite(n) ? n : 0) * unitSeconds)) });
}

export function durationText(d: Duration | undefined, unitSeconds: number): string {
  if (!d) return "";
  return String(Number(d.seconds) / unitSeconds);
}

/** Two values the same as the API would see them (bigints included). */
export const same = (a: unknown, b: unknown) =>
  JSON.stringify(a, (_, v) => (typeof v === "bigint" ? v.toString() : v)) ===
  JSON.stringify(b, (_, v) => (typeof v === "bigint" ? v.toString() : v));
