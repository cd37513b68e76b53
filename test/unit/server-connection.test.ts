import { createHash } from "node:crypto";
import postgres from "postgres";
import { afterAll, beforeAll, describe, expect, inject, test } from "vitest";
import type { Receiver } from "../../worker/wire/backend.ts";
import { parseServerUrl, type ServerConfig, type SslMode } from "../../worker/server/config.ts";
import { ServerConnection } from "../../worker/server/connection.ts";
import { query } from "../../worker/wire/messages.ts";
import type { ByteSocket, Connector } from "../../worker/server/socket.ts";
import { freePort, startEmbeddedPostgres, type EmbeddedPostgresHandle } from "../setup/embedded.ts";
import { installServerCertificate, prependHba, testCertificates, type TestCertificates } from "../setup/tls.ts";
import { nodeConnector } from "../support/node-socket.ts";

const MD5_PASSWORD = "md5-pass-5f1c9e";
const CLEAR_PASSWORD = "clear-pass-7a2b4d";

let certs: TestCertificates;
let caPem: string;
/** Plain TCP only; md5user (md5) and clearuser (password) besides the SCRAM superuser. */
let plain: EmbeddedPostgresHandle;
/** TLS only: `hostnossl ... reject`, certificate signed by a test CA, SAN IP:127.0.0.1 and DNS:localhost. */
let tlsOnly: EmbeddedPostgresHandle;
/** Independent observer of the servers' side (postgres.js). */
let observers: postgres.Sql[] = [];
const opened: ServerConnection[] = [];

function url(base: string, user: string, password: string, sslmode: SslMode, host = "127.0.0.1"): ServerConfig {
  const u = new URL(base);
  u.username = user;
  u.password = password;
  u.hostname = host;
  u.searchParams.set("sslmode", sslmode);
  return parseServerUrl(u.toString());
}

function superuser(base: string, sslmode: SslMode, host?: string): ServerConfig {
  const u = new URL(base);
  return url(base, decodeURIComponent(u.username), decodeURIComponent(u.password), sslmode, host);
}

async function open(connector: Connector, config: ServerConfig, options: Parameters<typeof ServerConnection.open>[2] = {}) {
  const connection = await ServerConnection.open(connector, config, options);
  opened.push(connection);
  return connection;
}

function observe(base: string, ssl?: object) {
  const sql = postgres(base, { max: 1, onnotice: () => {}, ssl: ssl ?? false });
  observers.push(sql);
  return sql;
}

/** Message, then why it failed; never resolves to a connection. */
async function openFails(connector: Connector, config: ServerConfig): Promise<Error & { code?: string }> {
  const error = await ServerConnection.open(connector, config).then(
    (c) => {
      opened.push(c);
      throw new Error("connected, but should have failed");
    },
    (e: Error) => e,
  );
  return error as Error & { code?: string };
}

beforeAll(async () => {
  certs = testCertificates("edgepool test CA");
  caPem = certs.caPem;

  [plain, tlsOnly] = await Promise.all([
    startEmbeddedPostgres({
      beforeStart: async (dir) => prependHba(dir, ["host all md5user 127.0.0.1/32 md5", "host all clearuser 127.0.0.1/32 password"]),
    }),
    startEmbeddedPostgres({
      flags: ["ssl=on"],
      beforeStart: async (dir) => {
        prependHba(dir, ["hostnossl all all 127.0.0.1/32 reject"]);
        installServerCertificate(certs, dir);
      },
    }),
  ]);
  const admin = observe(plain.url);
  await admin.unsafe(`set password_encryption = 'md5'; create role md5user login password '${MD5_PASSWORD}'`);
  await admin.unsafe(`reset password_encryption; create role clearuser login password '${CLEAR_PASSWORD}'`);
});

afterAll(async () => {
  await Promise.all(opened.map((c) => c.close()));
  await Promise.all(observers.map((sql) => sql.end({ timeout: 0 })));
  await Promise.all([plain?.stop(), tlsOnly?.stop()]);
  certs?.remove();
});

