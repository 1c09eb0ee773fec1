// The console in a real browser: Playwright's core driving Debian's Chromium, headless.
// Driven by tests/console.rs, which runs the broker, the agent, simulated cameras and the
// station service, and talks to this script over stdio: the script prints `STEP name` and
// waits for one line on stdin before going on (the Rust side acts in between), and prints
// `MEASURE name value` for figures. Exit 0 when every check held.
import { chromium } from "playwright-core";
import readline from "node:readline";

const URL = process.env.CONSOLE_URL;
const USER = process.env.CONSOLE_USER;
const PASS = process.env.CONSOLE_PASS;
const SHOTS = process.env.CONSOLE_SHOTS || "";
const SCALE = Number(process.env.CAMGW_TEST_TIME_SCALE || "1");
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";

const lines = readline.createInterface({ input: process.stdin });
const queue = [];
let waiter = null;
lines.on("line", (l) => { if (waiter) { const w = waiter; waiter = null; w(l); } else queue.push(l); });
function step(name) {
  console.log("STEP " + name);
  return new Promise((res) => { if (queue.length) res(queue.shift()); else waiter = res; });
}
function check(cond, what) {
  if (!cond) throw new Error("check failed: " + what);
  console.log("ok " + what);
}
const ms = (n) => Math.round(n * SCALE);

