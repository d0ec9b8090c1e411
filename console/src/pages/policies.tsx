import {
  ComponentMatchingStrategy,
  ExpirationBasis,
  ExpirationStrategy,
  HeartbeatBasis,
  HeartbeatCullStrategy,
  MachineUniquenessScope,
  OverageStrategy,
  ProcessLeasingStrategy,
  RenewalBasis,
  TransferStrategy,
  type Policy,
} from "@licensd/client/gen/licensd/licensing/v1/policy_pb.js";
import type { Product } from "@licensd/client/gen/licensd/licensing/v1/product_pb.js";
import { useState } from "preact/hooks";
import { go, href } from "../router";
import {
  Empty,
  ErrorBox,
  Field,
  Loading,
  Page,
  Pager,
  Table,
  useAction,
  useAsync,
  usePages,
  useScope,
  when,
} from "../ui";
import {
  DeleteButton,
  durationOf,
  durationText,
  EntitlementEditor,
  type EntitlementRow,
  entitlementRows,
  entitlementsOf,
  entitlementText,
  MetadataEditor,
  MetadataList,
  type MetadataRow,
  metadataOf,
  metadataRows,
  same,
} from "./catalog-editors";

const DAY = 86_400;
const MINUTE = 60;

/** Policies: a product's plans (what its licenses entitle, how long, on how many machines). */
export function Policies({ params }: { params: string[] }) {
  const { client, tenantId } = useScope();
  // The products, for the product picker and the list's product column (one page of 1,000).
  const products = useAsync(
    async () => (await client.licensing.listProducts({ tenantId, pageSize: 1000 })).products,
    [tenantId],
  );
  if (products.error) return <ErrorBox error={products.error} />;
  if (!products.data) return <Loading />;
  return params[0] ? <PolicyDetail id={params[0]} products={products.data} /> : <PolicyList products={products.data} />;
}

function PolicyList({ products }: { products: Product[] }) {
  const { client, tenantId } = useScope();
  const [creating, setCreating] = useState(false);
  const [productId, setProductId] = useState("");
  const list = usePages(
    async (pageToken) => {
      const r = await client.licensing.listPolicies({ tenantId, productId, pageToken });
      return { items: r.policies, next: r.nextPageToken };
    },
    [tenantId, productId],
  );
  const byId = new Map(products.map((p) => [p.id, p]));
  return (
    <Page
      title="Policies"
      actions={
        creating || products.length === 0 ? null : (
          <button type="button" class="primary" onClick={() => setCreating(true)}>
            New policy
          </button>
        )
      }
    >
      {products.length === 0 ? (
        <Empty>
          <p>
            Policies belong to a product, and there is none yet — <a href={href("products")}>create a product</a> first.
          </p>
        </Empty>
      ) : (
        <>
          {creating ? (
            <PolicyForm
              products={products}
              onCancel={() => setCreating(false)}
              onSaved={() => {
                setCreating(false);
                list.reload();
              }}
            />
          ) : null}
          <div class="field">
            <label for="policy-filter">Show policies of</label>
            <select id="policy-filter" value={productId} onChange={(e) => setProductId(e.currentTarget.value)}>
              <option value="">All products</option>
              {products.map((p) => (
                <option key={p.id} value={p.id}>
                  {p.name} ({p.code})
                </option>
              ))}
            </select>
          </div>
          <ErrorBox error={list.error} />
          {list.loading && !list.data ? (
            <Loading />
          ) : list.items.length === 0 && !list.error ? (
            <Empty>
              <p>No policies yet — create one to set what a plan's licenses entitle.</p>
            </Empty>
          ) : (
            <Table<Policy>
              label="Policies"
              rows={list.items}
              columns={[
                { title: "Name", cell: (p) => <a href={href("policies", p.id)}>{p.name}</a> },
                { title: "Product", cell: (p) => byId.get(p.productId)?.name ?? p.productId },
                {
                  title: "Duration",
                  cell: (p) => (p.duration ? `${durationText(p.duration, DAY)} days` : "perpetual"),
                },
                { title: "Machines", cell: (p) => (p.maxMachines === 0 ? "unlimited" : String(p.maxMachines)) },
                { title: "Floating", cell: (p) => (p.floating ? "yes" : "no") },
                {
                  title: "Entitlements",
                  cell: (p) => (p.allFeatures ? "all features" : p.entitlements.map(entitlementText).join(", ") || "—"),
                },
              ]}
            />
          )}
          <Pager {...list} />
        </>
      )}
    </Page>
  );
}

