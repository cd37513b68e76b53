import { ASSETS } from "./dashboard/assets.ts";

/**
 * What the dashboard's responses may do: scripts and styles from this
 * origin only (uPlot sets inline styles), fetches to this origin only, never
 * framed. The token lives in sessionStorage, so no script from elsewhere may run.
 */
const SECURITY_HEADERS = {
  "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
  "Referrer-Policy": "no-referrer",
  "X-Content-Type-Options": "nosniff",
};

/** `GET /dashboard`: the page. It holds no data; its script asks for the admin token and reads the directory with it. */
export function dashboardPage(): Response {
  return asset("index.html")!;
}

/** `GET /dashboard/<file>`: the page's script, styles and uPlot; 404 for anything else. */
export function dashboardAsset(name: string): Response {
  return asset(name) ?? new Response("not found", { status: 404, headers: SECURITY_HEADERS });
}

function asset(name: string): Response | undefined {
  const file = Object.hasOwn(ASSETS, name) ? ASSETS[name] : undefined;
  if (!file) return undefined;
  return new Response(file.body, { headers: { "Content-Type": file.type, "Cache-Control": "no-cache", ...SECURITY_HEADERS } });
}