const browser = await chromium.launch({
  executablePath: CHROMIUM,
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
const outside = [];
const consoleErrors = [];
function watch(page) {
  page.on("request", (r) => { if (!r.url().startsWith(URL) && !r.url().startsWith("data:")) outside.push(r.url()); });
  // A 401 is the page asking before login (and the wrong password): expected, not an error.
  page.on("console", (m) => { if (m.type() === "error" && !/status of 401/.test(m.text())) consoleErrors.push(m.text()); });
  page.on("pageerror", (e) => consoleErrors.push(String(e)));
}
async function login(page, user, pass) {
  await page.fill("#login-form input[name=name]", user);
  await page.fill("#login-form input[name=password]", pass);
  await page.click("#login-form button[type=submit]");
}
async function shot(page, name) {
  if (SHOTS) await page.screenshot({ path: `${SHOTS}/${name}.png`, fullPage: false });
}

try {
  const ctx = await browser.newContext({ viewport: { width: 1280, height: 860 }, locale: "vi-VN" });
  const page = await ctx.newPage();
  watch(page);
  await page.goto(URL + "/");
  await page.waitForSelector("#login:not([hidden])", { timeout: ms(10000) });
  check(await page.textContent("#login h2") === "Đăng nhập", "Vietnamese by default");
  await shot(page, "login");

  await login(page, USER, "wrong password");
  await page.waitForSelector("#login-error:not([hidden])", { timeout: ms(10000) });
  check(true, "a wrong password is refused in words");

  await login(page, USER, PASS);
  await page.waitForSelector("body[data-ready=console]", { timeout: ms(10000) });
  await page.waitForSelector('[data-camera="cam01"][data-state="up"]', { timeout: ms(30000) });
  await page.waitForSelector('[data-camera="cam02"][data-state="up"]', { timeout: ms(30000) });
  check(true, "the grid shows both cameras up");
  const since = await page.textContent('[data-camera="cam02"] .since time');
  check(/trước|bây giờ/.test(since), `relative time in Vietnamese ("${since}")`);
  await page.waitForFunction(() => {
    const i = document.querySelector('[data-camera="cam01"] img');
    return i && i.complete && i.naturalWidth > 0;
  }, null, { timeout: ms(30000) });
  check(true, "cam01's latest still shows in the grid");
  await page.evaluate(() => { window.__noReload = 1; });
  await shot(page, "cameras");

  // The camera goes down at the gateway; the grid follows without a reload.
  await step("take-cam02-down");
  const t0 = Date.now();
  await page.waitForSelector('[data-camera="cam02"][data-state="down"]', { timeout: ms(30000) });
  console.log("MEASURE down_to_grid_ms " + (Date.now() - t0));
  check(await page.evaluate(() => window.__noReload) === 1, "no reload happened");
  check((await page.textContent('[data-camera="cam02"] .st')) === "Mất tín hiệu", "state in words");
  const probs = await page.textContent('[data-camera="cam02"] .problems');
  check(probs.length > 0, `problems in words ("${probs}")`);
  await shot(page, "camera-down");

  // Alerts: acknowledge the camera_down.
  await page.click('#tabs button[data-tab="alerts"]');
  const li = 'li[data-kind="camera_down"]:not(.acked)';
  await page.waitForSelector(li, { timeout: ms(30000) });
  check(await page.textContent(li + " .what") === "Camera mất tín hiệu", "the alert in words");
  await shot(page, "alerts");
  await page.click(li + " button");
  await page.waitForSelector('li[data-kind="camera_down"].acked .ackinfo', { timeout: ms(10000) });
  const info = await page.textContent('li[data-kind="camera_down"].acked .ackinfo');
  check(info.includes(USER), `acknowledged by the officer ("${info}")`);
  await step("acked");

  // History: filter by camera and open a still.
  await page.click('#tabs button[data-tab="history"]');
  await page.fill('#filter input[name=camera]', "cam01");
  await page.click('#filter button[type=submit]');
  await page.waitForFunction(() => {
    const rows = [...document.querySelectorAll("#events tbody tr")];
    return rows.length > 0 && rows.every((r) => r.children[2].textContent === "cam01");
  }, null, { timeout: ms(10000) });
  const cams = await page.$$eval("#events tbody tr", (rs) => rs.map((r) => r.children[2].textContent));
  check(cams.length > 0 && cams.every((c) => c === "cam01"), `history filtered to cam01 (${cams.length} rows)`);
  await page.click("#events tbody tr td img");
  await page.waitForFunction(() => {
    const d = document.querySelector("#still");
    const i = d && d.querySelector("img");
    return d.open && i.complete && i.naturalWidth > 0;
  }, null, { timeout: ms(10000) });
  check(true, "a still opens from the history");
  await shot(page, "history");
  await page.click("#still button");

  // English on the switch; the data attributes stay English.
  await page.click("#lang");
  check(await page.textContent('#tabs button[data-tab="cameras"]') === "Cameras", "English on the switch");
  await page.click('#tabs button[data-tab="cameras"]');
  check(await page.textContent('[data-camera="cam02"] .st') === "Down", "state in English");
  check(await page.getAttribute('[data-camera="cam02"]', "data-state") === "down", "data-state stays English");
  await page.click("#lang");
  check(await page.textContent('#tabs button[data-tab="cameras"]') === "Camera", "back to Vietnamese");

  // Hostile text from the broker is shown as text and never runs.
  await page.waitForSelector('[data-gateway="gw-evil"] .cam', { timeout: ms(10000) });
  const evilName = await page.textContent('[data-gateway="gw-evil"] .cam .name');
  check(evilName === "<img src=x onerror=window.__xss=1>", "an HTML camera id is shown as text");
  const evilProblem = await page.textContent('[data-gateway="gw-evil"] .cam .problems');
  check(evilProblem.includes("<script>"), "a script problem text is shown as text");
  check(await page.$('img[src="x"]') === null, "no element was made from it");
  await page.click('#tabs button[data-tab="alerts"]');
  await page.waitForSelector('li[data-alert="evil-1"]', { timeout: ms(10000) });
  check((await page.textContent('li[data-alert="evil-1"] .what')).includes("<svg"), "an HTML alert kind is shown as text");
  check(await page.evaluate(() => window.__xss) === undefined, "no injected script ran");

  await page.click('#tabs button[data-tab="gateways"]');
  await page.waitForSelector('#gateways tr[data-gateway="gw-test"]', { timeout: ms(10000) });
  check((await page.textContent('#gateways tr[data-gateway="gw-test"]')).includes("Trực tuyến"), "the gateway online");
  await shot(page, "gateways");
  await page.click('#tabs button[data-tab="cameras"]');

  // A phone.
  const phone = await browser.newContext({ viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true, locale: "vi-VN" });
  const p2 = await phone.newPage();
  watch(p2);
  await p2.goto(URL + "/");
  await p2.waitForSelector("#login:not([hidden])", { timeout: ms(10000) });
  await login(p2, USER, PASS);
  await p2.waitForSelector('[data-camera="cam02"][data-state="down"]', { timeout: ms(10000) });
  const overflow = await p2.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  check(overflow <= 1, `no sideways scrolling on a phone (${overflow}px)`);
  await shot(p2, "phone");

  check(outside.length === 0, "the page requested nothing outside the station" + (outside.length ? ": " + outside.join(", ") : ""));
  check(consoleErrors.length === 0, "no script errors" + (consoleErrors.length ? ": " + consoleErrors.join(" | ") : ""));
  console.log("DONE");
  await browser.close();
  process.exit(0);
} catch (e) {
  console.log("FAIL " + (e && e.stack ? e.stack : e));
  await browser.close();
  process.exit(1);
}
