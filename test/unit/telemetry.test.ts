import { describe, expect, it } from "vitest";
import { tracingConfigured } from "../../src/platform/telemetry.js";
import { sqlWithoutLiterals } from "../../src/platform/tracing.js";

describe("tracingConfigured", () => {
  it("is on when OpenTelemetry's standard variables name where traces go", () => {
    expect(tracingConfigured({})).toBe(false);
    expect(tracingConfigured({ OTEL_SERVICE_NAME: "licensd" })).toBe(false);
    expect(tracingConfigured({ OTEL_EXPORTER_OTLP_ENDPOINT: "http://collector:4318" })).toBe(true);
    expect(tracingConfigured({ OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: "http://collector:4318/v1/traces" })).toBe(true);
    expect(tracingConfigured({ OTEL_TRACES_EXPORTER: "console" })).toBe(true);
  });

  it("is off when the exporter is `none` or the SDK is disabled, whatever the endpoint", () => {
    expect(
      tracingConfigured({ OTEL_EXPORTER_OTLP_ENDPOINT: "http://collector:4318", OTEL_TRACES_EXPORTER: "none" }),
    ).toBe(false);
    expect(tracingConfigured({ OTEL_EXPORTER_OTLP_ENDPOINT: "http://collector:4318", OTEL_SDK_DISABLED: "true" })).toBe(
      false,
    );
    expect(
      tracingConfigured({ OTEL_EXPORTER_OTLP_ENDPOINT: "http://collector:4318", OTEL_SDK_DISABLED: "false" }),
    ).toBe(true);
  });
});

describe("sqlWithoutLiterals", () => {
  it("replaces every string literal MikroORM inlines, escapes included, and nothing else", () => {
    expect(
      sqlWithoutLiterals(`insert into "tenants" ("id", "name", "metadata") values ('ten_1', 'O''Brien', '{}')`),
    ).toBe(`insert into "tenants" ("id", "name", "metadata") values (?, ?, ?)`);
    expect(sqlWithoutLiterals(`select 1 from t where h = E'\\\\x00\\'ab' and f = '\\x' and n = 5`)).toBe(
      `select 1 from t where h = ? and f = ? and n = 5`,
    );
    expect(sqlWithoutLiterals(`select "it's" from t where a = $1`)).toBe(`select "it's" from t where a = $1`);
  });
});
