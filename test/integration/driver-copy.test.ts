import { createHash } from "node:crypto";
import type { Readable, Writable } from "node:stream";
import postgres from "postgres";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { postgresOptions } from "../../src/index.ts";
import { configure, observer, serverPids, tenantName, testEnv } from "./helpers.ts";

const ROWS = 100_000;
const TABLE = `driver_copy_${crypto.randomUUID().slice(0, 8)}`;
/** Row i as COPY's text format writes it: no character that needs escaping. */
const line = (i: number) => `${i}\trow-${i}-${(i * 2654435761) % 1_000_003}\n`;

const sql = observer();
beforeAll(() => sql`create table ${sql(TABLE)} (a int not null, b text not null)`);
afterAll(async () => {
  await sql`drop table if exists ${sql(TABLE)}`;
  await sql.end();
});

/** The server's own checksum of the table: md5 of every row in COPY text form, in order of `a`. */
async function serverChecksum() {
  const [row] = await sql<{ n: number; sum: string; md5: string }[]>`
    select count(*)::int as n, sum(a)::text as sum, md5(string_agg(a::text || E'\t' || b || E'\n', '' order by a)) as md5 from ${sql(TABLE)}`;
  return row!;
}

function write(stream: Writable, chunk: string): Promise<void> {
  return stream.write(chunk) ? Promise.resolve() : new Promise((resolve) => stream.once("drain", resolve));
}

describe("COPY through postgres.js in transaction mode", () => {
  it("COPY FROM STDIN of 100,000 rows lands every row on the server (count, sum and md5 checked there), and COPY TO STDOUT hands every row back (md5 of the bytes)", async () => {
    const tenant = tenantName("copy");
    await configure(tenant, { maxConnections: 1 });
    const db = postgres(postgresOptions(testEnv.EDGEPOOL, { tenant }));
    const expected = createHash("md5");
    let expectedSum = 0;

    let started = Date.now();
    const writable: Writable = await db`copy ${db(TABLE)} (a, b) from stdin`.writable();
    const done = new Promise<void>((resolve, reject) => {
      writable.once("finish", resolve);
      writable.once("error", reject);
    });
    for (let i = 1; i <= ROWS; i += 1_000) {
      let chunk = "";
      for (let j = i; j < i + 1_000; j++) {
        chunk += line(j);
        expectedSum += j;
      }
      expected.update(chunk);
      await write(writable, chunk);
    }
    writable.end();
    await done;
    const fromMs = Date.now() - started;
    const md5 = expected.digest("hex");
    expect(await serverChecksum()).toEqual({ n: ROWS, sum: String(expectedSum), md5 });

    // COPY TO, read as fast as it comes (postgres.js 3.4.9 never resumes a socket a slow reader paused, porsager/postgres#499).
    started = Date.now();
    const readable: Readable = await db`copy (select a, b from ${db(TABLE)} order by a) to stdout`.readable();
    const received = createHash("md5");
    let bytes = 0;
    let lines = 0;
    for await (const chunk of readable as AsyncIterable<Uint8Array>) {
      received.update(chunk);
      bytes += chunk.length;
      for (const byte of chunk) if (byte === 0x0a) lines++;
    }
    const toMs = Date.now() - started;
    expect(lines).toBe(ROWS);
    expect(received.digest("hex")).toBe(md5);
    console.log(`[driver-copy] COPY FROM ${ROWS} rows in ${fromMs}ms; COPY TO ${lines} rows (${bytes} bytes) in ${toMs}ms`);

    // The session goes on, and the transaction-mode rule gave the one server connection back after each COPY.
    const [row] = await db<{ n: number; pid: number }[]>`select count(*)::int as n, pg_backend_pid() as pid from ${db(TABLE)}`;
    expect(row!.n).toBe(ROWS);
    expect(await serverPids(sql, tenant)).toEqual([row!.pid]);
    const [state] = await sql<{ state: string }[]>`select state from pg_stat_activity where pid = ${row!.pid}`;
    expect(state!.state).toBe("idle");
    await db.end();
  });
});
