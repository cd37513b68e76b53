// The dashboard in a real headless Chromium (@sparticuz/chromium + puppeteer-core) against `wrangler dev`.
import chromium from "@sparticuz/chromium";
import { mkdirSync } from "node:fs";
import puppeteer, { type Browser, type HTTPRequest, type Page } from "puppeteer-core";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { createPool, getConnection, type Connection } from "../../src/index.ts";
import { startWranglerDev, type WranglerDev } from "./wrangler-process.ts";

const databaseUrl = inject("databaseUrl");
const ADMIN_TOKEN = "dashboard-admin-token-5f3a9c2e71";
const run = crypto.randomUUID().slice(0, 6);
/** By name the calm tenant comes first; starving first must put the other on top. */
const CALM = `aaa-calm-${run}`;
const STARVING = `zzz-starving-${run}`;

let dev: WranglerDev;
let browser: Browser;

beforeAll(async () => {
  dev = await startWranglerDev({
    main: "worker/index.ts",
    config: "wrangler.toml",
    // Reports every second at most, so the page shows a burst within about two refreshes.
    vars: { DATABASE_URL: databaseUrl, EDGEPOOL_ADMIN_TOKEN: ADMIN_TOKEN, EDGEPOOL_REPORT_INTERVAL_MS: "1000" },
    env: { EDGEPOOL_WRANGLER_LOG_LEVEL: "warn" },
  });
  browser = await puppeteer.launch({
    executablePath: await chromium.executablePath(),
    args: await puppeteer.defaultArgs({ args: [...chromium.args, "--lang=en-US"], headless: "shell" }),
    // A POSIX locale from the environment (en-US@posix) is not a language tag Intl accepts.
    env: { ...process.env, LANG: "en_US.UTF-8", LC_ALL: "en_US.UTF-8" },
    headless: "shell",
    defaultViewport: { width: 1280, height: 900 },
  });
}, 120_000);
afterAll(async () => {
  await browser?.close();
  await dev?.stop();
});

async function admin(method: string, path: string, body?: unknown) {
  const response = await fetch(`${dev.url}${path}`, { method, headers: { Authorization: `Bearer ${ADMIN_TOKEN}` }, body: body === undefined ? undefined : JSON.stringify(body) });
  const json = (await response.json()) as Record<string, any>;
  if (!response.ok) throw new Error(`${method} ${path}: ${response.status} ${JSON.stringify(json)}`);
  return json;
}

/** The table as the page shows it: one object per row, keyed by column header. */
async function table(page: Page): Promise<Record<string, string>[]> {
  return page.$$eval("#tenants tr", (trs) => {
    const [head, ...body] = trs;
    const keys = [...head!.querySelectorAll("th")].map((th) => th.textContent!.trim());
    return body.map((tr) => Object.fromEntries([...tr.querySelectorAll("td")].map((td, i) => [keys[i]!, td.textContent!.trim()])));
  });
}

async function rowsUntil(page: Page, check: (rows: Record<string, string>[]) => boolean, timeoutMs = 15_000) {
  const deadline = Date.now() + timeoutMs;
  let rows = await table(page);
  while (!check(rows) && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 250));
    rows = await table(page);
  }
  return rows;
}

const ours = (rows: Record<string, string>[]) => rows.filter((r) => r.tenant === CALM || r.tenant === STARVING);

