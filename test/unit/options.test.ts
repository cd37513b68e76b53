import { describe, expect, it } from "vitest";
import { DEFAULTS, MAX_LIFETIME_CAP_MS, MAX_RESULT_BYTES_CAP, optionsFromEnv, resolveOptions } from "../../worker/pool/options.ts";
import { PoolError } from "../../src/errors.ts";
import { thrown } from "./helpers.ts";
import { callOption } from "../../worker/reply.ts";
import { checkTenant, maskPassword } from "../../worker/tenant.ts";
import { createPool } from "../../src/pool.ts";

describe("pool options", () => {
  it("defaults are those of design §3, with maxIdle = maxConnections", () => {
    expect(resolveOptions("acme")).toEqual({
      maxConnections: 10,
      minConnections: 0,
      initialConnections: 0,
      minIdle: 0,
      maxIdle: 10,
      acquireTimeoutMs: 5000,
      maxWaiters: 1000,
      idleTimeoutMs: 60000,
      maxLifetimeMs: 600000,
      maxUses: 0,
      reuseCooldownMs: 0,
      leaseTimeoutMs: 30000,
      connectTimeoutMs: 10000,
      maxConcurrentConnects: 4,
      resetQuery: "DISCARD ALL",
      validateAfterIdleMs: 30000,
      queryTimeoutMs: 0,
      maxResultBytes: 16 * 1024 * 1024,
      pipelineDepth: 4,
      maxPreparedStatements: 200,
    });
    expect(Object.keys(DEFAULTS)).toHaveLength(19);
  });

  it("maxIdle defaults to the given maxConnections", () => {
    expect(resolveOptions("acme", { maxConnections: 3 }).maxIdle).toBe(3);
    expect(resolveOptions("acme", { maxConnections: 3, maxIdle: 1 }).maxIdle).toBe(1);
  });

  it("given values replace the defaults; undefined values keep them", () => {
    const o = resolveOptions("acme", { acquireTimeoutMs: 250, resetQuery: "RESET ALL", idleTimeoutMs: undefined });
    expect(o.acquireTimeoutMs).toBe(250);
    expect(o.resetQuery).toBe("RESET ALL");
    expect(o.idleTimeoutMs).toBe(60000);
  });

  it("an unknown key is rejected with INVALID_OPTION naming the key and the value", () => {
    const error = thrown(() => resolveOptions("acme", { maxConnection: 5 }), "INVALID_OPTION");
    expect(error).toBeInstanceOf(PoolError);
    expect(error.tenant).toBe("acme");
    expect(error.message.startsWith('INVALID_OPTION: option "maxConnection" = 5 is not an option')).toBe(true);
    expect(error.retryable).toBe(false);
  });

  it("a string value for an unknown key is quoted in the message", () => {
    const error = thrown(() => resolveOptions("acme", { idleTimeout: "30s" }), "INVALID_OPTION");
    expect(error.message).toContain('option "idleTimeout" = "30s"');
  });

  describe("a value that may hold a secret is never echoed; the key still is", () => {
    // Made up per run, so a failing assertion prints nothing anyone could reuse.
    const password = `pw-${crypto.randomUUID()}`;
    const url = `postgres://app:${password}@db.example.com:5432/app`;
    const token = `ep1.${btoa(crypto.randomUUID() + crypto.randomUUID())}`;
    const HIDDEN = "(value hidden: may hold a secret)";

    it.each([
      ["an unknown key named like a connection string", "replicaConnectionString", url],
      ["an unknown key with an innocent name and a URL with credentials", "replica", url],
      ["an unknown key named like a token", "apiToken", "short"],
      ["an unknown key holding a long token-like string", "extra", token],
      ["a known key holding a URL with credentials", "resetQuery", { url }],
      ["a known numeric key holding a URL with credentials", "maxConnections", url],
      ["an unknown key holding a URL with libpq's password parameter", "replica", `postgres://db.example.com/app?password=${password}`],
      ["an unknown key holding a key=value connection string", "replica", `host=db.example.com password=${password}`],
    ])("%s", (_, key, value) => {
      const error = thrown(() => resolveOptions("acme", { [key]: value }), "INVALID_OPTION");
      expect(error.message).toContain(`option "${key}" = ${HIDDEN}`);
      expect(error.message).not.toContain(password);
      expect(error.message).not.toContain(token);
      expect(error.message).not.toContain("short");
    });

    it("per-call options, the tenant name and a remote target follow the same rule", () => {
      const call = thrown(() => callOption("acme", { queryTimeoutMs: url } as never, "queryTimeoutMs"), "INVALID_OPTION");
      expect(call.message).toBe(`INVALID_OPTION: option "queryTimeoutMs" = ${HIDDEN} must be an integer >= 0`);
      const tenant = thrown(() => checkTenant(url), "BAD_REQUEST");
      expect(JSON.stringify({ ...tenant, message: tenant.message })).not.toContain(password);
      expect(tenant.message).toContain(`tenant name ${HIDDEN}`);
      const target = thrown(() => createPool(url, { tenant: "acme", token }), "INVALID_OPTION");
      expect(target.message).toContain(`target ${HIDDEN}`);
      expect(target.message).not.toContain(password);
    });

    it("plain values are still shown", () => {
      expect(thrown(() => checkTenant("no such tenant!"), "BAD_REQUEST").message).toContain('tenant name "no such tenant!"');
      expect(thrown(() => resolveOptions("acme", { replicaHost: "db2.internal" }), "INVALID_OPTION").message).toContain('option "replicaHost" = "db2.internal"');
      expect(thrown(() => createPool("ftp://example.com", { tenant: "acme", token }), "INVALID_OPTION").message).toContain('target "ftp://example.com"');
    });
  });

  it.each([
    ["maxConnections", -1, 'option "maxConnections" = -1 must be an integer >= 0'],
    ["acquireTimeoutMs", -5, 'option "acquireTimeoutMs" = -5 must be an integer >= 0'],
    ["maxWaiters", -1, 'option "maxWaiters" = -1 must be an integer >= 0'],
    ["idleTimeoutMs", -1000, 'option "idleTimeoutMs" = -1000 must be an integer >= 0'],
  ])("a negative %s is rejected naming key and value", (key, value, message) => {
    const error = thrown(() => resolveOptions("acme", { [key]: value }), "INVALID_OPTION");
    expect(error.message).toBe(`INVALID_OPTION: ${message}`);
  });

  it.each([
    ["maxConnections", 2.5, "2.5"],
    ["idleTimeoutMs", 0.1, "0.1"],
    ["maxUses", Number.NaN, "NaN"],
    ["acquireTimeoutMs", Number.POSITIVE_INFINITY, "Infinity"],
    ["maxConnections", "3", '"3"'],
    ["minIdle", true, "true"],
    ["maxConnections", null, "null"],
  ])("a non-integer %s (%s) is rejected naming key and value", (key, value, shown) => {
    const error = thrown(() => resolveOptions("acme", { [key]: value }), "INVALID_OPTION");
    expect(error.message).toContain(`option "${key}" = ${shown} must be an integer`);
  });

  it.each([
    ["leaseTimeoutMs", 0, 1],
    ["connectTimeoutMs", 0, 1],
    ["maxConcurrentConnects", 0, 1],
    ["pipelineDepth", 0, 1],
    ["maxPreparedStatements", -1, 0],
  ])("%s = %s is below its minimum %s", (key, value, minimum) => {
    const error = thrown(() => resolveOptions("acme", { [key]: value }), "INVALID_OPTION");
    expect(error.message).toBe(`INVALID_OPTION: option "${key}" = ${value} must be an integer >= ${minimum}`);
  });

  it("0 is accepted where design §3 gives it a meaning", () => {
    const o = resolveOptions("acme", { maxConnections: 0, maxUses: 0, idleTimeoutMs: 0, maxLifetimeMs: 0, reuseCooldownMs: 0, maxWaiters: 0 });
    expect(o.maxConnections).toBe(0);
    expect(o.maxIdle).toBe(0);
  });

  it("minConnections above maxConnections is rejected", () => {
    const error = thrown(() => resolveOptions("acme", { maxConnections: 4, minConnections: 5 }), "INVALID_OPTION");
    expect(error.message).toBe('INVALID_OPTION: option "minConnections" = 5 must not exceed maxConnections (4)');
    expect(resolveOptions("acme", { maxConnections: 4, minConnections: 4 }).minConnections).toBe(4);
  });

  it("minIdle above maxIdle is rejected, also when maxIdle is the default (= max)", () => {
    const explicit = thrown(() => resolveOptions("acme", { minIdle: 3, maxIdle: 2 }), "INVALID_OPTION");
    expect(explicit.message).toBe('INVALID_OPTION: option "minIdle" = 3 must not exceed maxIdle (2)');
    const implicit = thrown(() => resolveOptions("acme", { maxConnections: 2, minIdle: 3 }), "INVALID_OPTION");
    expect(implicit.message).toBe('INVALID_OPTION: option "minIdle" = 3 must not exceed maxIdle (2)');
  });

  it("maxLifetimeMs is capped at 15 minutes", () => {
    expect(MAX_LIFETIME_CAP_MS).toBe(900_000);
    expect(resolveOptions("acme", { maxLifetimeMs: 900_000 }).maxLifetimeMs).toBe(900_000);
    const error = thrown(() => resolveOptions("acme", { maxLifetimeMs: 900_001 }), "INVALID_OPTION");
    expect(error.message).toContain('option "maxLifetimeMs" = 900001 must be at most 900000');
  });

  it("maxResultBytes stays below the 32 MiB RPC cap", () => {
    expect(MAX_RESULT_BYTES_CAP).toBe(30 * 1024 * 1024);
    expect(resolveOptions("acme", { maxResultBytes: MAX_RESULT_BYTES_CAP }).maxResultBytes).toBe(MAX_RESULT_BYTES_CAP);
    const error = thrown(() => resolveOptions("acme", { maxResultBytes: MAX_RESULT_BYTES_CAP + 1 }), "INVALID_OPTION");
    expect(error.message).toContain(`option "maxResultBytes" = ${MAX_RESULT_BYTES_CAP + 1} must be at most ${MAX_RESULT_BYTES_CAP}`);
    thrown(() => resolveOptions("acme", { maxResultBytes: 0 }), "INVALID_OPTION");
  });

  it("resetQuery must be a string", () => {
    const error = thrown(() => resolveOptions("acme", { resetQuery: 1 }), "INVALID_OPTION");
    expect(error.message).toBe('INVALID_OPTION: option "resetQuery" = 1 must be a string');
  });

  it("options that are not an object are rejected", () => {
    thrown(() => resolveOptions("acme", null as unknown as Record<string, unknown>), "INVALID_OPTION");
    thrown(() => resolveOptions("acme", [] as unknown as Record<string, unknown>), "INVALID_OPTION");
  });
});

