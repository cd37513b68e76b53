// connect() / postgresOptions() / pgOptions() over a WireTarget. The coordinator
// side is not built yet, so the target here forwards each session's bytes to
// the real test Postgres over TCP: the drivers, the tunnel and the server are real.
import net from "node:net";
import { Duplex } from "node:stream";
import pg from "pg";
import postgres from "postgres";
import { describe, expect, inject, it } from "vitest";
import { PoolError } from "../../src/errors.ts";
import type { WireMode, WireTarget } from "../../src/protocol.ts";
import { connect, pgOptions, postgresOptions } from "../../src/wire.ts";

const url = new URL(inject("databaseUrl"));
const login = { user: decodeURIComponent(url.username), password: decodeURIComponent(url.password), database: url.pathname.slice(1) || "postgres" };

/** A target that opens a TCP connection to the test server per session, recording each call. */
function tcpTarget() {
  const calls: { tenant: string; mode: WireMode }[] = [];
  const target: WireTarget = {
    wire(tenant, { mode }, inbound) {
      calls.push({ tenant, mode });
      return new Promise((resolve, reject) => {
        const tcp = net.connect(Number(url.port || 5432), url.hostname, () => {
          tcp.setNoDelay(true);
          const { readable, writable } = Duplex.toWeb(tcp) as unknown as { readable: ReadableStream<Uint8Array>; writable: WritableStream<Uint8Array> };
          void inbound.pipeTo(writable).catch(() => tcp.destroy());
          resolve(readable);
        });
        tcp.once("error", reject);
      });
    },
  };
  return { target, calls };
}

function invalid(run: () => unknown): PoolError {
  try {
    run();
  } catch (error) {
    expect(error).toBeInstanceOf(PoolError);
    expect((error as PoolError).code).toBe("INVALID_OPTION");
    return error as PoolError;
  }
  throw new Error("expected INVALID_OPTION");
}

describe("postgresOptions", () => {
  it("postgres.js runs over sessions opened on the target for the tenant, in transaction mode by default", async () => {
    const { target, calls } = tcpTarget();
    const sql = postgres(postgresOptions(target, { tenant: "acme", ...login }));
    const [row] = await sql`select ${"x"}::text as x, current_user as who`;
    expect(row).toEqual({ x: "x", who: login.user });
    await sql.end();
    expect(calls).toEqual([{ tenant: "acme", mode: "transaction" }]);
  });

  it("session mode reaches the target; LISTEN/NOTIFY works through it", async () => {
    const { target, calls } = tcpTarget();
    const sql = postgres(postgresOptions(target, { tenant: "acme", mode: "session", ...login }));
    const got = new Promise<string>((resolve) => void sql.listen("opts_chan", resolve));
    await new Promise((r) => setTimeout(r, 50));
    await sql.notify("opts_chan", "hi");
    expect(await got).toBe("hi");
    await sql.end();
    expect(calls.every((c) => c.mode === "session")).toBe(true);
  });

  it("defaults suit one instance per request; the caller's options win", () => {
    const { target } = tcpTarget();
    const defaults = postgresOptions(target, { tenant: "acme" });
    expect(defaults).toMatchObject({ max: 1, idle_timeout: 10, max_lifetime: 0, fetch_types: false, user: "edgepool", database: "acme", ssl: false });
    expect("prepare" in defaults).toBe(false);
    expect(typeof defaults.socket).toBe("function");
    const mine = postgresOptions(target, { tenant: "acme", max: 5, fetch_types: true, prepare: false, user: "me" });
    expect(mine).toMatchObject({ max: 5, fetch_types: true, prepare: false, user: "me" });
    expect("tenant" in mine || "mode" in mine).toBe(false);
  });

  it("without fetch_types an int[] column arrives as its text form, with it as an array (one more query per instance)", async () => {
    const { target } = tcpTarget();
    const lean = postgres(postgresOptions(target, { tenant: "acme", ...login }));
    expect((await lean`select array[1,2]::int[] as a`)[0]!.a).toBe("{1,2}");
    await lean.end();
    const typed = postgres(postgresOptions(target, { tenant: "acme", ...login, fetch_types: true }));
    expect((await typed`select array[1,2]::int[] as a`)[0]!.a).toEqual([1, 2]);
    await typed.end();
  });

  it("rejects pool options and options that would leave the tunnel, naming the key", () => {
    const { target } = tcpTarget();
    expect(invalid(() => postgresOptions(target, { tenant: "acme", acquireTimeoutMs: 10 })).message).toBe(
      'INVALID_OPTION: option "acquireTimeoutMs" is a pool option: set it on the tenant, not on a driver',
    );
    for (const key of ["socket", "host", "port", "path"]) {
      expect(invalid(() => postgresOptions(target, { tenant: "acme", [key]: "x" })).message).toContain(`option "${key}" cannot be set`);
    }
    expect(invalid(() => postgresOptions(target, { tenant: "acme", ssl: "require" })).message).toContain('option "ssl" must be false');
    expect(postgresOptions(target, { tenant: "acme", ssl: false }).ssl).toBe(false);
  });
});

