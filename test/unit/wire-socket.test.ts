// WireSocket under real drivers: postgres.js and pg run over a WireSocket whose
// tunnel is a TCP socket straight to the test Postgres (no coordinator yet), so
// every behaviour a driver needs from its socket is exercised against a real server.
import net from "node:net";
import { Duplex, Readable, Writable } from "node:stream";
import { pipeline } from "node:stream/promises";
import pg from "pg";
import postgres from "postgres";
import { afterAll, describe, expect, inject, it } from "vitest";
import { WireSocket, type Tunnel } from "../../src/socket.ts";

const url = new URL(inject("databaseUrl"));
const login = {
  user: decodeURIComponent(url.username),
  password: decodeURIComponent(url.password),
  database: url.pathname.slice(1) || "postgres",
};

/** What the tunnel under a socket saw: its TCP socket, and whether that closed. */
interface Probe {
  tcp?: net.Socket;
  tcpClosed: boolean;
  socket?: WireSocket;
  pauses: number;
  resumes: number;
}

function tcpTunnel(probe: Probe): Promise<Tunnel> {
  return new Promise((resolve, reject) => {
    const tcp = net.connect(Number(url.port || 5432), url.hostname, () => {
      tcp.setNoDelay(true);
      resolve(Duplex.toWeb(tcp) as unknown as Tunnel);
    });
    probe.tcp = tcp;
    tcp.once("error", reject);
    tcp.once("close", () => (probe.tcpClosed = true));
  });
}

/** A WireSocket to the real server, counting pause()/resume() calls. */
function wireSocket(probes: Probe[] = []): WireSocket {
  const probe: Probe = { tcpClosed: false, pauses: 0, resumes: 0 };
  probes.push(probe);
  const socket = new WireSocket(tcpTunnel(probe));
  probe.socket = socket;
  const { pause, resume } = socket;
  socket.pause = () => (probe.pauses++, pause.call(socket));
  socket.resume = () => (probe.resumes++, resume.call(socket));
  return socket;
}

function postgresOverWire(probes: Probe[], options: postgres.Options<{}> = {}) {
  // postgres.js' types omit `socket`; a non-literal object passes as it does from postgresOptions().
  const config = { ...login, socket: () => wireSocket(probes), ssl: false as const, max: 1, onnotice: () => {}, ...options };
  return postgres(config);
}

const admin = postgres({ host: url.hostname, port: Number(url.port || 5432), ...login, max: 1, onnotice: () => {} });
afterAll(() => admin.end());

async function backendAlive(pid: number): Promise<boolean> {
  const [row] = await admin`select count(*)::int as n from pg_stat_activity where pid = ${pid}`;
  return row!.n === 1;
}

