import { createServer, type Socket } from "node:net";
import postgres from "postgres";
import { afterAll, describe, expect, inject, test } from "vitest";
import { PoolError } from "../../src/errors.ts";
import { systemClock } from "../../worker/pool/clock.ts";
import { resolveOptions } from "../../worker/pool/options.ts";
import { Pool } from "../../worker/pool/pool.ts";
import type { ServerConnection } from "../../worker/server/connection.ts";
import { serverDriver } from "../../worker/server/driver.ts";
import { ServerError } from "../../worker/server/messages.ts";
import { freePort } from "../setup/embedded.ts";
import { nodeConnector } from "../support/node-socket.ts";

const databaseUrl = inject("databaseUrl");
const observer = postgres(databaseUrl, { max: 1, onnotice: () => {} });
const connections: ServerConnection[] = [];

afterAll(async () => {
  await Promise.all(connections.map((c) => c.close()));
  await observer.end({ timeout: 0 });
});

function driver(options: Record<string, unknown> = {}, connectionString = databaseUrl, broken: ServerConnection[] = []) {
  return serverDriver(
    { connectionString, tenant: "acme", options: resolveOptions("acme", options), onBroken: (c) => void broken.push(c) },
    nodeConnector(),
  );
}

async function open(d: ReturnType<typeof driver>) {
  const connection = await d.open(new AbortController().signal);
  connections.push(connection);
  return connection;
}

/** Parse (named, over the protocol) + Sync, as a driver prepares a statement. */
async function prepareOverProtocol(connection: ServerConnection, name: string, text: string) {
  const enc = new TextEncoder();
  const body = enc.encode(`${name}\0${text}\0\0\0`);
  const parse = new Uint8Array(5 + body.length);
  parse[0] = 0x50;
  new DataView(parse.buffer).setInt32(1, 4 + body.length);
  parse.set(body, 5);
  const sync = Uint8Array.of(0x53, 0, 0, 0, 4);
  await new Promise<void>((resolve, reject) => {
    connection.receive({ message: (type) => void (type === 0x5a && resolve()), flush() {}, closed: reject });
    void connection.write(parse).then(() => connection.write(sync));
  });
  connection.receive(undefined);
}

const statements = async (connection: ServerConnection) =>
  (await connection.query("select name, from_sql::text from pg_prepared_statements order by name"))[0]!.rows;