describe("authentication", () => {
  test("a SCRAM-SHA-256 role logs in (the server reports scram-sha-256 as the method)", async () => {
    const connection = await open(nodeConnector(), parseServerUrl(inject("databaseUrl")));
    const [result] = await connection.query("select current_user, system_user, pg_backend_pid()");
    expect(result!.rows[0]![0]).toBe(new URL(inject("databaseUrl")).username);
    expect(result!.rows[0]![1]).toMatch(/^scram-sha-256:/);
    expect(Number(result!.rows[0]![2])).toBe(connection.pid);
  });

  test("an md5 role and a cleartext-password role log in with those methods", async () => {
    const md5 = await open(nodeConnector(), url(plain.url, "md5user", MD5_PASSWORD, "disable"));
    const clear = await open(nodeConnector(), url(plain.url, "clearuser", CLEAR_PASSWORD, "disable"));
    expect((await md5.query("select current_user, system_user"))[0]!.rows).toEqual([["md5user", "md5:md5user"]]);
    expect((await clear.query("select current_user, system_user"))[0]!.rows).toEqual([["clearuser", "password:clearuser"]]);
  });

  test.each([
    ["scram", "postgres"],
    ["md5", "md5user"],
    ["cleartext", "clearuser"],
  ])("a wrong password (%s) fails with 28P01, and the password is nowhere in the error", async (_method, user) => {
    const wrong = "Wr0ng-S3cret-xyz";
    const error = await openFails(nodeConnector(), url(plain.url, user, wrong, "disable"));
    expect(error.message).toMatch(/password authentication failed/);
    expect(error.message).toContain("28P01");
    expect(error.code).toBe("28P01");
    expect(`${error.message} ${error.stack} ${JSON.stringify(error)}`).not.toContain(wrong);
  });

  test("a refused TCP connection names the cause", async () => {
    const port = await freePort();
    const error = await openFails(nodeConnector(), parseServerUrl(`postgres://postgres:pw@127.0.0.1:${port}/postgres?sslmode=disable`));
    expect(error.message).toMatch(/ECONNREFUSED/);
  });
});

describe("TLS per sslmode", () => {
  const sslOf = async (connection: ServerConnection) =>
    (await connection.query("select ssl from pg_stat_ssl where pid = pg_backend_pid()"))[0]!.rows[0]![0];

  test("sslmode=require connects over TLS (pg_stat_ssl says so)", async () => {
    const connection = await open(nodeConnector({ ca: caPem, checkHostname: false }), superuser(tlsOnly.url, "require"));
    expect(connection.tls).toBe(true);
    expect(await sslOf(connection)).toBe("t");
  });

  test("sslmode=verify-full connects over TLS with the CA trusted and the host name checked", async () => {
    const connection = await open(nodeConnector({ ca: caPem }), superuser(tlsOnly.url, "verify-full", "localhost"));
    expect(await sslOf(connection)).toBe("t");
  });

  test("a certificate from an unknown CA fails with the TLS cause in the error", async () => {
    const error = await openFails(nodeConnector(), superuser(tlsOnly.url, "verify-full"));
    expect(error.message).toMatch(/^TLS handshake failed: .*(self-signed|unable to (verify|get local issuer))/);
  });

  test("sslmode=prefer upgrades when the server offers TLS", async () => {
    const connection = await open(nodeConnector({ ca: caPem }), superuser(tlsOnly.url, "prefer"));
    expect(await sslOf(connection)).toBe("t");
  });

  test("sslmode=prefer falls back to plaintext when the server answers N", async () => {
    const connection = await open(nodeConnector({ ca: caPem }), superuser(plain.url, "prefer"));
    expect(connection.tls).toBe(false);
    expect(await sslOf(connection)).toBe("f");
  });

  test("sslmode=require against a server without TLS fails, saying so", async () => {
    const error = await openFails(nodeConnector({ ca: caPem }), superuser(plain.url, "require"));
    expect(error.message).toBe("the server does not support TLS (sslmode=require)");
  });

  test("sslmode=disable against a TLS-only server is refused by the server (28000, no encryption)", async () => {
    const error = await openFails(nodeConnector(), superuser(tlsOnly.url, "disable"));
    expect(error.code).toBe("28000");
    expect(error.message).toMatch(/no encryption/);
  });
});