describe("options from EDGEPOOL_* variables", () => {
  it("EDGEPOOL_MAX_CONNECTIONS=\"3\" becomes maxConnections: 3", () => {
    expect(optionsFromEnv({ EDGEPOOL_MAX_CONNECTIONS: "3" })).toEqual({ maxConnections: 3 });
    expect(resolveOptions("default", optionsFromEnv({ EDGEPOOL_MAX_CONNECTIONS: "3" })).maxConnections).toBe(3);
  });

  it("every option has its variable; numbers are parsed, resetQuery stays a string", () => {
    const env = {
      EDGEPOOL_MAX_CONNECTIONS: "20",
      EDGEPOOL_MIN_CONNECTIONS: "2",
      EDGEPOOL_INITIAL_CONNECTIONS: "1",
      EDGEPOOL_MIN_IDLE: "1",
      EDGEPOOL_MAX_IDLE: "5",
      EDGEPOOL_ACQUIRE_TIMEOUT_MS: "2000",
      EDGEPOOL_MAX_WAITERS: "50",
      EDGEPOOL_IDLE_TIMEOUT_MS: "1000",
      EDGEPOOL_MAX_LIFETIME_MS: "300000",
      EDGEPOOL_MAX_USES: "100",
      EDGEPOOL_REUSE_COOLDOWN_MS: "10",
      EDGEPOOL_LEASE_TIMEOUT_MS: "9000",
      EDGEPOOL_CONNECT_TIMEOUT_MS: "3000",
      EDGEPOOL_MAX_CONCURRENT_CONNECTS: "2",
      EDGEPOOL_RESET_QUERY: "RESET ALL",
      EDGEPOOL_VALIDATE_AFTER_IDLE_MS: "500",
      EDGEPOOL_QUERY_TIMEOUT_MS: "15000",
      EDGEPOOL_MAX_RESULT_BYTES: "1048576",
      EDGEPOOL_PIPELINE_DEPTH: "2",
      EDGEPOOL_MAX_PREPARED_STATEMENTS: "50",
      DATABASE_URL: "postgres://u:secret@db:5432/app",
      EDGEPOOL_ADMIN_TOKEN: "t0ken",
    };
    expect(resolveOptions("default", optionsFromEnv(env))).toEqual({
      maxConnections: 20,
      minConnections: 2,
      initialConnections: 1,
      minIdle: 1,
      maxIdle: 5,
      acquireTimeoutMs: 2000,
      maxWaiters: 50,
      idleTimeoutMs: 1000,
      maxLifetimeMs: 300000,
      maxUses: 100,
      reuseCooldownMs: 10,
      leaseTimeoutMs: 9000,
      connectTimeoutMs: 3000,
      maxConcurrentConnects: 2,
      resetQuery: "RESET ALL",
      validateAfterIdleMs: 500,
      queryTimeoutMs: 15000,
      maxResultBytes: 1048576,
      pipelineDepth: 2,
      maxPreparedStatements: 50,
    });
  });

  it("bindings whose names look like an option's variable are not read as options", () => {
    expect(optionsFromEnv({ EDGEPOOL_BUDGET: { idFromName() {} }, EDGEPOOL_MAX_CONNECTIONS: "3" })).toEqual({ maxConnections: 3 });
  });

  it("a numeric-looking resetQuery is kept as text", () => {
    expect(optionsFromEnv({ EDGEPOOL_RESET_QUERY: "1" })).toEqual({ resetQuery: "1" });
  });

  it("a value that is not a number is kept as given, so resolveOptions names it", () => {
    expect(optionsFromEnv({ EDGEPOOL_MAX_CONNECTIONS: "ten" })).toEqual({ maxConnections: "ten" });
    const error = thrown(() => resolveOptions("default", optionsFromEnv({ EDGEPOOL_MAX_CONNECTIONS: "ten" })), "INVALID_OPTION");
    expect(error.message).toBe('INVALID_OPTION: option "maxConnections" = "ten" must be an integer >= 0');
    const empty = thrown(() => resolveOptions("default", optionsFromEnv({ EDGEPOOL_IDLE_TIMEOUT_MS: "" })), "INVALID_OPTION");
    expect(empty.message).toBe('INVALID_OPTION: option "idleTimeoutMs" = "" must be an integer >= 0');
  });

  it("a fractional variable is rejected as a non-integer", () => {
    const error = thrown(() => resolveOptions("default", optionsFromEnv({ EDGEPOOL_MAX_CONNECTIONS: "2.5" })), "INVALID_OPTION");
    expect(error.message).toBe('INVALID_OPTION: option "maxConnections" = 2.5 must be an integer >= 0');
  });

  it("no variables → no options", () => {
    expect(optionsFromEnv({ DATABASE_URL: "postgres://localhost/db" })).toEqual({});
  });
});

describe("maskPassword", () => {
  it("masks the authority's password and libpq's password query parameter, keeps the rest", () => {
    const masked = maskPassword("postgres://app:hunter2@db.example.com:6543/shop?password=s3cret&sslmode=require");
    expect(masked).not.toContain("hunter2");
    expect(masked).not.toContain("s3cret");
    expect(new URL(masked)).toMatchObject({ username: "app", password: "***", host: "db.example.com:6543", pathname: "/shop" });
    expect(new URL(masked).searchParams.get("password")).toBe("***");
    expect(new URL(masked).searchParams.get("sslmode")).toBe("require");
    expect(maskPassword("postgres://app@db/shop")).toBe("postgres://app@db/shop");
  });
});
