import { describe, expect, it } from "vitest";
import { seeded } from "./helpers.ts";
import { concat, fe, makeWire, type TestClient, type Wire } from "./wire-helpers.ts";

/** One Sync or Query: the rows it yields, the statement names it parses. */
interface Request {
  tags: string[];
  parses: string[];
}

interface Batch {
  /** Byte parts, sent in separate steps (a Parse/Describe/Flush exchange, then Bind/Execute/Sync). */
  parts: Uint8Array[];
  requests: Request[];
}

interface Sim {
  id: number;
  client: TestClient;
  todo: { part: Uint8Array; batch?: Batch }[];
  /** Requests sent and not yet answered by a ReadyForQuery, in order. */
  inflight: Request[];
  seen: number;
  n: number;
  parsed: Set<string>;
  failed: boolean;
}

const MAX = 3;

function makeBatch(sim: Sim, random: () => number): Batch {
  const tag = () => `s${sim.id}:${sim.n++}`;
  const r = (tags: string[], parses: string[] = []): Request => ({ tags, parses });
  let kind = Math.floor(random() * 6);
  // A named statement is used only when nothing is in flight, so the test knows whether its Parse was refused.
  if (kind === 2 && sim.inflight.length > 0) kind = 0;
  if (kind === 0) {
    const t = tag();
    return { parts: [fe.query(`select '${t}'`)], requests: [r([t])] };
  }
  if (kind === 1) {
    const t = tag();
    return { parts: [concat([fe.parse("", "select $1"), fe.bind("", [t]), fe.execute(), fe.sync()])], requests: [r([t])] };
  }
  if (kind === 2) {
    // A few names per session, a few texts across sessions: shared server-side names, re-prepares, evictions.
    const name = `st${Math.floor(random() * 3)}`;
    const t = tag();
    const parse = sim.parsed.has(name) ? [] : [fe.parse(name, `select $1::text${name.slice(-1)}`)];
    sim.parsed.add(name);
    return { parts: [concat([...parse, fe.bind(name, [t]), fe.execute(), fe.sync()])], requests: [r([t], parse.length > 0 ? [name] : [])] };
  }
  if (kind === 3) {
    const t = tag();
    return { parts: [concat([fe.parse("", "select $1"), fe.describe("S", ""), fe.flush()]), concat([fe.bind("", [t]), fe.execute(), fe.sync()])], requests: [r([t])] };
  }
  if (kind === 4) {
    const t1 = tag();
    const t2 = tag();
    return { parts: [concat([fe.query("begin"), fe.query(`select '${t1}'`)]), fe.query(`select '${t2}'`), fe.query("commit")], requests: [r([]), r([t1]), r([t2]), r([])] };
  }
  const t = tag();
  return { parts: [concat([fe.query(`select '${t}'`), fe.parse("", "select $1"), fe.bind("", [t + "b"]), fe.execute(), fe.sync()])], requests: [r([t]), r([t + "b"])] };
}

/** Checks every message a session got since last time against its own requests, in order. */
function check(sim: Sim): void {
  const received = sim.client.received;
  for (; sim.seen < received.length; sim.seen++) {
    const m = received[sim.seen]!;
    const request = sim.inflight[0];
    if (!request) throw new Error(`session ${sim.id} got ${m.type} "${m.text}" with nothing in flight`);
    if (m.type === "D") {
      const want = request.tags.shift();
      if (m.text !== want) throw new Error(`session ${sim.id} got row "${m.text}", expected "${want}"`);
    } else if (m.type === "E") {
      const code = m.fields!.get("C");
      if (code !== "53300") throw new Error(`session ${sim.id} got error ${code}: ${m.text}`);
      sim.failed = true;
      for (const name of request.parses) sim.parsed.delete(name);
    } else if (m.type === "Z") {
      sim.inflight.shift();
      if (!sim.failed && request.tags.length > 0) throw new Error(`session ${sim.id}: request ended with rows missing: ${request.tags.join(",")}`);
      sim.failed = false;
    }
  }
}

function invariants(wire: Wire, sims: Sim[]): void {
  const attached = sims.map((s) => s.client.session.backend).filter((b) => b !== undefined);
  expect(new Set(attached).size).toBe(attached.length);
  for (const b of attached) expect(sims.filter((s) => s.client.session.backend === b)).toHaveLength(1);
  expect(wire.pool.total).toBeLessThanOrEqual(MAX);
  expect(wire.driver.backends.filter((b) => !b.closed).length).toBeLessThanOrEqual(MAX);
  for (const b of wire.driver.backends) expect(b.orphans).toBe(0);
  expect(wire.stats.clientsActive).toBe(attached.length);
}

async function run(seed: number): Promise<void> {
  const random = seeded(seed);
  const wire = makeWire({ maxConnections: MAX, maxWaiters: 4 }, { maxPreparedStatements: 2, random });
  const sims: Sim[] = Array.from({ length: 8 }, (_, id) => ({
    id, client: wire.client({ acquireTimeoutMs: 5 + Math.floor(random() * 60) }), todo: [], inflight: [], seen: 0, n: 0, parsed: new Set(), failed: false,
  }));
  for (let step = 0; step < 400; step++) {
    const sim = sims[Math.floor(random() * sims.length)]!;
    if (random() < 0.25) {
      await wire.clock.advance(Math.floor(random() * 40));
    } else {
      if (sim.todo.length === 0 && sim.inflight.length < 2) {
        const batch = makeBatch(sim, random);
        sim.todo.push(...batch.parts.map((part, i) => ({ part, batch: i === 0 ? batch : undefined })));
      }
      const next = sim.todo.shift();
      if (next) {
        if (next.batch) sim.inflight.push(...next.batch.requests);
        // Random chunking, one byte at a time included.
        let at = 0;
        while (at < next.part.length) {
          const size = random() < 0.2 ? 1 : 1 + Math.floor(random() * next.part.length);
          void sim.client.session.receive(next.part.subarray(at, at + size));
          at += size;
        }
      }
      await wire.clock.advance(0);
    }
    for (const s of sims) check(s);
    invariants(wire, sims);
  }
  // Finish: send what is left, let every wait time out or be served.
  for (let round = 0; round < 50; round++) {
    for (const sim of sims) {
      const next = sim.todo.shift();
      if (next) {
        if (next.batch) sim.inflight.push(...next.batch.requests);
        void sim.client.session.receive(next.part);
      }
    }
    await wire.clock.advance(100);
    for (const s of sims) check(s);
    invariants(wire, sims);
  }
  for (const sim of sims) {
    expect(sim.inflight, `session ${sim.id} has unanswered requests`).toEqual([]);
    expect(sim.client.closed).toBe(false);
  }
  for (const sim of sims) sim.client.session.end();
  await wire.clock.advance(0);
  expect(wire.pool.stats().leased).toBe(0);
  expect(wire.stats).toMatchObject({ clients: 0, clientsActive: 0, clientsWaiting: 0 });
}

describe("randomized wire sessions", () => {
  for (const seed of [1, 2, 3, 4, 5, 6, 7, 8]) {
    it(`seed ${seed}: every response goes to the session that asked, in order; no backend on two sessions; never above max`, async () => {
      await run(seed);
    });
  }
});