describe("a connection's life", () => {
  test("query() returns one result per statement, text values and NULLs, and keeps SQLSTATE and severity on errors", async () => {
    const connection = await open(nodeConnector(), superuser(plain.url, "disable"));
    const results = await connection.query("select 1 as a, null as b; select 'x' union all select 'y'; discard plans");
    expect(results).toEqual([
      { command: "SELECT 1", rows: [["1", null]] },
      { command: "SELECT 2", rows: [["x"], ["y"]] },
      { command: "DISCARD PLANS", rows: [] },
    ]);
    const error = await connection.query("select 1/0").catch((e) => e);
    expect(error).toMatchObject({ code: "22012", severity: "ERROR", message: "division by zero" });
    expect((await connection.query("select 2"))[0]!.rows).toEqual([["2"]]);
  });

  test("transactionStatus follows every ReadyForQuery", async () => {
    const connection = await open(nodeConnector(), superuser(plain.url, "disable"));
    expect(connection.transactionStatus).toBe("I");
    await connection.query("begin");
    expect(connection.transactionStatus).toBe("T");
    await connection.query("select 1/0").catch(() => {});
    expect(connection.transactionStatus).toBe("E");
    await connection.query("rollback");
    expect(connection.transactionStatus).toBe("I");
  });

  test("startup parameters reach the server and ParameterStatus updates parameters while a receiver is attached", async () => {
    const connection = await open(nodeConnector(), superuser(plain.url, "disable"), {
      parameters: { application_name: "edgepool:test", idle_in_transaction_session_timeout: "60000" },
    });
    expect(connection.parameters.get("application_name")).toBe("edgepool:test");
    expect((await connection.query("show idle_in_transaction_session_timeout"))[0]!.rows).toEqual([["1min"]]);
    const types: string[] = [];
    await new Promise<void>((resolve, reject) => {
      connection.receive({
        message: (type) => void (types.push(String.fromCharCode(type)), type === 0x5a && resolve()),
        flush: () => {},
        closed: reject,
      });
      void connection.write(query("set application_name = 'renamed'"));
    });
    connection.receive(undefined);
    expect(types).toEqual(["C", "S", "Z"]);
    expect(connection.parameters.get("application_name")).toBe("renamed");
  });

  test("with no receiver attached a NotificationResponse is dropped and the connection stays usable", async () => {
    const connection = await open(nodeConnector(), superuser(plain.url, "disable"));
    await connection.query("listen edgepool_test");
    await observe(plain.url)`select pg_notify('edgepool_test', 'hello')`;
    await new Promise((r) => setTimeout(r, 100));
    expect(connection.closed).toBe(false);
    expect((await connection.query("select 1"))[0]!.rows).toEqual([["1"]]);
  });

  test("cancel() ends the running pg_sleep on that backend with 57014, and only there", async () => {
    const connection = await open(nodeConnector(), superuser(plain.url, "disable"));
    const bystander = await open(nodeConnector(), superuser(plain.url, "disable"));
    const observer = observe(plain.url);
    const started = Date.now();
    const sleeping = connection.query("select pg_sleep(30)").catch((e) => e);
    const other = bystander.query("select pg_sleep(1.5), 'done'");
    for (let i = 0; i < 100; i++) {
      const [row] = await observer`select state from pg_stat_activity where pid = ${connection.pid}`;
      if (row?.state === "active") break;
      await new Promise((r) => setTimeout(r, 20));
    }
    await connection.cancel();
    const error = await sleeping;
    expect(error).toMatchObject({ code: "57014" });
    expect(Date.now() - started).toBeLessThan(10_000);
    expect((await other)[0]!.rows[0]![1]).toBe("done");
    expect((await connection.query("select 1"))[0]!.rows).toEqual([["1"]]);
  });

  test("cancel() over TLS reaches a TLS-only server", async () => {
    const connection = await open(nodeConnector({ ca: caPem }), superuser(tlsOnly.url, "require"));
    const sleeping = connection.query("select pg_sleep(30)").catch((e) => e);
    await new Promise((r) => setTimeout(r, 200));
    await connection.cancel();
    expect(await sleeping).toMatchObject({ code: "57014" });
  });

  test("pg_terminate_backend fires onClose once with the server's cause; later use fails", async () => {
    const causes: Error[] = [];
    const connection = await open(nodeConnector(), superuser(plain.url, "disable"), { onClose: (cause) => causes.push(cause) });
    await observe(plain.url)`select pg_terminate_backend(${connection.pid})`;
    for (let i = 0; i < 100 && causes.length === 0; i++) await new Promise((r) => setTimeout(r, 20));
    expect(causes).toHaveLength(1);
    expect(causes[0]).toMatchObject({ code: "57P01" });
    expect(connection.closed).toBe(true);
    await expect(connection.query("select 1")).rejects.toThrow();
  });

  test("close() sends Terminate: the backend is gone on the server, and onClose does not fire", async () => {
    let fired = false;
    const connection = await open(nodeConnector(), superuser(plain.url, "disable"), { onClose: () => (fired = true) });
    const observer = observe(plain.url);
    await connection.close();
    let rows: readonly unknown[] = [1];
    for (let i = 0; i < 100 && rows.length > 0; i++) {
      rows = await observer`select 1 from pg_stat_activity where pid = ${connection.pid}`;
      if (rows.length > 0) await new Promise((r) => setTimeout(r, 20));
    }
    expect(rows).toEqual([]);
    expect(fired).toBe(false);
  });
});