function PolicyDetail({ id, products }: { id: string; products: Product[] }) {
  const { client, tenantId } = useScope();
  const policy = useAsync(async () => (await client.licensing.getPolicy({ tenantId, id })).policy, [tenantId, id]);
  const [editing, setEditing] = useState(false);
  const p = policy.data;
  const product = products.find((x) => x.id === p?.productId);
  const dur = (d: Policy["duration"], unit: number, word: string, unset: string) =>
    d ? `${durationText(d, unit)} ${word}` : unset;
  return (
    <Page title={p ? `Policy ${p.name}` : "Policy"} actions={<a href={href("policies")}>← All policies</a>}>
      <ErrorBox error={policy.error} />
      {policy.loading && !p ? <Loading /> : null}
      {p ? (
        <>
          <dl class="facts">
            <dt>Id</dt>
            <dd>
              <code>{p.id}</code>
            </dd>
            <dt>Product</dt>
            <dd>
              <a href={href("products", p.productId)}>{product?.name ?? p.productId}</a>
            </dd>
            <dt>Duration</dt>
            <dd>{dur(p.duration, DAY, "days", "perpetual")}</dd>
            <dt>Max machines</dt>
            <dd>{p.maxMachines === 0 ? "unlimited" : p.maxMachines}</dd>
            <dt>Floating</dt>
            <dd>{p.floating ? "yes" : "no (node-locked)"}</dd>
            <dt>Max users</dt>
            <dd>{p.maxUsers === 0 ? "unlimited" : p.maxUsers}</dd>
            <dt>Machine fingerprint</dt>
            <dd data-testid="policy-machine-uniqueness">
              {UNIQUENESS_SCOPES.find(([s]) => s === p.machineUniquenessScope)?.[1] ?? UNIQUENESS_SCOPES[0]![1]}
            </dd>
            <dt>Max cores</dt>
            <dd data-testid="policy-max-cores">{p.maxCores === 0 ? "unlimited" : p.maxCores}</dd>
            <dt>User scope</dt>
            <dd>{p.requireUserScope ? "required" : "checked when the license has users"}</dd>
            <dt>Max processes</dt>
            <dd data-testid="policy-max-processes">
              {p.maxProcesses === 0
                ? "unlimited"
                : `${p.maxProcesses} per ${p.processLeasingStrategy === ProcessLeasingStrategy.PER_LICENSE ? "license" : "machine"}`}
            </dd>
            <dt>Process heartbeat</dt>
            <dd>{`every ${p.processHeartbeatDuration ? durationText(p.processHeartbeatDuration, MINUTE) : "10"} minutes`}</dd>
            <dt>Components</dt>
            <dd data-testid="policy-components">
              {`${COMPONENT_MATCHINGS.find(([m]) => m === p.componentMatchingStrategy)?.[1] ?? "Match any one"}; `}
              {p.requireComponentsScope ? "required" : "checked when the machine has components"}
            </dd>
            <dt>Heartbeat</dt>
            <dd>
              {p.heartbeatDuration
                ? `every ${dur(p.heartbeatDuration, MINUTE, "minutes", "")}, grace ${dur(p.heartbeatGracePeriod, MINUTE, "minutes", "0 minutes")}`
                : "not required"}
            </dd>
            <dt>Expiry starts</dt>
            <dd data-testid="policy-expiration-basis">
              {EXPIRATION_BASES.find(([b]) => b === p.expirationBasis)?.[1] ?? "At creation"}
            </dd>
            <dt>Entitlements</dt>
            <dd>{p.allFeatures ? "all features" : p.entitlements.map(entitlementText).join(", ") || "none"}</dd>
            <dt>Metadata</dt>
            <dd>
              <MetadataList metadata={p.metadata} />
            </dd>
            <dt>Updated</dt>
            <dd>{when(p.updateTime)}</dd>
          </dl>
          {editing ? (
            <PolicyForm
              policy={p}
              products={products}
              onCancel={() => setEditing(false)}
              onSaved={() => {
                setEditing(false);
                policy.reload();
              }}
            />
          ) : (
            <div>
              <button type="button" class="primary" onClick={() => setEditing(true)}>
                Edit policy
              </button>{" "}
              <DeleteButton
                what={`policy ${p.name}`}
                onDelete={async () => {
                  await client.licensing.deletePolicy({ tenantId, id: p.id });
                  go("policies");
                }}
              />
            </div>
          )}
        </>
      ) : null}
    </Page>
  );
}

