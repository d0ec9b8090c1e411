import { type Timestamp, timestampDate } from "@bufbuild/protobuf/wkt";
import type { ComponentChildren } from "preact";
import { createContext } from "preact";
import { useCallback, useContext, useEffect, useRef, useState } from "preact/hooks";
import { errorText, type Session } from "./api";

/** The signed-in session and the tenant the pages act on ("" for a tenant key: its own). */
export interface Scope extends Session {
  tenantId: string;
}

export const ScopeContext = createContext<Scope | undefined>(undefined);

export function useScope(): Scope {
  const scope = useContext(ScopeContext);
  if (!scope) throw new Error("useScope outside the signed-in console");
  return scope;
}

/** Runs `load` when `deps` change; `reload` runs it again. */
export function useAsync<T>(load: () => Promise<T>, deps: unknown[]) {
  const [state, setState] = useState<{ data?: T; error?: unknown; loading: boolean }>({ loading: true });
  const run = useRef(0);
  const reload = useCallback(() => {
    const n = ++run.current;
    setState((s) => ({ ...s, loading: true }));
    load().then(
      (data) => n === run.current && setState({ data, loading: false }),
      (error: unknown) => n === run.current && setState({ error, loading: false }),
    );
  }, deps);
  useEffect(reload, [reload]);
  return { ...state, reload };
}

/**
 * A list read page by page with the API's page tokens: `load(token)` returns the items and
 * the next token; Previous goes back through the tokens seen.
 */
export function usePages<T>(load: (pageToken: string) => Promise<{ items: T[]; next: string }>, deps: unknown[]) {
  const [tokens, setTokens] = useState<string[]>([""]);
  useEffect(() => setTokens([""]), deps);
  const current = tokens[tokens.length - 1] ?? "";
  const page = useAsync(() => load(current), [current, ...deps]);
  return {
    ...page,
    items: page.data?.items ?? [],
    hasNext: (page.data?.next ?? "") !== "",
    hasPrevious: tokens.length > 1,
    next: () => page.data?.next && setTokens([...tokens, page.data.next]),
    previous: () => setTokens(tokens.slice(0, -1)),
  };
}

export function Pager(p: { hasNext: boolean; hasPrevious: boolean; next: () => void; previous: () => void }) {
  if (!p.hasNext && !p.hasPrevious) return null;
  return (
    <nav class="pager" aria-label="pages">
      <button type="button" disabled={!p.hasPrevious} onClick={p.previous}>
        ← Previous
      </button>
      <button type="button" disabled={!p.hasNext} onClick={p.next}>
        Next →
      </button>
    </nav>
  );
}

export function ErrorBox({ error }: { error: unknown }) {
  if (error === undefined || error === null) return null;
  return (
    <p class="error" role="alert">
      {errorText(error)}
    </p>
  );
}

export function Empty({ children }: { children: ComponentChildren }) {
  return <div class="empty">{children}</div>;
}

export function Loading() {
  return <p class="muted">Loading…</p>;
}

export interface Column<T> {
  title: string;
  cell: (row: T) => ComponentChildren;
}

export function Table<T>({ columns, rows, label }: { columns: Column<T>[]; rows: T[]; label: string }) {
  return (
    <div class="table-wrap">
      <table aria-label={label}>
        <thead>
          <tr>
            {columns.map((c) => (
              <th key={c.title} scope="col">
                {c.title}
              </th>
            ))}
          </tr>
        </thead>
        <tbody>
          {rows.map((row, i) => (
            <tr key={i}>
              {columns.map((c) => (
                <td key={c.title} data-label={c.title}>
                  {c.cell(row)}
                </td>
              ))}
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}

/** A labelled field: the label names the control (its `id`). */
export function Field({
  id,
  label,
  hint,
  children,
}: {
  id: string;
  label: string;
  hint?: string;
  children: ComponentChildren;
}) {
  return (
    <div class="field">
      <label for={id}>{label}</label>
      {children}
      {hint ? <small id={`${id}-hint`}>{hint}</small> : null}
    </div>
  );
}

export function CopyButton({ text, label = "Copy" }: { text: string; label?: string }) {
  const [done, setDone] = useState(false);
  return (
    <button
      type="button"
      class="copy"
      onClick={async () => {
        await navigator.clipboard.writeText(text);
        setDone(true);
      }}
    >
      {done ? "Copied" : label}
    </button>
  );
}

/** A status word in its colour (active green, suspended yellow, revoked red, …). */
export function Badge({ value }: { value: string }) {
  return <span class={`badge badge-${value.toLowerCase().replace(/[^a-z]+/g, "-")}`}>{value}</span>;
}

export function when(t: Timestamp | undefined): string {
  if (!t) return "—";
  return timestampDate(t)
    .toISOString()
    .replace("T", " ")
    .replace(/\.\d+Z$/, "Z");
}

/** An enum value's name without its prefix: LicenseStatus.SUSPENDED → "suspended". */
export function enumName(e: Record<number, string>, value: number): string {
  return (e[value] ?? String(value)).toLowerCase();
}

/** Runs a mutation from a form: busy while it runs, its error shown, `done` after success. */
export function useAction() {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>();
  const run = async <T,>(fn: () => Promise<T>): Promise<T | undefined> => {
    setBusy(true);
    setError(undefined);
    try {
      return await fn();
    } catch (err) {
      setError(err);
      return undefined;
    } finally {
      setBusy(false);
    }
  };
  return { busy, error, run, clear: () => setError(undefined) };
}

export function Page({
  title,
  actions,
  children,
}: {
  title: string;
  actions?: ComponentChildren;
  children: ComponentChildren;
}) {
  return (
    <section class="page" aria-labelledby="page-title">
      <header class="page-head">
        <h1 id="page-title">{title}</h1>
        {actions}
      </header>
      {children}
    </section>
  );
}
