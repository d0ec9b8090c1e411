import { type Machine, MachineStatus } from "@licensd/client/gen/licensd/activation/v1/machine_pb.js";
import { type Process, ProcessStatus } from "@licensd/client/gen/licensd/activation/v1/process_pb.js";
import type { ComponentChildren } from "preact";
import { useState } from "preact/hooks";
import { href } from "../router";
import {
  Badge,
  Empty,
  ErrorBox,
  Field,
  enumName,
  Loading,
  Page,
  Pager,
  Table,
  useAction,
  usePages,
  useScope,
  when,
} from "../ui";

const STATUSES = ["ALIVE", "DEAD"] as const;

export function Machines() {
  const [status, setStatus] = useState("");
  return (
    <Page title="Machines">
      <form class="inline filters" aria-label="filters" onSubmit={(e) => e.preventDefault()}>
        <Field id="machine-status" label="Status">
          <select id="machine-status" value={status} onChange={(e) => setStatus(e.currentTarget.value)}>
            <option value="">Any</option>
            {STATUSES.map((s) => (
              <option key={s} value={s}>
                {s.toLowerCase()}
              </option>
            ))}
          </select>
        </Field>
      </form>
      <MachineTable
        status={status ? MachineStatus[status as (typeof STATUSES)[number]] : MachineStatus.UNSPECIFIED}
        showLicense
        emptyText={
          status
            ? "No machine in this status. Set Status back to “Any” to see them all."
            : "No machine is activated yet. Machines appear here when the SDK activates a license key on a device (ActivationService Activate)."
        }
      />
    </Page>
  );
}

/** A machine's hardware components (registered when it was activated): how many, and each name with its fingerprint. */
function Components({ machine }: { machine: Machine }) {
  if (machine.components.length === 0) return <>—</>;
  return (
    <details data-testid="machine-components">
      <summary>
        {machine.components.length} {machine.components.length === 1 ? "component" : "components"}
      </summary>
      <ul>
        {machine.components.map((c) => (
          <li key={c.name}>
            {c.name}: <code>{c.fingerprint}</code>
          </li>
        ))}
      </ul>
    </details>
  );
}

/**
 * Machines, page by page, with their actions: Deactivate frees the seat the way the device
 * itself would; Delete removes the record (it also frees the seat).
 */
export function MachineTable({
  licenseId = "",
  status = MachineStatus.UNSPECIFIED,
  showLicense = false,
  emptyText,
}: {
  licenseId?: string;
  status?: MachineStatus;
  showLicense?: boolean;
  emptyText: ComponentChildren;
}) {
  const { client, tenantId } = useScope();
  const action = useAction();
  const machines = usePages(
    async (pageToken) => {
      const r = await client.activation.listMachines({ tenantId, licenseId, status, pageSize: 50, pageToken });
      return { items: r.machines, next: r.nextPageToken };
    },
    [tenantId, licenseId, status],
  );
  const act = async (fn: () => Promise<unknown>) => {
    if ((await action.run(fn)) !== undefined) machines.reload();
  };
  const columns = [
    { title: "Fingerprint", cell: (m: Machine) => <code>{m.fingerprint}</code> },
    { title: "Host", cell: (m: Machine) => m.hostname || "—" },
    { title: "Platform", cell: (m: Machine) => m.platform || "—" },
    { title: "Components", cell: (m: Machine) => <Components machine={m} /> },
    { title: "Status", cell: (m: Machine) => <Badge value={enumName(MachineStatus, m.status)} /> },
    { title: "Last heartbeat", cell: (m: Machine) => when(m.lastHeartbeatTime) },
    ...(showLicense
      ? [
          {
            title: "License",
            cell: (m: Machine) => (
              <a href={href("licenses", m.licenseId)}>
                <code>{m.licenseId}</code>
              </a>
            ),
          },
        ]
      : []),
    {
      title: "Actions",
      cell: (m: Machine) => (
        <span class="actions">
          <button
            type="button"
            disabled={action.busy}
            aria-label={`Deactivate ${m.fingerprint}`}
            onClick={() => act(() => client.activation.deactivate({ tenantId, machineId: m.id }))}
          >
            Deactivate
          </button>
          {licenseId ? (
            <button
              type="button"
              class="danger"
              disabled={action.busy}
              aria-label={`Delete ${m.fingerprint}`}
              onClick={() => act(() => client.activation.deleteMachine({ tenantId, id: m.id }))}
            >
              Delete
            </button>
          ) : null}
        </span>
      ),
    },
  ];
  return (
    <>
      <ErrorBox error={machines.error} />
      <ErrorBox error={action.error} />
      {machines.loading && !machines.data ? <Loading /> : null}
      {machines.data && machines.items.length === 0 ? (
        <Empty>
          <p>{emptyText}</p>
        </Empty>
      ) : null}
      {machines.items.length > 0 ? <Table label="machines" rows={machines.items} columns={columns} /> : null}
      <Pager {...machines} />
    </>
  );
}

/**
 * A license's processes (running instances of the app on its machines), page by page, alive and dead; Kill ends one
 * and frees its slot of the policy's max processes.
 */
export function ProcessTable({ licenseId }: { licenseId: string }) {
  const { client, tenantId } = useScope();
  const action = useAction();
  const processes = usePages(
    async (pageToken) => {
      const r = await client.activation.listProcesses({ tenantId, licenseId, pageSize: 50, pageToken });
      return { items: r.processes, next: r.nextPageToken };
    },
    [tenantId, licenseId],
  );
  const columns = [
    { title: "Pid", cell: (p: Process) => <code>{p.pid}</code> },
    { title: "Machine", cell: (p: Process) => <code>{p.machineId}</code> },
    { title: "Status", cell: (p: Process) => <Badge value={enumName(ProcessStatus, p.status)} /> },
    { title: "Last ping", cell: (p: Process) => when(p.lastHeartbeatTime) },
    {
      title: "Actions",
      cell: (p: Process) => (
        <button
          type="button"
          class="danger"
          disabled={action.busy}
          aria-label={`Kill ${p.pid}`}
          onClick={async () => {
            if ((await action.run(() => client.activation.killProcess({ tenantId, id: p.id }))) !== undefined)
              processes.reload();
          }}
        >
          Kill
        </button>
      ),
    },
  ];
  return (
    <section aria-labelledby="processes-title">
      <h2 id="processes-title">Processes</h2>
      <ErrorBox error={processes.error} />
      <ErrorBox error={action.error} />
      {processes.loading && !processes.data ? <Loading /> : null}
      {processes.data && processes.items.length === 0 ? (
        <Empty>
          <p>
            No process is running under this license. The app registers one on an activated machine (ActivationService
            SpawnProcess, or a ConnectLease stream naming a process).
          </p>
        </Empty>
      ) : null}
      {processes.items.length > 0 ? <Table label="processes" rows={processes.items} columns={columns} /> : null}
      <Pager {...processes} />
    </section>
  );
}