/** Collects whole frames until ReadyForQuery. */
function collector(connection: ServerConnection) {
  const frames: Uint8Array[] = [];
  const done = new Promise<void>((resolve, reject) => {
    connection.receive({
      message(type, frame) {
        frames.push(frame);
        if (type === 0x5a) resolve();
      },
      flush() {},
      closed: reject,
    });
  });
  return { frames, done };
}

function dataRowText(frame: Uint8Array): string[] {
  const view = new DataView(frame.buffer, frame.byteOffset, frame.byteLength);
  const values: string[] = [];
  let at = 7;
  for (let i = 0; i < view.getInt16(5); i++) {
    const length = view.getInt32(at);
    values.push(Buffer.from(frame.subarray(at + 4, at + 4 + length)).toString());
    at += 4 + length;
  }
  return values;
}

describe("framing", () => {
  test("a 5 MB result reaches the receiver intact: many rows and one 5 MB row split across reads", async () => {
    const connection = await open(nodeConnector(), superuser(plain.url, "disable"));
    const many = collector(connection);
    await connection.write(query("select i, repeat(md5(i::text), 1000) from generate_series(1, 160) i"));
    await many.done;
    const rows = many.frames.filter((f) => f[0] === 0x44).map(dataRowText);
    expect(rows).toHaveLength(160);
    rows.forEach(([i, value]) => expect(value).toBe(createHash("md5").update(i!).digest("hex").repeat(1000)));

    const one = collector(connection);
    await connection.write(query("select repeat('ab', 2621440)"));
    await one.done;
    connection.receive(undefined);
    const [[big]] = one.frames.filter((f) => f[0] === 0x44).map(dataRowText);
    expect(big).toHaveLength(5 * 1024 * 1024);
    expect(big).toBe("ab".repeat(2621440));
    expect(connection.transactionStatus).toBe("I");
  });
});

/** A scripted server behind the socket interface: serves queued chunks one per read, records writes. */
function fakeServer(startup: Uint8Array[]) {
  const queue = [...startup];
  let wake: (() => void) | undefined;
  const state = { reads: 0, written: [] as Uint8Array[] };
  const readable = new ReadableStream<Uint8Array>(
    {
      async pull(controller) {
        while (queue.length === 0) await new Promise<void>((r) => (wake = r));
        state.reads++;
        controller.enqueue(queue.shift()!);
      },
    },
    { highWaterMark: 0 },
  );
  const writable = new WritableStream<Uint8Array>({ write: (chunk) => void state.written.push(chunk) });
  const socket: ByteSocket = {
    readable,
    writable,
    opened: Promise.resolve(),
    closed: new Promise(() => {}),
    close: async () => {},
    startTls: () => {
      throw new Error("no TLS here");
    },
  };
  const connector: Connector = () => socket;
  return {
    connector,
    state,
    push(...chunks: Uint8Array[]) {
      queue.push(...chunks);
      wake?.();
    },
  };
}

function message(type: string, body: Uint8Array | string = new Uint8Array(0)): Uint8Array {
  const bytes = typeof body === "string" ? new TextEncoder().encode(body) : body;
  const out = new Uint8Array(5 + bytes.length);
  out[0] = type.charCodeAt(0);
  new DataView(out.buffer).setInt32(1, 4 + bytes.length);
  out.set(bytes, 5);
  return out;
}

function int32s(...values: number[]): Uint8Array {
  const out = new Uint8Array(values.length * 4);
  values.forEach((v, i) => new DataView(out.buffer).setInt32(i * 4, v));
  return out;
}

