import pg from "pg";

/**
 * LICENSD_DATABASE_URL with libpq's multi-host form, as pg_auto_failover's `pg_autoctl show uri` prints it:
 *
 *     postgres://user@h1:p1,h2:p2/db?target_session_attrs=read-write
 *
 * Connections try the hosts in order and keep the first that answers, and with `read-write` (or `primary`) the first
 * that is writable (`pg_is_in_recovery()` false and `transaction_read_only` off): after a failover that is the promoted
 * standby. Written here because node-postgres (pg 8.23, pg-connection-string 2.14) takes one host per URL (`new URL`
 * rejects the host list) and ignores target_session_attrs, and no maintained pg-compatible package on npm adds either.
 */
export interface PostgresHost {
  host: string;
  port: number;
}

/** libpq's target_session_attrs values licensd honours; the standby-seeking ones have no use in licensd. */
const SESSION_ATTRS = ["any", "read-write", "primary"] as const;
type SessionAttrs = (typeof SESSION_ATTRS)[number];

/** No host would do (all down, or none writable yet during a failover): SQLSTATE 08001, as libpq reports it. */
export class NoSessionError extends Error {
  readonly code = "08001";
}

export class PostgresTarget {
  /** The host a writable connection was last made to: new pool connections go there first without probing. */
  private current: PostgresHost | undefined;
  private locating: Promise<PostgresHost> | undefined;

  private constructor(
    readonly hosts: readonly PostgresHost[],
    readonly sessionAttrs: SessionAttrs,
    /** The URL with `{host}` in place of the host list and target_session_attrs removed. */
    private readonly template: string,
  ) {}

  static parse(url: string): PostgresTarget {
    const m = /^(postgres(?:ql)?:\/\/)(?:([^@/?#]*)@)?([^/?#]*)(.*)$/.exec(url);
    if (!m) throw new Error("database URL: expected postgres://[user[:password]@]host[:port][,host[:port]…]/database");
    const [, scheme, userinfo, hostList = "", rest = ""] = m;
    const hosts = hostList.split(",").map((h) => {
      const hp = /^(\[[^\]]+\]|[^:]*)(?::(\d+))?$/.exec(h);
      if (!hp) throw new Error(`database URL: bad host "${h}"`);
      // IPv6 literals are kept without their brackets: that is how net.connect (and pg's `host`) takes them.
      return { host: hp[1]?.replace(/^\[(.*)\]$/, "$1") || "localhost", port: hp[2] ? Number(hp[2]) : 5432 };
    });
    const [path = "", query = ""] = rest.split("?", 2);
    const params = new URLSearchParams(query);
    const attrs = params.get("target_session_attrs") ?? "any";
    if (!(SESSION_ATTRS as readonly string[]).includes(attrs))
      throw new Error(`database URL: target_session_attrs=${attrs} is not supported (use ${SESSION_ATTRS.join(", ")})`);
    params.delete("target_session_attrs");
    // `prefer`/`allow` fall back to plain TCP in libpq; node-postgres has no fallback, so they mean no TLS here.
    const sslmode = params.get("sslmode");
    if (sslmode === "prefer" || sslmode === "allow") params.set("sslmode", "disable");
    const q = params.toString();
    const template = `${scheme}${userinfo === undefined ? "" : `${userinfo}@`}{host}${path}${q ? `?${q}` : ""}`;
    return new PostgresTarget(hosts, attrs as SessionAttrs, template);
  }

  /** Whether connections need more than pg's own single-host connect. */
  get multiHost(): boolean {
    return this.hosts.length > 1 || this.sessionAttrs !== "any";
  }

  /** The single-host URL of `host` (with the URL's user, database and other parameters). */
  urlFor(host: PostgresHost = this.hosts[0]!): string {
    const name = host.host.includes(":") ? `[${host.host}]` : host.host;
    return this.template.replace("{host}", `${name}:${host.port}`);
  }

  /** A connected client on the first host, in order, that satisfies target_session_attrs. */
  async connect(config: Omit<pg.ClientConfig, "connectionString" | "host" | "port"> = {}): Promise<pg.Client> {
    const failures: string[] = [];
    for (const host of this.hosts) {
      const client = new pg.Client({ connectionTimeoutMillis: 5_000, ...config, connectionString: this.urlFor(host) });
      const ignore = () => undefined;
      client.on("error", ignore); // a failure while probing rejects the call below; the event alone would crash
      try {
        await client.connect();
        if (await this.acceptable(client)) {
          this.current = host;
          client.off("error", ignore);
          return client;
        }
        failures.push(`${host.host}:${host.port} is read-only`);
      } catch (err) {
        failures.push(`${host.host}:${host.port}: ${(err as Error).message}`);
      }
      await client.end().catch(() => undefined);
    }
    const wanted = this.sessionAttrs === "any" ? "reachable" : "writable";
    throw new NoSessionError(`no ${wanted} PostgreSQL host (${failures.join("; ")})`);
  }

  /**
   * A `pg.Client` class for a `pg.Pool` (its `Client` option): each connect goes to the host the last successful one
   * found (probing the list in order when there is none), checks target_session_attrs on the new session, and forgets
   * that host when the check or the connection fails, so after a failover the next connect finds the new primary.
   */
  poolClient(): typeof pg.Client {
    const target = this;
    return class PrimaryClient extends pg.Client {
      constructor(config?: string | pg.ClientConfig) {
        super(config);
        // A connection lost under us (the primary went away): the next connect probes again.
        this.on("error", () => target.forget(this.host, this.port));
      }

      override connect(): Promise<pg.Client>;
      override connect(callback: ((err: Error) => void) | ((err: null, c: pg.Client) => void)): void;
      override connect(
        callback?: ((err: Error) => void) | ((err: null, c: pg.Client) => void),
      ): Promise<pg.Client> | undefined {
        const connected = this.connectToTarget();
        if (!callback) return connected;
        connected.then(
          (c) => (callback as (err: null, c: pg.Client) => void)(null, c),
          (err: Error) => (callback as (err: Error) => void)(err),
        );
        return undefined;
      }

      private async connectToTarget(): Promise<pg.Client> {
        const host = await target.locate();
        this.host = host.host;
        this.port = host.port;
        try {
          await super.connect();
        } catch (err) {
          target.forget(host.host, host.port);
          throw err;
        }
        if (!(await target.acceptable(this))) {
          target.forget(host.host, host.port);
          await this.end().catch(() => undefined);
          throw new NoSessionError(`${host.host}:${host.port} is read-only (a failover in progress?)`);
        }
        return this;
      }
    };
  }

  /** The host new connections go to: the last good one, or the first acceptable one in order (one probe at a time). */
  private locate(): Promise<PostgresHost> {
    if (this.current) return Promise.resolve(this.current);
    this.locating ??= this.connect()
      .then(async (probe) => {
        await probe.end().catch(() => undefined);
        return this.current!;
      })
      .finally(() => {
        this.locating = undefined;
      });
    return this.locating;
  }

  private forget(host: string, port: number) {
    if (this.current?.host === host && this.current.port === port) this.current = undefined;
  }

  private async acceptable(client: pg.Client): Promise<boolean> {
    if (this.sessionAttrs === "any") return true;
    const { rows } = await client.query<{ writable: string }>(
      "select (not pg_is_in_recovery() and current_setting('transaction_read_only') = 'off')::text as writable",
    );
    return rows[0]?.writable === "true";
  }
}