async function waitFor(check: () => boolean | Promise<boolean>, timeoutMs = 5000): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > until) throw new Error("condition not met in time");
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe("postgres.js over a WireSocket", () => {
  it("runs simple and parameterized queries, prepared (named on the server) and unprepared", async () => {
    for (const prepare of [true, false]) {
      const probes: Probe[] = [];
      const sql = postgresOverWire(probes, { prepare });
      const [simple] = await sql.unsafe("select 1 as one, 'a'::text as t");
      expect(simple).toEqual({ one: 1, t: "a" });
      const rows = await sql`select ${41}::int + 1 as answer, ${"x"}::text as t`;
      expect(rows).toEqual([{ answer: 42, t: "x" }]);
      await sql`select ${41}::int + 1 as answer, ${"x"}::text as t`;
      const named = await sql`select count(*)::int as n from pg_prepared_statements where statement like 'select $1::int + 1 as answer%'`;
      expect(named[0]!.n).toBe(prepare ? 1 : 0);
      await sql.end();
      expect(probes).toHaveLength(1);
    }
  });

  it("commits a transaction and rolls one back on error (checked from another connection)", async () => {
    const sql = postgresOverWire([]);
    await admin`create table if not exists wire_tx (id int primary key)`;
    await admin`truncate wire_tx`;
    await sql.begin(async (tx) => {
      await tx`insert into wire_tx values (1)`;
      await tx`insert into wire_tx values (2)`;
    });
    await expect(sql.begin(async (tx) => {
      await tx`insert into wire_tx values (3)`;
      await tx`insert into wire_tx values (1)`;
    })).rejects.toMatchObject({ code: "23505" });
    const rows = await admin`select id from wire_tx order by id`;
    expect(rows.map((r) => r.id)).toEqual([1, 2]);
    await sql.end();
  });

  it("reports a database error, then runs the next query on the same connection", async () => {
    const sql = postgresOverWire([]);
    const [{ pid }] = await sql`select pg_backend_pid() as pid`;
    await expect(sql`select 1 / ${0}::int`).rejects.toMatchObject({ code: "22012" });
    const [after] = await sql`select pg_backend_pid() as pid, 2 as two`;
    expect(after).toEqual({ pid, two: 2 });
    await sql.end();
  });

  it("receives a 20 MB result whole", async () => {
    const sql = postgresOverWire([]);
    const rows = await sql`select i, repeat('x', 1000) as pad from generate_series(1, 20000) i`;
    expect(rows).toHaveLength(20000);
    expect(rows.at(-1)).toEqual({ i: 20000, pad: "x".repeat(1000) });
    await sql.end();
  });

  it("COPY TO STDOUT of 20 MB to a slow reader pauses and resumes the socket, and loses nothing", async () => {
    const probes: Probe[] = [];
    const sql = postgresOverWire(probes);
    const readable = await sql`copy (select i, repeat('y', 1000) from generate_series(1, 20000) i) to stdout`.readable();
    let lines = 0;
    let bytes = 0;
    await pipeline(readable, new Writable({
      highWaterMark: 1024,
      write(chunk: Buffer, _encoding, done) {
        bytes += chunk.length;
        for (const byte of chunk) if (byte === 10) lines++;
        // Slower than the socket: postgres.js' stream fills and pauses it.
        setImmediate(done);
      },
    }));
    expect(lines).toBe(20000);
    expect(bytes).toBe(20000 * 1001 + [...Array(20000).keys()].reduce((n, i) => n + String(i + 1).length + 1, 0));
    expect(probes[0]!.pauses).toBeGreaterThan(0);
    expect(probes[0]!.resumes).toBeGreaterThan(0);
    // postgres.js 3.4.9 leaves its socket paused when CopyDone comes in the chunk that filled its stream
    // (porsager/postgres#499, fix in PR #1016; its own net.Socket hangs the same way): resume as that fix does.
    probes[0]!.socket!.resume();
    // The connection is still in step after the COPY.
    expect(await sql`select 3 as three`).toEqual([{ three: 3 }]);
    await sql.end();
  });

  it("COPY FROM STDIN loads 10,000 rows", async () => {
    const sql = postgresOverWire([]);
    await admin`create table if not exists wire_copy (id int, label text)`;
    await admin`truncate wire_copy`;
    const writable = await sql`copy wire_copy (id, label) from stdin`.writable();
    await pipeline(Readable.from((function* () {
      for (let i = 1; i <= 10_000; i++) yield `${i}\tlabel ${i}\n`;
    })()), writable);
    const [row] = await admin`select count(*)::int as n, sum(id)::int as total from wire_copy`;
    expect(row).toEqual({ n: 10_000, total: 50_005_000 });
    await sql.end();
  });

  it("LISTEN receives a NOTIFY sent from another connection", async () => {
    const sql = postgresOverWire([]);
    const received: string[] = [];
    const { unlisten } = await sql.listen("wire_chan", (payload) => received.push(payload));
    await admin`select pg_notify('wire_chan', 'hello')`;
    await waitFor(() => received.length === 1);
    expect(received).toEqual(["hello"]);
    await unlisten();
    await sql.end();
  });

  it("pipelines 500 concurrent queries on one connection, answers in order", async () => {
    const probes: Probe[] = [];
    const sql = postgresOverWire(probes);
    const results = await Promise.all(Array.from({ length: 500 }, (_, i) => sql`select ${i}::int as i, pg_backend_pid() as pid`));
    expect(results.map(([r]) => r!.i)).toEqual([...Array(500).keys()]);
    expect(new Set(results.map(([r]) => r!.pid)).size).toBe(1);
    expect(probes).toHaveLength(1);
    await sql.end();
  });

  it("sql.end() closes the tunnel, and the server backend goes away", async () => {
    const probes: Probe[] = [];
    const sql = postgresOverWire(probes);
    const [{ pid }] = await sql`select pg_backend_pid() as pid`;
    expect(await backendAlive(pid)).toBe(true);
    await sql.end();
    await waitFor(() => probes[0]!.tcpClosed);
    await waitFor(async () => !(await backendAlive(pid)));
  });
});