describe("dashboard (headless Chromium against wrangler dev)", () => {
  it("shows both tenants, the starving one first, live numbers that change after a burst; the token travels only in a header", { timeout: 120_000 }, async () => {
    const started = Date.now();
    const calmToken = (await admin("PUT", `/v1/tenants/${CALM}`, { connectionString: databaseUrl, maxConnections: 5 }), (await admin("POST", `/v1/tenants/${CALM}/tokens`, {})).token as string);
    await admin("PUT", `/v1/tenants/${STARVING}`, { connectionString: databaseUrl, maxConnections: 1, acquireTimeoutMs: 300 });
    const starvingToken = (await admin("POST", `/v1/tenants/${STARVING}/tokens`, {})).token as string;

    const page = await browser.newPage();
    const requests: { url: string; headers: Record<string, string> }[] = [];
    page.on("request", (r: HTTPRequest) => void requests.push({ url: r.url(), headers: r.headers() }));
    const problems: string[] = [];
    page.on("pageerror", (error) => void problems.push(`page error: ${String(error)}`));
    page.on("console", (m) => void (m.type() === "error" && problems.push(`console: ${m.text()}`)));
    await page.goto(`${dev.url}/dashboard`);
    await page.waitForSelector("#login:not([hidden])");
    await page.type("#token", ADMIN_TOKEN);
    await page.click("#login button[type=submit]");

    // Before any query: both listed, same numbers, calm first by name (nothing starves yet).
    const before = ours(await rowsUntil(page, (rows) => ours(rows).length === 2 && ours(rows).every((r) => r.idle === "0")));
    expect(before.map((r) => r.tenant)).toEqual([CALM, STARVING]);
    expect(before.map((r) => [r.active, r.waiters, r.timeouts])).toEqual([["0", "0", "0"], ["0", "0", "0"]]);

    // The burst: on the calm tenant, queries; on the starving one, its only connection held, one borrower timed out and three waiting.
    const calm = createPool(dev.url, { tenant: CALM, token: calmToken });
    await Promise.all(Array.from({ length: 12 }, () => calm.sql`select pg_sleep(0.05)`));
    const held: Connection = await getConnection(dev.url, { tenant: STARVING, token: starvingToken });
    await expect(getConnection(dev.url, { tenant: STARVING, token: starvingToken })).rejects.toMatchObject({ code: "ACQUIRE_TIMEOUT" });
    // Each waiter gives its connection back as soon as it gets it, so the next one can have it.
    const waiting = [1, 2, 3].map(() => getConnection(dev.url, { tenant: STARVING, token: starvingToken, acquireTimeoutMs: 20_000 }).then(async (lease) => {
      await lease.release();
      return lease.pid;
    }));
    // Settled whatever happens below, so that a failing check leaves no unhandled rejection behind.
    const settled = Promise.allSettled(waiting);

    const during = ours(await rowsUntil(page, (rows) => ours(rows)[0]?.tenant === STARVING && ours(rows)[0]?.waiters === "3" && ours(rows)[1]?.idle !== "0"));
    expect(during.map((r) => r.tenant)).toEqual([STARVING, CALM]);
    const [starving, calmRow] = during as [Record<string, string>, Record<string, string>];
    expect(starving).toMatchObject({ active: "1", max: "1", waiters: "3", timeouts: "1", sizing: "undersized", "suggested max": "4" });
    expect(Number(calmRow.idle)).toBeGreaterThan(0);
    // The coordinator's thread: a share in percent, and no more shards for these few calls.
    expect(starving.thread).toMatch(/^\d+ %$/);
    expect(starving["suggested shards"]).toBe("1");
    expect(calmRow.waiters).toBe("0");
    expect(await page.$eval(`#tenants tr[data-tenant="${STARVING}"]`, (tr) => tr.classList.contains("starving"))).toBe(true);

    // One tenant's view: the chart and its recent events.
    await page.click(`#tenants tr[data-tenant="${STARVING}"]`);
    await page.waitForSelector("#chart canvas", { timeout: 10_000 }).catch((error: unknown) => {
      throw new Error(`${String(error)}; the page said: ${problems.join("; ") || "nothing"}; status: ${requests.length} requests`);
    });
    await page.waitForFunction('document.querySelector("#events").textContent.includes("acquire-timeout")', { timeout: 10_000 });
    await new Promise((r) => setTimeout(r, 3_000)); // a few samples on the chart
    mkdirSync("docs", { recursive: true });
    await page.screenshot({ path: "docs/dashboard.png", fullPage: true });

    await held.release();
    expect((await settled).map((l) => (l.status === "fulfilled" ? l.value : l.reason))).toEqual([held.pid, held.pid, held.pid]);
    // The directory's figures are at most one report interval plus the alarm's delay old (a report may catch the last waiter
    // still holding the connection); under a loaded CI machine give it 30 s.
    const after = ours(await rowsUntil(page, (rows) => { const row = ours(rows).find((r) => r.tenant === STARVING); return row?.waiters === "0" && row.active === "0"; }, 30_000));
    // On failure: the page's own status line (a failed refresh keeps the old rows) and the whole row (its "age" is the report's).
    const status = await page.evaluate('document.querySelector("#status").textContent');
    const last = after.find((r) => r.tenant === STARVING);
    expect(last, `page status "${status}"; row ${JSON.stringify(last)}`).toMatchObject({ waiters: "0", active: "0", sizing: "undersized" });

    // The token went out only in the Authorization header: never in a URL, and on every API call.
    const api = requests.filter((r) => new URL(r.url).pathname.startsWith("/v1/"));
    expect(api.length).toBeGreaterThan(3);
    for (const r of requests) expect(r.url).not.toContain(ADMIN_TOKEN);
    for (const r of api) expect(r.headers.authorization).toBe(`Bearer ${ADMIN_TOKEN}`);
    for (const r of requests.filter((r) => !new URL(r.url).pathname.startsWith("/v1/"))) expect(JSON.stringify(r.headers)).not.toContain(ADMIN_TOKEN);
    expect(problems).toEqual([]);
    expect(await page.evaluate("document.cookie")).toBe("");
    expect(await page.evaluate("localStorage.length")).toBe(0);
    expect(await page.evaluate('sessionStorage.getItem("edgepool-admin-token")')).toBe(ADMIN_TOKEN);
    console.info(`dashboard: ${requests.length} requests (${api.length} API calls with the header), ${Date.now() - started} ms`);
    await page.close();
  });
});
