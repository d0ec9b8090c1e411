import type { FunctionComponent } from "preact";
import { useEffect, useState } from "preact/hooks";
import { clientFor, errorText, forgetKey, type Session, signIn, storedKey } from "./api";
import { PAGES } from "./pages";
import { href, useRoute } from "./router";
import { Empty, ErrorBox, Field, Loading, ScopeContext, useAsync } from "./ui";

export interface PageDef {
  path: string;
  title: string;
  component: FunctionComponent<{ params: string[] }>;
  /** Only the super-admin sees it (Tenants). */
  superAdminOnly?: boolean;
  /** Works without a tenant picked (the super-admin's own pages). */
  noTenant?: boolean;
}

export function App() {
  const [session, setSession] = useState<Session | undefined>();
  const [restoring, setRestoring] = useState(storedKey() !== "");
  useEffect(() => {
    const key = storedKey();
    if (!key) return;
    signIn(key)
      .then(setSession, () => forgetKey())
      .finally(() => setRestoring(false));
  }, []);
  if (restoring) return <Loading />;
  if (!session) return <SignIn onSignedIn={setSession} />;
  return (
    <Console
      session={session}
      onSignOut={() => {
        forgetKey();
        setSession(undefined);
        location.hash = "";
      }}
    />
  );
}

function SignIn({ onSignedIn }: { onSignedIn: (s: Session) => void }) {
  const [key, setKey] = useState("");
  const [error, setError] = useState<string>();
  const [busy, setBusy] = useState(false);
  return (
    <main class="signin">
      <h1>licensd console</h1>
      <form
        onSubmit={async (e) => {
          e.preventDefault();
          setBusy(true);
          setError(undefined);
          try {
            onSignedIn(await signIn(key.trim()));
          } catch (err) {
            setError(errorText(err));
          } finally {
            setBusy(false);
          }
        }}
      >
        <Field
          id="api-key"
          label="API key"
          hint="A tenant API key (lsk_…) or the super-admin key. Kept in this tab only."
        >
          <input
            id="api-key"
            name="api-key"
            type="password"
            autocomplete="off"
            required
            value={key}
            onInput={(e) => setKey(e.currentTarget.value)}
          />
        </Field>
        <button type="submit" disabled={busy || key.trim() === ""}>
          Sign in
        </button>
        {error ? (
          <p class="error" role="alert">
            {error}
          </p>
        ) : null}
      </form>
    </main>
  );
}

const TENANT = "licensd.console.tenant";

function Console({ session, onSignOut }: { session: Session; onSignOut: () => void }) {
  const route = useRoute();
  const [tenantId, setTenantId] = useState(() => (session.superAdmin ? (sessionStorage.getItem(TENANT) ?? "") : ""));
  const pages = PAGES.filter((p) => session.superAdmin || !p.superAdminOnly);
  const current = pages.find((p) => p.path === (route[0] ?? "overview")) ?? pages[0]!;
  const needsTenant = session.superAdmin && tenantId === "" && !current.noTenant;
  return (
    <ScopeContext.Provider value={{ ...session, tenantId }}>
      <a class="skip" href="#main">
        Skip to content
      </a>
      <header class="top">
        <strong class="brand">licensd</strong>
        {session.superAdmin ? (
          <TenantPicker
            refresh={route[0] ?? ""}
            value={tenantId}
            onChange={(id) => {
              sessionStorage.setItem(TENANT, id);
              setTenantId(id);
            }}
          />
        ) : (
          <span class="tenant-name">{session.ownTenantName}</span>
        )}
        <button type="button" class="signout" onClick={onSignOut}>
          Sign out
        </button>
      </header>
      <nav class="side" aria-label="sections">
        <ul>
          {pages.map((p) => (
            <li key={p.path}>
              <a href={href(p.path)} aria-current={p === current ? "page" : undefined}>
                {p.title}
              </a>
            </li>
          ))}
        </ul>
      </nav>
      <main id="main" tabIndex={-1}>
        {needsTenant ? (
          <Empty>
            <p>You are signed in with the super-admin key. Pick a tenant above to see its data, or open Tenants.</p>
          </Empty>
        ) : (
          <current.component key={`${current.path}:${tenantId}`} params={route.slice(1)} />
        )}
      </main>
    </ScopeContext.Provider>
  );
}

/** The super-admin's tenant list, read again on every change of section (a tenant just created appears). */
function TenantPicker({
  value,
  onChange,
  refresh,
}: {
  value: string;
  onChange: (id: string) => void;
  refresh: string;
}) {
  const key = storedKey();
  const tenants = useAsync(
    async () => (await clientFor(key).tenant.listTenants({ pageSize: 1000 })).tenants,
    [key, refresh],
  );
  return (
    <span class="tenant-picker">
      <label for="tenant">Tenant</label>
      <select id="tenant" value={value} onChange={(e) => onChange(e.currentTarget.value)}>
        <option value="">— pick a tenant —</option>
        {(tenants.data ?? []).map((t) => (
          <option key={t.id} value={t.id}>
            {t.name} ({t.id})
          </option>
        ))}
      </select>
      <ErrorBox error={tenants.error} />
    </span>
  );
}
