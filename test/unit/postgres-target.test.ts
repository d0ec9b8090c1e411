import { describe, expect, it } from "vitest";
import { PostgresTarget } from "../../src/platform/postgres-target.js";

describe("PostgresTarget.parse: libpq's multi-host URL", () => {
  it("reads pg_autoctl's URI: every host in order, read-write, a single-host URL per host", () => {
    const t = PostgresTarget.parse(
      "postgres://app:s%40cret@127.0.0.1:6001,127.0.0.1:6002/licensd?target_session_attrs=read-write&sslmode=prefer",
    );
    expect(t.hosts).toEqual([
      { host: "127.0.0.1", port: 6001 },
      { host: "127.0.0.1", port: 6002 },
    ]);
    expect(t.sessionAttrs).toBe("read-write");
    expect(t.multiHost).toBe(true);
    // prefer has no fallback in node-postgres: the nodes are reached without TLS, as libpq would after its fallback.
    expect(t.urlFor(t.hosts[1])).toBe("postgres://app:s%40cret@127.0.0.1:6002/licensd?sslmode=disable");
  });

  it("keeps a plain single-host URL as it is, port 5432 when none is given, IPv6 in brackets", () => {
    const one = PostgresTarget.parse("postgresql://u@db.internal/licensd");
    expect(one.hosts).toEqual([{ host: "db.internal", port: 5432 }]);
    expect(one.multiHost).toBe(false);
    expect(one.urlFor()).toBe("postgresql://u@db.internal:5432/licensd");
    const v6 = PostgresTarget.parse("postgres://u@[::1]:5433,h2/db");
    expect(v6.urlFor()).toBe("postgres://u@[::1]:5433/db");
    expect(v6.hosts).toEqual([
      { host: "::1", port: 5433 },
      { host: "h2", port: 5432 },
    ]);
  });

  it("refuses the target_session_attrs it does not honour, and a URL that is not postgres://", () => {
    expect(() => PostgresTarget.parse("postgres://u@h1,h2/db?target_session_attrs=standby")).toThrow(
      /target_session_attrs=standby is not supported/,
    );
    expect(() => PostgresTarget.parse("mysql://u@h/db")).toThrow(/expected postgres:\/\//);
  });
});