describe("pgOptions", () => {
  it("pg.Pool opens one session per pg connection (stream as a function)", async () => {
    const { target, calls } = tcpTarget();
    const pool = new pg.Pool(pgOptions(target, { tenant: "acme", ...login, max: 2 }));
    const results = await Promise.all(Array.from({ length: 6 }, (_, i) => pool.query("select $1::int as i, pg_backend_pid() as pid, pg_sleep(0.02)", [i])));
    expect(results.map((r) => r.rows[0].i)).toEqual([0, 1, 2, 3, 4, 5]);
    expect(new Set(results.map((r) => r.rows[0].pid)).size).toBe(2);
    await pool.end();
    expect(calls).toEqual([{ tenant: "acme", mode: "transaction" }, { tenant: "acme", mode: "transaction" }]);
  });

  it("pg.Client runs over it too", async () => {
    const { target } = tcpTarget();
    const client = new pg.Client(pgOptions(target, { tenant: "acme", mode: "session", ...login }));
    await client.connect();
    expect((await client.query("select 1 as one")).rows).toEqual([{ one: 1 }]);
    await client.end();
  });

  it("defaults, overrides, and the keys it refuses", () => {
    const { target } = tcpTarget();
    expect(pgOptions(target, { tenant: "acme" })).toMatchObject({ max: 1, idleTimeoutMillis: 10_000, user: "edgepool", database: "acme", ssl: false });
    expect(pgOptions(target, { tenant: "acme", max: 4 }).max).toBe(4);
    for (const key of ["stream", "host", "port", "connectionString"]) {
      expect(invalid(() => pgOptions(target, { tenant: "acme", [key]: "x" })).message).toContain(`option "${key}" cannot be set`);
    }
    invalid(() => pgOptions(target, { tenant: "acme", ssl: true }));
  });
});

describe("connect", () => {
  it("returns a socket on a session for the tenant and mode", async () => {
    const { target, calls } = tcpTarget();
    const socket = connect(target, { tenant: "t1", mode: "session" });
    // An SSLRequest: the server answers one byte, N (no TLS on the test server) or S.
    socket.write(Uint8Array.of(0, 0, 0, 8, 4, 210, 22, 47));
    const answer = await new Promise<Buffer>((resolve) => socket.once("data", resolve));
    expect(["N", "S"]).toContain(answer.toString());
    socket.destroy();
    expect(calls).toEqual([{ tenant: "t1", mode: "session" }]);
  });

  it("rejects unknown keys, a bad mode and a missing tenant", () => {
    const { target } = tcpTarget();
    expect(invalid(() => connect(target, { tenant: "acme", max: 1 } as never)).message).toBe(
      'INVALID_OPTION: option "max" is not a connect() option (known: tenant, mode, token)',
    );
    expect(invalid(() => connect(target, { tenant: "acme", mode: "statement" as never })).message).toBe(
      'INVALID_OPTION: option "mode" must be "transaction" or "session"',
    );
    invalid(() => connect(target, { tenant: "" }));
    invalid(() => connect(target, {} as never));
  });

  it("a URL target needs an http(s) URL and a token; a binding target takes no token; the token is never echoed", () => {
    const { target } = tcpTarget();
    const token = "ep1.c2VjcmV0.c2lnbmF0dXJl";
    expect(invalid(() => connect("https://pool.example.com", { tenant: "acme" })).message).toBe(
      'INVALID_OPTION: option "token" is required for a remote target (POST /v1/tenants/acme/tokens issues one)',
    );
    expect(invalid(() => postgresOptions("ftp://pool.example.com", { tenant: "acme", token })).message).toMatch(/^INVALID_OPTION: target .* must be the coordinator's http\(s\) URL$/);
    const binding = invalid(() => pgOptions(target, { tenant: "acme", token }));
    expect(binding.message).toBe('INVALID_OPTION: option "token" is for a remote (URL) target only: a binding is its own credential');
    expect(binding.message).not.toContain(token);
    expect(postgresOptions("https://pool.example.com", { tenant: "acme", token }).socket).toBeTypeOf("function");
  });
});