/** The form's values as typed; durations as text in whole units, "" for unset. */
interface PolicyValues {
  name: string;
  duration: string;
  maxMachines: string;
  maxUsers: string;
  floating: boolean;
  heartbeatDuration: string;
  heartbeatGracePeriod: string;
  heartbeatCullStrategy: HeartbeatCullStrategy;
  expirationStrategy: ExpirationStrategy;
  gracePeriod: string;
  overageStrategy: OverageStrategy;
  allFeatures: boolean;
  expirationBasis: ExpirationBasis;
  heartbeatBasis: HeartbeatBasis;
  renewalBasis: RenewalBasis;
  transferStrategy: TransferStrategy;
  requireUserScope: boolean;
  maxProcesses: string;
  processLeasingStrategy: ProcessLeasingStrategy;
  processHeartbeatDuration: string;
  machineUniquenessScope: MachineUniquenessScope;
  maxCores: string;
  componentMatchingStrategy: ComponentMatchingStrategy;
  requireComponentsScope: boolean;
}

const valuesOf = (p?: Policy): PolicyValues => ({
  name: p?.name ?? "",
  duration: durationText(p?.duration, DAY),
  maxMachines: String(p?.maxMachines ?? 0),
  maxUsers: String(p?.maxUsers ?? 0),
  floating: p?.floating ?? false,
  heartbeatDuration: durationText(p?.heartbeatDuration, MINUTE),
  heartbeatGracePeriod: durationText(p?.heartbeatGracePeriod, MINUTE),
  heartbeatCullStrategy: p?.heartbeatCullStrategy ?? HeartbeatCullStrategy.DEACTIVATE_DEAD,
  expirationStrategy: p?.expirationStrategy ?? ExpirationStrategy.RESTRICT_ACCESS,
  gracePeriod: durationText(p?.gracePeriod, DAY),
  overageStrategy: p?.overageStrategy ?? OverageStrategy.NO_OVERAGE,
  allFeatures: p?.allFeatures ?? false,
  expirationBasis: p?.expirationBasis ?? ExpirationBasis.FROM_CREATION,
  heartbeatBasis: p?.heartbeatBasis ?? HeartbeatBasis.FROM_ACTIVATION,
  renewalBasis: p?.renewalBasis ?? RenewalBasis.FROM_NOW_IF_EXPIRED,
  transferStrategy: p?.transferStrategy ?? TransferStrategy.KEEP_EXPIRY,
  requireUserScope: p?.requireUserScope ?? false,
  maxProcesses: String(p?.maxProcesses ?? 0),
  processLeasingStrategy: p?.processLeasingStrategy || ProcessLeasingStrategy.PER_MACHINE,
  processHeartbeatDuration: durationText(p?.processHeartbeatDuration, MINUTE),
  machineUniquenessScope: p?.machineUniquenessScope ?? MachineUniquenessScope.LICENSE,
  maxCores: String(p?.maxCores ?? 0),
  componentMatchingStrategy: p?.componentMatchingStrategy ?? ComponentMatchingStrategy.MATCH_ANY,
  requireComponentsScope: p?.requireComponentsScope ?? false,
});

