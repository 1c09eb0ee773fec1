// Console benchmarks in Debian's headless Chromium, driven by benches/station.rs.
//   BENCH=load: first load and time to interactive of a populated station (median of RUNS).
//   BENCH=live: latency from an MQTT publish to the change in the grid. The Rust side
//     publishes health changes whose one problem is "t<send time in ms>" and prints lines on
//     our stdin; we observe the grid and report, per change, when it showed.
import { chromium } from "playwright-core";
import readline from "node:readline";

const URL = process.env.CONSOLE_URL;
const USER = process.env.CONSOLE_USER;
const PASS = process.env.CONSOLE_PASS;
const RUNS = Number(process.env.RUNS || "5");
const WANT = Number(process.env.CAMERAS || "0");
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";

const browser = await chromium.launch({
  executablePath: CHROMIUM, headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
const ctx = await browser.newContext({ viewport: { width: 1280, height: 860 } });
const page = await ctx.newPage();
await page.goto(URL + "/");
await page.waitForSelector("#login:not([hidden])");
await page.fill("#login-form input[name=name]", USER);
await page.fill("#login-form input[name=password]", PASS);
await page.click("#login-form button[type=submit]");
await page.waitForSelector("body[data-ready=console]", { timeout: 60000 });

if (process.env.BENCH === "load") {
  const loads = [], ready = [];
  for (let i = 0; i < RUNS; i++) {
    // A fresh navigation with the session cookie: the page's own first load.
    await page.goto(URL + "/", { waitUntil: "commit" });
    await page.waitForFunction((n) => document.body.dataset.ready === "console"
      && document.querySelectorAll("#grid .cam").length >= n, WANT, { timeout: 60000, polling: 10 });
    const t = await page.evaluate(() => {
      const nav = performance.getEntriesByType("navigation")[0];
      return { load: nav.loadEventEnd, now: performance.now() };
    });
    loads.push(t.load);
    ready.push(t.now);
    console.log(`RUN ${i} load_ms ${t.load.toFixed(0)} interactive_ms ${t.now.toFixed(0)}`);
  }
  const med = (a) => { const s = [...a].sort((x, y) => x - y); return s[Math.floor(s.length / 2)]; };
  console.log(`RESULT load_ms ${med(loads).toFixed(0)} interactive_ms ${med(ready).toFixed(0)} cameras ${await page.evaluate(() => document.querySelectorAll("#grid .cam").length)}`);
} else {
  // Every change of a watched card: when it was shown, by the send time it carries.
  await page.evaluate(() => {
    window.__seen = new Map();
    const scan = () => {
      for (const li of document.querySelectorAll('#grid .cam .problems li')) {
        const m = /^t(\d+)$/.exec(li.textContent);
        if (m && !window.__seen.has(m[1])) window.__seen.set(m[1], Date.now());
      }
    };
    new MutationObserver(scan).observe(document.querySelector("#grid"), { childList: true, subtree: true });
  });
  console.log("READY");
  const lines = readline.createInterface({ input: process.stdin });
  for await (const l of lines) {
    if (l === "END") break;
  }
  lines.close();
  process.stdin.destroy();
  // Let the last ones land.
  await page.waitForTimeout(1500);
  const seen = await page.evaluate(() => [...window.__seen.entries()]);
  const lat = seen.map(([sent, shown]) => shown - Number(sent)).sort((a, b) => a - b);
  const p = (q) => lat[Math.min(lat.length - 1, Math.round((lat.length - 1) * q))];
  console.log(`RESULT seen ${lat.length} p50_ms ${p(0.5)} p95_ms ${p(0.95)} max_ms ${lat[lat.length - 1]}`);
}
await browser.close();
// An open stdin would keep node running.
process.exit(0);
