import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { ASSETS } from "../../worker/dashboard/assets.ts";

describe("dashboard assets", () => {
  it("worker/dashboard/assets.ts is what scripts/dashboard-assets.mjs makes from worker/dashboard/ and uplot (run it after editing a dashboard file)", async () => {
    const { assetsModule } = (await import("../../scripts/dashboard-assets.mjs" as string)) as { assetsModule: () => string };
    expect(readFileSync("worker/dashboard/assets.ts", "utf8")).toBe(assetsModule());
  });

  it("the page loads only its own script and styles: no inline script, nothing from another origin, the token never in a URL", () => {
    const html = ASSETS["index.html"]!.body;
    expect(html).not.toMatch(/<script>(?!<\/script>)/);
    expect([...html.matchAll(/(?:src|href)="([^"]+)"/g)].map((m) => m[1])).toEqual([
      "/dashboard/uPlot.min.css", "/dashboard/style.css", "/dashboard/uPlot.iife.min.js", "/dashboard/app.js",
    ]);
    const app = ASSETS["app.js"]!.body;
    expect(app).toContain("Authorization: `Bearer ${sessionStorage.getItem(KEY)}`");
    expect(app).not.toMatch(/localStorage|document\.cookie|token=/);
  });
});