/** The update mask's path for each form value. */
const PATHS: Record<keyof PolicyValues, string> = {
  name: "name",
  duration: "duration",
  maxMachines: "max_machines",
  maxUsers: "max_users",
  floating: "floating",
  heartbeatDuration: "heartbeat_duration",
  heartbeatGracePeriod: "heartbeat_grace_period",
  heartbeatCullStrategy: "heartbeat_cull_strategy",
  expirationStrategy: "expiration_strategy",
  gracePeriod: "grace_period",
  overageStrategy: "overage_strategy",
  requireUserScope: "require_user_scope",
  componentMatchingStrategy: "component_matching_strategy",
  requireComponentsScope: "require_components_scope",
  allFeatures: "all_features",
  expirationBasis: "expiration_basis",
  heartbeatBasis: "heartbeat_basis",
  renewalBasis: "renewal_basis",
  transferStrategy: "transfer_strategy",
  maxProcesses: "max_processes",
  processLeasingStrategy: "process_leasing_strategy",
  processHeartbeatDuration: "process_heartbeat_duration",
  machineUniquenessScope: "machine_uniqueness_scope",
  maxCores: "max_cores",
};

const int = (s: string) => (s.trim() === "" ? 0 : Number(s));

const EXPIRATIONS: [ExpirationStrategy, string][] = [
  [ExpirationStrategy.RESTRICT_ACCESS, "Restrict access (validation fails)"],
  [ExpirationStrategy.REVOKE_ACCESS, "Revoke access (and revoke the license)"],
  [ExpirationStrategy.MAINTAIN_ACCESS, "Maintain access (no new machines)"],
  [ExpirationStrategy.ALLOW_ACCESS, "Allow access (everything continues)"],
];
const OVERAGES: [OverageStrategy, string][] = [
  [OverageStrategy.NO_OVERAGE, "No overage"],
  [OverageStrategy.ALLOW_1_25X, "Up to 1.25 × the limit"],
  [OverageStrategy.ALLOW_1_5X, "Up to 1.5 × the limit"],
  [OverageStrategy.ALLOW_2X, "Up to 2 × the limit"],
  [OverageStrategy.ALWAYS, "Always (flagged)"],
];
const CULLS: [HeartbeatCullStrategy, string][] = [
  [HeartbeatCullStrategy.DEACTIVATE_DEAD, "Deactivate dead machines"],
  [HeartbeatCullStrategy.KEEP_DEAD, "Keep dead machines"],
];

const EXPIRATION_BASES: [ExpirationBasis, string][] = [
  [ExpirationBasis.FROM_CREATION, "At creation"],
  [ExpirationBasis.FROM_FIRST_ACTIVATION, "At the first activation"],
  [ExpirationBasis.FROM_FIRST_VALIDATION, "At the first validation"],
  [ExpirationBasis.FROM_FIRST_USE, "At the first usage event"],
];
const HEARTBEAT_BASES: [HeartbeatBasis, string][] = [
  [HeartbeatBasis.FROM_ACTIVATION, "From activation"],
  [HeartbeatBasis.FROM_FIRST_HEARTBEAT, "From the first heartbeat"],
];
const RENEWAL_BASES: [RenewalBasis, string][] = [
  [RenewalBasis.FROM_NOW_IF_EXPIRED, "From the expiry, or now if past"],
  [RenewalBasis.FROM_EXPIRY, "From the expiry, even past"],
  [RenewalBasis.FROM_NOW, "From now"],
];
const PROCESS_LEASINGS: [ProcessLeasingStrategy, string][] = [
  [ProcessLeasingStrategy.PER_MACHINE, "Per machine"],
  [ProcessLeasingStrategy.PER_LICENSE, "Per license (all its machines)"],
];

const UNIQUENESS_SCOPES: [MachineUniquenessScope, string][] = [
  [MachineUniquenessScope.LICENSE, "Unique per license"],
  [MachineUniquenessScope.POLICY, "Unique per policy"],
  [MachineUniquenessScope.PRODUCT, "Unique per product"],
  [MachineUniquenessScope.TENANT, "Unique per account"],
];

const COMPONENT_MATCHINGS: [ComponentMatchingStrategy, string][] = [
  [ComponentMatchingStrategy.MATCH_ANY, "Match any one"],
  [ComponentMatchingStrategy.MATCH_TWO, "Match two"],
  [ComponentMatchingStrategy.MATCH_MOST, "Match most (more than half)"],
  [ComponentMatchingStrategy.MATCH_ALL, "Match all"],
];
const TRANSFERS: [TransferStrategy, string][] = [
  [TransferStrategy.KEEP_EXPIRY, "Keep the expiry"],
  [TransferStrategy.RESET_EXPIRY, "Start the expiry again"],
];

