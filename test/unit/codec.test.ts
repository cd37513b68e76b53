// The built-in client's codec against the real server: encodeQuery's bytes are
// written on a raw connection (pg only does the startup and authentication, then
// lets go of the socket) and decodeResult reads exactly what Postgres answered.
import type { Socket } from "node:net";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { decodeResult, encodeQuery, statementName } from "../../src/codec.ts";
import { DatabaseError, PoolError } from "../../src/errors.ts";

let socket: Socket;
let client: pg.Client;

beforeAll(async () => {
  client = new pg.Client({ connectionString: inject("databaseUrl") });
  await client.connect();
  socket = (client as unknown as { connection: { stream: Socket } }).connection.stream;
  // From here on the socket is ours: pg's parser must not see our answers.
  socket.removeAllListeners("data");
});

afterAll(() => {
  // pg notices its socket going away; that is the point.
  client.on("error", () => {});
  socket.destroy();
});

/** Sends one batch and returns everything the server answered up to and including ReadyForQuery. */
function exchange(batch: Uint8Array): Promise<Uint8Array> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let length = 0;
    const onData = (chunk: Buffer) => {
      chunks.push(chunk);
      length += chunk.length;
      const all = Buffer.concat(chunks, length);
      let at = 0;
      while (at + 5 <= all.length) {
        const size = all.readInt32BE(at + 1);
        if (at + 1 + size > all.length) break;
        if (all[at] === 0x5a && at + 1 + size === all.length) {
          socket.off("data", onData);
          socket.off("error", reject);
          return resolve(all);
        }
        at += 1 + size;
      }
    };
    socket.on("data", onData);
    socket.once("error", reject);
    socket.write(batch);
  });
}

async function run<Row = Record<string, unknown>>(text: string, params?: unknown[]) {
  return decodeResult<Row>(await exchange(encodeQuery(text, params)), "acme");
}

async function failure(text: string, params?: unknown[]): Promise<unknown> {
  try {
    await run(text, params);
  } catch (error) {
    return error;
  }
  throw new Error(`expected ${text} to fail`);
}

describe("decodeResult values (as today's postgres.js-backed client returns them)", () => {
  it("parses int4, int8, numeric, text, bool, timestamptz, json/jsonb, bytea, arrays and null", async () => {
    const rows = await run(`select 42::int4 as i4, 9007199254740993::int8 as i8, 1.50::numeric as num, 'héllo'::text as t,
      true as yes, false as no, '2024-02-29 12:34:56.789+00'::timestamptz as ts, '{"a":[1,2]}'::json as j, '{"b":null}'::jsonb as jb,
      '\\x00ff10'::bytea as bin, array[1,2,null]::int4[] as ints, array['a','b"c',null]::text[] as texts,
      array[1,2]::int8[] as bigs, array[1.5]::numeric[] as nums, null::int4 as nothing, 2.5::float8 as f8, '1 day'::interval as iv`);
    expect(rows).toHaveLength(1);
    const row = rows[0]!;
    expect(row).toEqual({
      i4: 42, i8: "9007199254740993", num: "1.50", t: "héllo", yes: true, no: false,
      ts: new Date("2024-02-29T12:34:56.789Z"), j: { a: [1, 2] }, jb: { b: null },
      bin: Buffer.from([0, 255, 16]), ints: [1, 2, null], texts: ["a", 'b"c', null],
      bigs: ["1", "2"], nums: ["1.5"], nothing: null, f8: 2.5, iv: "1 day",
    });
    expect(rows.command).toBe("SELECT");
    expect(rows.count).toBe(1);
    expect(rows.columns.map((c) => [c.name, c.type])).toEqual([
      ["i4", 23], ["i8", 20], ["num", 1700], ["t", 25], ["yes", 16], ["no", 16], ["ts", 1184], ["j", 114], ["jb", 3802],
      ["bin", 17], ["ints", 1007], ["texts", 1009], ["bigs", 1016], ["nums", 1231], ["nothing", 23], ["f8", 701], ["iv", 1186],
    ]);
  });
});

describe("encodeQuery parameters (text format, node-postgres' rules)", () => {
  it("binds null, numbers, bigint, booleans, Date, bytes, arrays, objects and strings as Postgres reads them", async () => {
    const when = new Date("2020-05-06T07:08:09.010Z");
    const [row] = await run(
      `select $1::int4 as a, $2::int8 as b, $3::bool as c, $4::timestamptz = '2020-05-06T07:08:09.010Z' as d, $5::bytea as e,
        $6::int4[] as f, $7::text[] as g, $8::jsonb as h, $9::text as i, $10::text is null as j, $11::float8 as k, $12::bytea[] as l`,
      [7, 1234567890123456789n, false, when, Uint8Array.of(1, 2, 254), [[1, 2], [3, null]], ['x"y', "z\\w", null, ""], { k: [1, "2"] }, "plain", undefined, -0.5, [Uint8Array.of(9)]],
    );
    expect(row).toEqual({
      a: 7, b: "1234567890123456789", c: false, d: true, e: Buffer.from([1, 2, 254]), f: [[1, 2], [3, null]],
      g: ['x"y', "z\\w", null, ""], h: { k: [1, "2"] }, i: "plain", j: true, k: -0.5, l: [Buffer.from([9])],
    });
  });

  it("names the statement after its text, so the server keeps it as edgepool_<hash>", async () => {
    const text = "select $1::int * 2 as doubled";
    expect(Array.from(await run(text, [21]))).toEqual([{ doubled: 42 }]);
    const name = statementName(text);
    expect(name).toMatch(/^edgepool_[0-9a-f]{16}$/);
    expect(statementName(text)).toBe(name);
    expect(statementName(text + " ")).not.toBe(name);
    const kept = await run<{ name: string; statement: string }>("select name, statement from pg_prepared_statements");
    expect(kept).toContainEqual({ name, statement: text });
  });

  it("leaves a huge text unnamed (nothing kept on the server)", async () => {
    const text = `select $1::int as n -- ${"x".repeat(9000)}`;
    expect(Array.from(await run(text, [5]))).toEqual([{ n: 5 }]);
    const [{ n }] = await run<{ n: number }>("select count(*)::int as n from pg_prepared_statements where statement = $1", [text]);
    expect(n).toBe(0);
  });
});