describe("serverDriver", () => {
  test("tags sessions edgepool:<tenant> and sets idle_in_transaction_session_timeout to twice leaseTimeoutMs (seen in pg_stat_activity)", async () => {
    const connection = await open(driver({ leaseTimeoutMs: 7_000 }));
    const [row] = await observer`select application_name from pg_stat_activity where pid = ${connection.pid}`;
    expect(row!.application_name).toBe("edgepool:acme");
    expect((await connection.query("show idle_in_transaction_session_timeout"))[0]!.rows).toEqual([["14s"]]);
  });

  test("validate runs select 1; a dead connection fails it", async () => {
    const d = driver();
    const connection = await open(d);
    await expect(d.validate(connection)).resolves.toBeUndefined();
    await connection.close();
    await expect(d.validate(connection)).rejects.toThrow();
  });

  test("the default reset (DISCARD ALL) rolls back, clears session state and SQL PREPAREs, keeps protocol-level statements and the epoch", async () => {
    const d = driver();
    const connection = await open(d);
    await prepareOverProtocol(connection, "proto_stmt", "select 1");
    await connection.query("prepare sql_stmt as select 2; set work_mem = '7MB'; create temp table t_reset (x int); begin");
    expect(await statements(connection)).toEqual([["proto_stmt", "false"], ["sql_stmt", "true"]]);
    await d.reset(connection);
    expect(await statements(connection)).toEqual([["proto_stmt", "false"]]);
    expect(connection.transactionStatus).toBe("I");
    expect((await connection.query("show work_mem"))[0]!.rows).toEqual([["4MB"]]);
    expect((await connection.query("select count(*) from pg_class where relname = 't_reset'"))[0]!.rows).toEqual([["0"]]);
    expect(connection.statementEpoch).toBe(0);
  });

  test("a custom resetQuery that drops statements (DEALLOCATE ALL) bumps statementEpoch; one that does not leaves it", async () => {
    const dropping = driver({ resetQuery: "DEALLOCATE ALL" });
    const connection = await open(dropping);
    await prepareOverProtocol(connection, "proto_stmt", "select 1");
    await connection.query("begin");
    await dropping.reset(connection);
    expect(await statements(connection)).toEqual([]);
    expect(connection.statementEpoch).toBe(1);
    expect(connection.transactionStatus).toBe("I");

    const keeping = driver({ resetQuery: "RESET ALL" });
    const other = await open(keeping);
    await keeping.reset(other);
    expect(other.statementEpoch).toBe(0);
  });

  test("isFatal: a server's ERROR is not, a FATAL/08xxx/57P0x or a socket failure is", () => {
    const d = driver();
    const error = (fields: Record<string, string>) => new ServerError(new Map(Object.entries(fields)));
    expect(d.isFatal(error({ C: "22012", V: "ERROR", M: "division by zero" }))).toBe(false);
    expect(d.isFatal(error({ C: "57P01", V: "FATAL", M: "terminating connection" }))).toBe(true);
    expect(d.isFatal(error({ C: "08006", V: "ERROR", M: "x" }))).toBe(true);
    expect(d.isFatal(new Error("the server closed the connection"))).toBe(true);
  });

  test("onBroken fires with the connection when the server terminates it", async () => {
    const broken: ServerConnection[] = [];
    const connection = await open(driver({}, databaseUrl, broken));
    await observer`select pg_terminate_backend(${connection.pid})`;
    for (let i = 0; i < 100 && broken.length === 0; i++) await new Promise((r) => setTimeout(r, 20));
    expect(broken).toEqual([connection]);
  });

  test("the abort signal closes the socket at once (a server that never answers sees it close)", async () => {
    const sockets: Socket[] = [];
    const closedAt: number[] = [];
    const silent = createServer((s) => {
      sockets.push(s);
      s.resume();
      s.on("close", () => closedAt.push(Date.now()));
      s.on("error", () => {});
    });
    await new Promise<void>((r) => silent.listen(0, "127.0.0.1", r));
    const { port } = silent.address() as { port: number };
    try {
      const d = driver({}, `postgres://u:secret@127.0.0.1:${port}/db?sslmode=disable`);
      const controller = new AbortController();
      const attempt = d.open(controller.signal).catch((e: Error) => e);
      while (sockets.length === 0) await new Promise((r) => setTimeout(r, 5));
      const abortedAt = Date.now();
      controller.abort();
      expect(await attempt).toBeInstanceOf(Error);
      for (let i = 0; i < 100 && closedAt.length === 0; i++) await new Promise((r) => setTimeout(r, 10));
      expect(closedAt[0]! - abortedAt).toBeLessThan(500);
    } finally {
      sockets.forEach((s) => s.destroy());
      await new Promise((r) => silent.close(r));
    }
  });
});

describe("CONNECT_FAILED through the pool core names the cause, never the password", () => {
  async function connectFailure(connectionString: string): Promise<PoolError> {
    const pool = new Pool({
      tenant: "acme",
      options: resolveOptions("acme", { acquireTimeoutMs: 5_000 }),
      driver: driver({}, connectionString),
      clock: systemClock,
    });
    try {
      const error = await pool.acquire().then(
        () => {
          throw new Error("acquired, but should have failed");
        },
        (e: PoolError) => e,
      );
      return error;
    } finally {
      await pool.drain();
    }
  }

  test("TCP refused", async () => {
    const port = await freePort();
    const error = await connectFailure(`postgres://postgres:hunter2pw@127.0.0.1:${port}/postgres?sslmode=disable`);
    expect(error.code).toBe("CONNECT_FAILED");
    expect(error.message).toMatch(new RegExp(`^CONNECT_FAILED: tenant "acme" could not connect to 127\\.0\\.0\\.1:${port}: .*ECONNREFUSED`));
    expect(error.message).not.toContain("hunter2pw");
  });

  test("authentication failed: SQLSTATE 28P01, no password", async () => {
    const url = new URL(databaseUrl);
    url.password = "Not-The-Password-42";
    const error = await connectFailure(url.toString());
    expect(error.message).toMatch(/^CONNECT_FAILED: tenant "acme" could not connect to .*: password authentication failed for user "postgres" \(SQLSTATE 28P01\)/);
    expect(error.message).not.toContain("Not-The-Password-42");
  });

  test("the server does not support TLS (sslmode=require)", async () => {
    const url = new URL(databaseUrl);
    url.searchParams.set("sslmode", "require");
    const error = await connectFailure(url.toString());
    expect(error.message).toContain("the server does not support TLS (sslmode=require)");
    expect(error.message).not.toContain(decodeURIComponent(url.password));
  });
});