function PolicyForm({
  policy,
  products,
  onSaved,
  onCancel,
}: {
  policy?: Policy;
  products: Product[];
  onSaved: () => void;
  onCancel: () => void;
}) {
  const { client, tenantId } = useScope();
  const [productId, setProductId] = useState(policy?.productId ?? products[0]?.id ?? "");
  const [v, setV] = useState<PolicyValues>(() => valuesOf(policy));
  const [entitlements, setEntitlements] = useState<EntitlementRow[]>(() => entitlementRows(policy?.entitlements ?? []));
  const [metadata, setMetadata] = useState<MetadataRow[]>(() => metadataRows(policy?.metadata ?? {}));
  const action = useAction();
  const set = (patch: Partial<PolicyValues>) => setV({ ...v, ...patch });
  const features = products.find((p) => p.id === productId)?.features ?? [];
  const idp = policy ? "edit-policy" : "new-policy";
  const text = (k: keyof PolicyValues, label: string, hint?: string) => (
    <Field id={`${idp}-${k}`} label={label} hint={hint}>
      <input
        id={`${idp}-${k}`}
        type="number"
        step="any"
        min="0"
        aria-describedby={hint ? `${idp}-${k}-hint` : undefined}
        value={String(v[k])}
        onInput={(e) => set({ [k]: e.currentTarget.value })}
      />
    </Field>
  );
  const choice = <E extends number>(k: keyof PolicyValues, label: string, options: [E, string][]) => (
    <Field id={`${idp}-${k}`} label={label}>
      <select id={`${idp}-${k}`} value={String(v[k])} onChange={(e) => set({ [k]: Number(e.currentTarget.value) })}>
        {options.map(([o, l]) => (
          <option key={o} value={String(o)}>
            {l}
          </option>
        ))}
      </select>
    </Field>
  );
  return (
    <form
      class="catalog"
      aria-label={policy ? "Edit policy" : "New policy"}
      onSubmit={async (e) => {
        e.preventDefault();
        const body = {
          tenantId,
          name: v.name.trim(),
          duration: durationOf(v.duration, DAY),
          maxMachines: int(v.maxMachines),
          maxUsers: int(v.maxUsers),
          floating: v.floating,
          heartbeatDuration: durationOf(v.heartbeatDuration, MINUTE),
          heartbeatGracePeriod: durationOf(v.heartbeatGracePeriod, MINUTE),
          heartbeatCullStrategy: v.heartbeatCullStrategy,
          expirationStrategy: v.expirationStrategy,
          gracePeriod: durationOf(v.gracePeriod, DAY),
          overageStrategy: v.overageStrategy,
          allFeatures: v.allFeatures,
          expirationBasis: v.expirationBasis,
          heartbeatBasis: v.heartbeatBasis,
          renewalBasis: v.renewalBasis,
          transferStrategy: v.transferStrategy,
          requireUserScope: v.requireUserScope,
          maxProcesses: int(v.maxProcesses),
          processLeasingStrategy: v.processLeasingStrategy,
          processHeartbeatDuration: durationOf(v.processHeartbeatDuration, MINUTE),
          machineUniquenessScope: v.machineUniquenessScope,
          maxCores: int(v.maxCores),
          componentMatchingStrategy: v.componentMatchingStrategy,
          requireComponentsScope: v.requireComponentsScope,
          entitlements: entitlementsOf(entitlements, features),
          metadata: metadataOf(metadata),
        };
        const done = await action.run(async () => {
          if (!policy) return client.licensing.createPolicy({ ...body, productId });
          const before = valuesOf(policy);
          const paths = (Object.keys(PATHS) as (keyof PolicyValues)[])
            .filter((k) => !same(v[k], before[k]))
            .map((k) => PATHS[k]);
          if (!same(body.entitlements, entitlementsOf(entitlementRows(policy.entitlements), features)))
            paths.push("entitlements");
          if (!same(body.metadata, policy.metadata)) paths.push("metadata");
          if (paths.length === 0) return true;
          return client.licensing.updatePolicy({ ...body, id: policy.id, updateMask: { paths } });
        });
        if (done) onSaved();
      }}
    >
      <h2>{policy ? "Edit policy" : "New policy"}</h2>
      <div class="grid">
        {policy ? null : (
          <Field id={`${idp}-product`} label="Product">
            <select
              id={`${idp}-product`}
              value={productId}
              onChange={(e) => {
                setProductId(e.currentTarget.value);
                setEntitlements([]);
              }}
            >
              {products.map((p) => (
                <option key={p.id} value={p.id}>
                  {p.name} ({p.code})
                </option>
              ))}
            </select>
          </Field>
        )}
        <Field id={`${idp}-name`} label="Plan name" hint="e.g. pro: lowercase letters, digits, . _ -">
          <input
            id={`${idp}-name`}
            required
            aria-describedby={`${idp}-name-hint`}
            value={v.name}
            onInput={(e) => set({ name: e.currentTarget.value })}
          />
        </Field>
        {text("duration", "Duration (days)", "Empty for perpetual.")}
        {text("maxMachines", "Max machines", "0 for unlimited.")}
        {text("maxUsers", "Max users", "0 for unlimited.")}
        {text("maxCores", "Max cores", "Total CPU cores of a license's machines; 0 for unlimited.")}
        {choice("machineUniquenessScope", "Machine fingerprint", UNIQUENESS_SCOPES)}
        {text("heartbeatDuration", "Heartbeat every (minutes)", "Empty: machines need not heartbeat.")}
        {text("heartbeatGracePeriod", "Heartbeat grace (minutes)", "Silence allowed past the interval.")}
        {choice("heartbeatCullStrategy", "Dead machines", CULLS)}
        {choice("expirationStrategy", "When expired", EXPIRATIONS)}
        {text("gracePeriod", "Grace after expiry (days)")}
        {choice("overageStrategy", "Usage past a limit", OVERAGES)}
        {choice("expirationBasis", "Expiry starts", EXPIRATION_BASES)}
        {choice("heartbeatBasis", "Heartbeats required", HEARTBEAT_BASES)}
        {choice("renewalBasis", "Renewal extends", RENEWAL_BASES)}
        {choice("transferStrategy", "On transfer", TRANSFERS)}
        {text("maxProcesses", "Max processes", "Running at once; 0 for unlimited.")}
        {choice("processLeasingStrategy", "Processes counted", PROCESS_LEASINGS)}
        {text("processHeartbeatDuration", "Process ping every (minutes)", "Empty: 10 minutes.")}
        {choice("componentMatchingStrategy", "Machine components", COMPONENT_MATCHINGS)}
      </div>
      <div class="field check">
        <input
          id={`${idp}-floating`}
          type="checkbox"
          checked={v.floating}
          onChange={(e) => set({ floating: e.currentTarget.checked })}
        />
        <label for={`${idp}-floating`}>Floating (licenses may move between machines)</label>
      </div>
      <div class="field check">
        <input
          id={`${idp}-all-features`}
          type="checkbox"
          checked={v.allFeatures}
          onChange={(e) => set({ allFeatures: e.currentTarget.checked })}
        />
        <label for={`${idp}-all-features`}>All features of the product</label>
      </div>
      <div class="field check">
        <input
          id={`${idp}-require-user-scope`}
          type="checkbox"
          checked={v.requireUserScope}
          onChange={(e) => set({ requireUserScope: e.currentTarget.checked })}
        />
        <label for={`${idp}-require-user-scope`}>
          Require a user (validation must name one of the license's users)
        </label>
      </div>
      <div class="field check">
        <input
          id={`${idp}-require-components-scope`}
          type="checkbox"
          checked={v.requireComponentsScope}
          onChange={(e) => set({ requireComponentsScope: e.currentTarget.checked })}
        />
        <label for={`${idp}-require-components-scope`}>
          Require components (validation must give the machine's hardware components)
        </label>
      </div>
      <EntitlementEditor rows={entitlements} onChange={setEntitlements} features={features} idPrefix={idp} />
      <MetadataEditor rows={metadata} onChange={setMetadata} idPrefix={idp} />
      <ErrorBox error={action.error} />
      <div class="actions">
        <button type="submit" disabled={action.busy}>
          {policy ? "Save policy" : "Create policy"}
        </button>
        <button type="button" onClick={onCancel}>
          Cancel
        </button>
      </div>
    </form>
  );
}