describe("pg over a WireSocket", () => {
  const config = (probes: Probe[]) => ({ ...login, host: "ignored.invalid", port: 1, ssl: false, stream: () => wireSocket(probes) as unknown as Duplex });

  it("Client: simple and parameterized queries, an error then a query, a transaction", async () => {
    const client = new pg.Client(config([]));
    await client.connect();
    // A multi-statement text resolves to one result per statement (pg's types say one).
    const results = (await client.query("select 1 as one; select 2 as two")) as unknown as pg.QueryResult[];
    expect(results.map((r) => r.rows)).toEqual([[{ one: 1 }], [{ two: 2 }]]);
    expect((await client.query("select $1::int + 1 as n", [1])).rows).toEqual([{ n: 2 }]);
    await expect(client.query("select 1 / $1::int", [0])).rejects.toMatchObject({ code: "22012" });
    await client.query("create temp table t (id int)");
    await client.query("begin");
    await client.query("insert into t values (1), (2)");
    await client.query("rollback");
    await client.query("begin");
    await client.query("insert into t values (3)");
    await client.query("commit");
    expect((await client.query("select id from t")).rows).toEqual([{ id: 3 }]);
    await client.end();
  });

  it("Client: receives a 20 MB result whole", async () => {
    const client = new pg.Client(config([]));
    await client.connect();
    const { rows } = await client.query("select i, repeat('x', 1000) as pad from generate_series(1, 20000) i");
    expect(rows).toHaveLength(20000);
    expect(rows.at(-1)).toEqual({ i: 20000, pad: "x".repeat(1000) });
    await client.end();
  });

  it("Client: end() closes the tunnel, and the server backend goes away", async () => {
    const probes: Probe[] = [];
    const client = new pg.Client(config(probes));
    await client.connect();
    const { rows: [{ pid }] } = await client.query("select pg_backend_pid() as pid");
    await client.end();
    await waitFor(() => probes[0]!.tcpClosed);
    await waitFor(async () => !(await backendAlive(pid)));
  });

  it("Pool: each pg connection gets its own socket (stream as a function)", async () => {
    const probes: Probe[] = [];
    const pool = new pg.Pool({ ...config(probes), max: 3 });
    const results = await Promise.all(Array.from({ length: 30 }, (_, i) => pool.query("select $1::int as i, pg_backend_pid() as pid, pg_sleep(0.01)", [i])));
    expect(results.map((r) => r.rows[0].i)).toEqual([...Array(30).keys()]);
    const pids = new Set(results.map((r) => r.rows[0].pid));
    expect(pids.size).toBe(3);
    expect(probes).toHaveLength(3);
    await pool.end();
    await waitFor(() => probes.every((p) => p.tcpClosed));
  });
});