describe("decodeResult commands", () => {
  it("a multi-statement script returns the last statement's result", async () => {
    const rows = await run("create temp table codec_t (id int); insert into codec_t values (1), (2), (3); select id from codec_t order by id; update codec_t set id = id + 1");
    expect(Array.from(rows)).toEqual([]);
    expect(rows.command).toBe("UPDATE");
    expect(rows.count).toBe(3);
    const last = await run("select 1 as a; select id from codec_t order by id");
    expect(Array.from(last)).toEqual([{ id: 2 }, { id: 3 }, { id: 4 }]);
    expect(last.count).toBe(3);
  });

  it("INSERT 0 n counts n; a command without a count counts its rows", async () => {
    const inserted = await run("insert into codec_t values ($1), ($2)", [10, 11]);
    expect([inserted.command, inserted.count]).toEqual(["INSERT", 2]);
    const created = await run("create temp table codec_u (id int)");
    expect([created.command, created.count]).toEqual(["CREATE TABLE", 0]);
    const empty = await run("");
    expect([empty.command, empty.count, empty.length]).toEqual(["", 0, 0]);
  });
});

describe("decodeResult errors", () => {
  it("an ErrorResponse becomes a DatabaseError with Postgres' fields", async () => {
    const error = await failure("select 1 / $1::int", [0]);
    expect(error).toBeInstanceOf(DatabaseError);
    expect(error).toMatchObject({ message: "division by zero", code: "22012", severity: "ERROR" });
    expect((error as DatabaseError).routine).toBeTypeOf("string");

    const syntax = await failure("selec 1");
    expect(syntax).toMatchObject({ code: "42601", position: "1" });

    await run("create temp table codec_k (id int constraint codec_k_pk primary key)");
    await run("insert into codec_k values (1)");
    const duplicate = await failure("insert into codec_k values ($1)", [1]);
    expect(duplicate).toMatchObject({
      code: "23505", table_name: "codec_k", constraint_name: "codec_k_pk", detail: "Key (id)=(1) already exists.",
    });
    expect((duplicate as DatabaseError).schema_name).toMatch(/^pg_temp/);

    const where = await failure("do $$ begin perform 1 / 0; end $$");
    expect((where as DatabaseError).where).toContain("PL/pgSQL");
    const hinted = await failure("do $$ begin raise exception 'no' using hint = 'try again', column = 'c'; end $$");
    expect(hinted).toMatchObject({ hint: "try again", column_name: "c", code: "P0001" });
  });

  it("the session is usable after an error in a batch", async () => {
    await failure("select 1 / 0");
    expect(Array.from(await run("select $1::text as t", ["ok"]))).toEqual([{ t: "ok" }]);
  });

  it("an ErrorResponse whose message starts with a pool error code becomes that PoolError", async () => {
    const message = 'ACQUIRE_TIMEOUT: tenant "acme" had no free connection after 5000ms (total=10, leased=10, idle=0, waiting=37)';
    const error = await failure(`do $$ begin raise exception using message = '${message.replace(/'/g, "''")}', errcode = '53300'; end $$`);
    expect(error).toBeInstanceOf(PoolError);
    expect(error).toMatchObject({ code: "ACQUIRE_TIMEOUT", tenant: "acme", message, retryable: true });
    // A message that only looks like one stays a database error.
    const other = await failure("do $$ begin raise exception 'NOT_A_CODE: something'; end $$");
    expect(other).toBeInstanceOf(DatabaseError);
  });
});

describe("codec CPU", () => {
  it("encodeQuery + decodeResult of a one-row query costs well under 50 µs in Node", async () => {
    const text = "select id, name, created_at, active from users where id = $1";
    const answer = await exchange(encodeQuery("select $1::int as id, 'ada'::text as name, now() as created_at, true as active", [1]));
    const loops = 10_000;
    for (let i = 0; i < 1000; i++) decodeResult(answer, "acme"), encodeQuery(text, [i]);
    const before = process.cpuUsage();
    for (let i = 0; i < loops; i++) {
      encodeQuery(text, [i]);
      decodeResult(answer, "acme");
    }
    const used = process.cpuUsage(before);
    const perQueryUs = (used.user + used.system) / loops;
    console.log(`codec: encodeQuery + decodeResult, one row of 4 columns: ${perQueryUs.toFixed(2)} µs CPU per query (${loops} loops)`);
    expect(perQueryUs).toBeLessThan(50);
  });
});