const concat = (...parts: Uint8Array[]) => Uint8Array.from(parts.flatMap((p) => [...p]));
const bytesOf = (parts: Uint8Array) => [...parts].map((b) => Uint8Array.of(b));

const STARTUP_REPLY = concat(
  message("R", int32s(0)),
  message("S", "server_version\u000018.0\u0000"),
  message("K", int32s(4242, 0x01020304)),
  message("Z", "I"),
);
const FAKE_CONFIG = parseServerUrl("postgres://u:p@fake:5432/db?sslmode=disable");

describe("framing (scripted server)", () => {
  test("messages fed one byte per read arrive whole, in order, with status and parameters tracked", async () => {
    const server = fakeServer(bytesOf(STARTUP_REPLY));
    const connection = await ServerConnection.open(server.connector, FAKE_CONFIG);
    expect(connection.pid).toBe(4242);
    expect(connection.parameters.get("server_version")).toBe("18.0");
    const stream = [
      message("T", new Uint8Array(20)),
      message("D", concat(Uint8Array.of(0, 1), int32s(3), new TextEncoder().encode("abc"))),
      message("C", "SELECT 1\u0000"),
      message("S", "TimeZone\u0000UTC\u0000"),
      message("Z", "T"),
    ];
    const got: Uint8Array[] = [];
    const done = new Promise<void>((resolve) =>
      connection.receive({ message: (type, frame) => void (got.push(frame.slice()), type === 0x5a && resolve()), flush() {}, closed() {} }),
    );
    server.push(...bytesOf(concat(...stream)));
    await done;
    expect(got).toEqual(stream);
    expect(connection.transactionStatus).toBe("T");
    expect(connection.parameters.get("TimeZone")).toBe("UTC");
  });

  test("messages wholly inside one read are views of that read, not copies", async () => {
    const server = fakeServer([STARTUP_REPLY]);
    const connection = await ServerConnection.open(server.connector, FAKE_CONFIG);
    const chunk = concat(message("C", "SELECT 0\u0000"), message("Z", "I"));
    const frames: Uint8Array[] = [];
    const done = new Promise<void>((resolve) =>
      connection.receive({ message: (type, frame) => void (frames.push(frame), type === 0x5a && resolve()), flush() {}, closed() {} }),
    );
    server.push(chunk);
    await done;
    expect(frames.map((f) => f.buffer)).toEqual([chunk.buffer, chunk.buffer]);
  });

  test("a receiver whose flush() is pending holds the next read until it resolves (backpressure)", async () => {
    const server = fakeServer([STARTUP_REPLY]);
    const connection = await ServerConnection.open(server.connector, FAKE_CONFIG);
    const readsAfterStartup = server.state.reads;
    let release!: () => void;
    const types: string[] = [];
    let flushes = 0;
    connection.receive({
      message: (type) => void types.push(String.fromCharCode(type)),
      flush: () => (++flushes === 1 ? new Promise<void>((r) => (release = r)) : undefined),
      closed() {},
    });
    server.push(message("D", Uint8Array.of(0, 0)), message("D", Uint8Array.of(0, 0)), message("Z", "I"));
    await new Promise((r) => setTimeout(r, 50));
    expect(types).toEqual(["D"]);
    // The read that delivered the first message, plus none while its flush is pending.
    expect(server.state.reads - readsAfterStartup).toBe(1);
    release();
    await new Promise((r) => setTimeout(r, 50));
    expect(types).toEqual(["D", "D", "Z"]);
  });

  test("with no receiver attached an unexpected message breaks the connection and fires onClose", async () => {
    const server = fakeServer([STARTUP_REPLY]);
    const causes: Error[] = [];
    const connection = await ServerConnection.open(server.connector, FAKE_CONFIG, { onClose: (c) => causes.push(c) });
    server.push(message("N", "SWARNING\u0000Mjust a notice\u0000\u0000"), message("S", "a\u0000b\u0000"), message("A", int32s(1)));
    await new Promise((r) => setTimeout(r, 20));
    expect(connection.closed).toBe(false);
    server.push(message("D", Uint8Array.of(0, 0)));
    await new Promise((r) => setTimeout(r, 20));
    expect(connection.closed).toBe(true);
    expect(causes).toHaveLength(1);
    expect(causes[0]!.message).toMatch(/unexpected message \(type D\)/);
  });
});