describe("WireSocket backpressure", () => {
  it("write() returns false when the tunnel is full and emits drain once it is read", async () => {
    const inbound = new TransformStream<Uint8Array, Uint8Array>(undefined, new ByteLengthQueuingStrategy({ highWaterMark: 8 }));
    const socket = new WireSocket(Promise.resolve({ readable: new ReadableStream<Uint8Array>(), writable: inbound.writable }));
    expect(socket.write(new Uint8Array(4))).toBe(true);
    await new Promise((r) => setTimeout(r, 0));
    expect(socket.write(new Uint8Array(16))).toBe(false);
    const drained = new Promise((r) => socket.once("drain", r));
    const reader = inbound.readable.getReader();
    let read = 0;
    while (read < 20) read += (await reader.read()).value!.byteLength;
    await drained;
    socket.destroy();
  });

  it("writes made before the tunnel opens are sent in order", async () => {
    let open!: (t: Tunnel) => void;
    const socket = new WireSocket(new Promise<Tunnel>((r) => (open = r)));
    const inbound = new TransformStream<Uint8Array, Uint8Array>();
    const written: number[] = [];
    socket.write(Uint8Array.of(1), () => written.push(1));
    socket.write(Uint8Array.of(2, 3), () => written.push(2));
    open({ readable: new ReadableStream(), writable: inbound.writable });
    const reader = inbound.readable.getReader();
    expect([...(await reader.read()).value!, ...(await reader.read()).value!]).toEqual([1, 2, 3]);
    await new Promise((r) => setTimeout(r, 0));
    expect(written).toEqual([1, 2]);
    socket.destroy();
  });

  it("a failing readable emits error then close", async () => {
    const failure = new Error("tunnel broke");
    const socket = new WireSocket(Promise.resolve({
      readable: new ReadableStream<Uint8Array>({ pull: (c) => c.error(failure) }),
      writable: new WritableStream<Uint8Array>(),
    }));
    const events: string[] = [];
    socket.on("error", (e) => events.push(`error:${e.message}`));
    socket.on("close", (hadError) => events.push(`close:${hadError}`));
    socket.on("data", () => events.push("data"));
    await waitFor(() => events.length === 2);
    expect(events).toEqual(["error:tunnel broke", "close:true"]);
    expect(socket.readyState).toBe("closed");
  });

  it("a readable that ends emits end then close, and closes the writable", async () => {
    let writableClosed = false;
    const socket = new WireSocket(Promise.resolve({
      readable: new ReadableStream<Uint8Array>({ start: (c) => (c.enqueue(Uint8Array.of(7)), c.close()) }),
      writable: new WritableStream<Uint8Array>({ close: () => void (writableClosed = true) }),
    }));
    const events: string[] = [];
    socket.on("data", (chunk: Buffer) => events.push(`data:${[...chunk]}`));
    socket.on("end", () => events.push("end"));
    socket.on("close", (hadError) => events.push(`close:${hadError}`));
    await waitFor(() => events.length === 3 && writableClosed);
    expect(events).toEqual(["data:7", "end", "close:false"]);
    expect(socket.readyState).toBe("closed");
  });

  it.each([
    ["destroy() cancels the readable and closes the writable (the session ends as cleanly as with end())", undefined, "writable closed"],
    ["destroy(error) cancels the readable and aborts the writable", new Error("boom"), "writable aborted"],
  ])("%s", async (_name, error, writableEnd) => {
    const seen: string[] = [];
    const socket = new WireSocket(Promise.resolve({
      readable: new ReadableStream<Uint8Array>({ cancel: () => void seen.push("readable cancelled") }),
      writable: new WritableStream<Uint8Array>({ abort: () => void seen.push("writable aborted"), close: () => void seen.push("writable closed") }),
    }));
    socket.on("data", () => {});
    socket.on("error", () => {});
    const closed = new Promise((r) => socket.once("close", r));
    await new Promise((r) => setTimeout(r, 0));
    socket.destroy(error);
    await closed;
    await waitFor(() => seen.length === 2);
    expect(seen.sort()).toEqual(["readable cancelled", writableEnd]);
    expect(socket.write(Uint8Array.of(1))).toBe(false);
  });
});
