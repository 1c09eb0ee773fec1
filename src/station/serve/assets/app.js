// camgw ward-station console. Plain JavaScript, no libraries, nothing fetched from outside
// the station. Everything that came from a gateway is untrusted text: it is only ever put on
// the page with textContent or as an attribute value, never parsed as HTML.
"use strict";

const T = {
  vi: {
    title: "Trạm phường", tab_cameras: "Camera", tab_alerts: "Cảnh báo", tab_history: "Lịch sử",
    tab_gateways: "Gateway", logout: "Đăng xuất", login_title: "Đăng nhập", name: "Tên đăng nhập",
    password: "Mật khẩu", login: "Đăng nhập", login_failed: "Sai tên đăng nhập hoặc mật khẩu.",
    online: "Trực tuyến", offline: "Mất kết nối", only_open: "Chỉ cảnh báo chưa xử lý",
    camera: "Camera", from: "Từ", to: "Đến", state: "Trạng thái", any: "Tất cả",
    ev_start: "Bắt đầu chuyển động", ev_end: "Kết thúc chuyển động", ev_pulse: "Xung chuyển động",
    search: "Tìm", time: "Thời gian", gateway: "Gateway", what: "Sự kiện", source: "Nguồn",
    still: "Ảnh", no_events: "Không có sự kiện nào.", last_seen: "Lần cuối", cameras: "Camera",
    buffer: "Đệm", temperature: "Nhiệt độ", version: "Phiên bản", close: "Đóng",
    st_up: "Hoạt động", st_down: "Mất tín hiệu", st_degraded: "Chập chờn", st_unknown: "Chưa rõ",
    since: "từ", ack: "Nhận xử lý", acked_by: "Đã nhận bởi {who}, {when}",
    gw_online: "Trực tuyến", gw_offline: "Ngoại tuyến", gw_unknown: "Chưa rõ",
    gw_shutdown: "Ngoại tuyến (tắt máy)", no_still: "Chưa có ảnh", check_now: "Kiểm tra ngay",
    reboot: "Khởi động lại", sent: "Đã gửi lệnh", cmd_failed: "Lệnh thất bại: {why}",
    n_cameras: "{n} camera", n_down: "{n} mất tín hiệu", n_degraded: "{n} chập chờn",
    n_up: "{n} hoạt động", n_gateways: "{n} gateway", gw_cams: "{n} camera, {bad} có vấn đề",
    confirm_reboot: "Khởi động lại camera {cam}?", motion: "Chuyển động",
    p_unreachable: "Không kết nối được", p_auth_failed: "Sai mật khẩu camera",
    p_http_error: "Lỗi HTTP", p_rtsp_error: "Lỗi luồng video (RTSP)", p_no_frames: "Không có hình",
    p_frozen: "Hình bị đứng", p_black: "Hình đen (có thể bị che)", p_clock_drift: "Sai giờ camera",
    k_camera_down: "Camera mất tín hiệu", k_camera_up: "Camera hoạt động lại",
    k_camera_degraded: "Camera chập chờn", k_tamper: "Camera bị che hoặc tác động",
    k_enclosure_open: "Tủ thiết bị bị mở", k_enclosure_closed: "Tủ thiết bị đã đóng",
    k_over_temperature: "Quá nhiệt", k_temperature_ok: "Nhiệt độ bình thường trở lại",
    k_disk_low: "Sắp hết dung lượng lưu trữ", k_disk_ok: "Dung lượng lưu trữ ổn",
    k_buffer_dropped: "Dữ liệu đệm bị loại bỏ", k_buffer_corrupt: "Dữ liệu đệm bị hỏng",
    k_unclean_shutdown: "Gateway tắt đột ngột (mất điện?)", k_config_applied: "Đã áp dụng cấu hình",
    k_config_rejected: "Cấu hình bị từ chối", k_config_rolled_back: "Cấu hình đã được hoàn tác",
    k_board_fault: "Lỗi bo mạch", k_camera_power_cycled: "Đã ngắt nguồn camera để khởi động lại",
    k_snapshot_budget_reached: "Hết hạn mức ảnh trong ngày", k_update_applied: "Đã cập nhật phần mềm",
    k_update_failed: "Cập nhật phần mềm thất bại",
    src_onvif: "ONVIF", src_hikvision: "Hikvision", src_dahua: "Dahua", src_gpio: "Cảm biến (GPIO)",
    src_ingest: "HTTP",
  },
  en: {
    title: "Ward station", tab_cameras: "Cameras", tab_alerts: "Alerts", tab_history: "History",
    tab_gateways: "Gateways", logout: "Log out", login_title: "Log in", name: "User name",
    password: "Password", login: "Log in", login_failed: "Wrong user name or password.",
    online: "Live", offline: "Disconnected", only_open: "Only alerts nobody has taken",
    camera: "Camera", from: "From", to: "To", state: "State", any: "Any",
    ev_start: "Motion started", ev_end: "Motion ended", ev_pulse: "Motion pulse",
    search: "Search", time: "Time", gateway: "Gateway", what: "Event", source: "Source",
    still: "Still", no_events: "No events.", last_seen: "Last seen", cameras: "Cameras",
    buffer: "Buffer", temperature: "Temperature", version: "Version", close: "Close",
    st_up: "Up", st_down: "Down", st_degraded: "Degraded", st_unknown: "Unknown",
    since: "since", ack: "Acknowledge", acked_by: "Acknowledged by {who}, {when}",
    gw_online: "Online", gw_offline: "Offline", gw_unknown: "Unknown",
    gw_shutdown: "Offline (shut down)", no_still: "No still yet", check_now: "Check now",
    reboot: "Reboot", sent: "Command sent", cmd_failed: "Command failed: {why}",
    n_cameras: "{n} cameras", n_down: "{n} down", n_degraded: "{n} degraded", n_up: "{n} up",
    n_gateways: "{n} gateways", gw_cams: "{n} cameras, {bad} with problems",
    confirm_reboot: "Reboot camera {cam}?", motion: "Motion",
    p_unreachable: "Unreachable", p_auth_failed: "Camera password refused",
    p_http_error: "HTTP error", p_rtsp_error: "Video stream (RTSP) error", p_no_frames: "No picture",
    p_frozen: "Picture frozen", p_black: "Picture black (covered?)", p_clock_drift: "Camera clock wrong",
    k_camera_down: "Camera down", k_camera_up: "Camera back up", k_camera_degraded: "Camera degraded",
    k_tamper: "Camera covered or tampered with", k_enclosure_open: "Cabinet opened",
    k_enclosure_closed: "Cabinet closed", k_over_temperature: "Over temperature",
    k_temperature_ok: "Temperature back to normal", k_disk_low: "Storage almost full",
    k_disk_ok: "Storage fine again", k_buffer_dropped: "Buffered data dropped",
    k_buffer_corrupt: "Buffered data damaged", k_unclean_shutdown: "Gateway stopped abruptly (power cut?)",
    k_config_applied: "Configuration applied", k_config_rejected: "Configuration refused",
    k_config_rolled_back: "Configuration rolled back", k_board_fault: "Board fault",
    k_camera_power_cycled: "Camera power cycled", k_snapshot_budget_reached: "Daily still budget used up",
    k_update_applied: "Software updated", k_update_failed: "Software update failed",
    src_onvif: "ONVIF", src_hikvision: "Hikvision", src_dahua: "Dahua", src_gpio: "Sensor (GPIO)",
    src_ingest: "HTTP",
  },
};
const URGENT = new Set(["camera_down", "tamper", "enclosure_open", "over_temperature", "disk_low",
  "buffer_dropped", "buffer_corrupt", "board_fault", "update_failed"]);

const S = {
  lang: localStorage.getItem("camgw.lang") || "vi",
  tz: "Asia/Ho_Chi_Minh", csrf: "", me: null, tab: "cameras",
  cameras: new Map(), gateways: new Map(), alerts: new Map(), stills: new Map(),
  es: null, gwTimer: null, sections: null,
};

const $ = (sel, root = document) => root.querySelector(sel);
function t(key, vars) {
  let s = (T[S.lang] && T[S.lang][key]) || T.vi[key] || key;
  for (const [k, v] of Object.entries(vars || {})) s = s.replace("{" + k + "}", String(v));
  return s;
}
/** A word for a code from the gateway, or the code itself (as text) when it has none. */
function word(prefix, code) {
  const k = prefix + code;
  return (T[S.lang][k] || T.vi[k]) ? t(k) : String(code);
}
function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, String(v));
  }
  for (const k of kids) if (k !== null && k !== undefined) e.append(k instanceof Node ? k : String(k));
  return e;
}
const key = (...parts) => parts.map(String).join("\u0000");
const stillUrl = (u) => (typeof u === "string" && u.startsWith("/api/snapshots/")) ? u : null;

// ---- time ---------------------------------------------------------------------------------
function fmtTime(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  if (isNaN(d)) return String(iso);
  return formatters().abs.format(d);
}
// Building an Intl formatter costs far more than using one (thousands of cards on a load):
// one pair per language and time zone.
let FMT = null;
function formatters() {
  if (!FMT || FMT.lang !== S.lang || FMT.tz !== S.tz) {
    FMT = { lang: S.lang, tz: S.tz,
      abs: new Intl.DateTimeFormat(S.lang === "vi" ? "vi-VN" : "en-GB",
        { timeZone: S.tz, year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit",
          minute: "2-digit", second: "2-digit", hourCycle: "h23" }),
      rel: new Intl.RelativeTimeFormat(S.lang, { numeric: "auto" }) };
  }
  return FMT;
}
function relTime(iso) {
  const d = new Date(iso);
  if (!iso || isNaN(d)) return "";
  const s = Math.round((d.getTime() - Date.now()) / 1000);
  const rtf = formatters().rel;
  const a = Math.abs(s);
  if (a < 45) return rtf.format(s, "second");
  if (a < 2700) return rtf.format(Math.round(s / 60), "minute");
  if (a < 64800) return rtf.format(Math.round(s / 3600), "hour");
  return rtf.format(Math.round(s / 86400), "day");
}
function timeEl(iso) {
  return el("time", { datetime: iso || "", title: fmtTime(iso), "data-rel": iso ? "1" : null }, relTime(iso));
}
function refreshRelative() {
  for (const e of document.querySelectorAll("time[data-rel]")) e.textContent = relTime(e.getAttribute("datetime"));
}
/** Milliseconds between UTC and `tz` at instant `ms`. */
function tzOffset(ms, tz) {
  const p = Object.fromEntries(new Intl.DateTimeFormat("en-US", { timeZone: tz, hourCycle: "h23",
    year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit", second: "2-digit" })
    .formatToParts(new Date(ms)).map((x) => [x.type, x.value]));
  return Date.UTC(+p.year, +p.month - 1, +p.day, +p.hour % 24, +p.minute, +p.second) - Math.floor(ms / 1000) * 1000;
}
/** A datetime-local value, read as wall time in the station's zone, to RFC 3339 UTC. */
function stationTimeToUtc(v) {
  if (!v) return "";
  const m = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2})/.exec(v);
  if (!m) return "";
  const wall = Date.UTC(+m[1], +m[2] - 1, +m[3], +m[4], +m[5]);
  let ms = wall - tzOffset(wall, S.tz);
  ms = wall - tzOffset(ms, S.tz);
  return new Date(ms).toISOString();
}

// ---- API ----------------------------------------------------------------------------------
async function api(path, opts = {}) {
  const o = { method: opts.method || "GET", headers: { "Accept": "application/json" }, credentials: "same-origin" };
  if (opts.body !== undefined) { o.headers["Content-Type"] = "application/json"; o.body = JSON.stringify(opts.body); }
  if (o.method !== "GET") o.headers["X-CSRF-Token"] = S.csrf;
  const r = await fetch(path, o);
  if (r.status === 401 && path !== "/api/login") { showLogin(); throw new Error("401"); }
  let j = null;
  try { j = await r.json(); } catch (_) { /* not JSON */ }
  if (!r.ok) throw new Error((j && j.error) || ("HTTP " + r.status));
  return j;
}
function toast(msg) {
  const e = $("#toast");
  e.textContent = msg; e.hidden = false;
  clearTimeout(toast.t); toast.t = setTimeout(() => { e.hidden = true; }, 4000);
}

// ---- language -----------------------------------------------------------------------------
function applyLang() {
  document.documentElement.lang = S.lang;
  for (const e of document.querySelectorAll("[data-t]")) e.textContent = t(e.dataset.t);
  $("#lang").textContent = S.lang === "vi" ? "EN" : "VI";
  document.title = "camgw · " + t("title");
  renderAll();
}

// ---- cameras ------------------------------------------------------------------------------
function cameraCard(c) {
  const kids = [];
  const img = stillUrl(c.snapshot);
  kids.push(img ? el("img", { src: img, alt: "", loading: "lazy", onclick: () => openStill(img, c.camera) })
    : el("div", { class: "noimg" }, t("no_still")));
  kids.push(el("div", { class: "name" }, c.camera));
  kids.push(el("div", { class: "st" }, word("st_", c.state)));
  const probs = Array.isArray(c.problems) ? c.problems : [];
  if (probs.length) kids.push(el("ul", { class: "problems" }, ...probs.map((p) => el("li", {}, word("p_", p)))));
  if (c.since) kids.push(el("div", { class: "since" }, t("since") + " ", timeEl(c.since)));
  if (S.me && S.me.role === "admin" && S.me.commands) {
    kids.push(el("div", { class: "tools" },
      el("button", { class: "act secondary", onclick: () => command(c, "check_now") }, t("check_now")),
      el("button", { class: "act secondary", onclick: () => command(c, "reboot_camera") }, t("reboot"))));
  }
  const card = el("div", { class: "cam", "data-camera": c.camera, "data-gateway": c.gateway, "data-state": c.state }, ...kids);
  return card;
}
function camerasByGateway() {
  const byGw = new Map();
  for (const g of S.gateways.values()) byGw.set(key(g.ward, g.gateway), []);
  for (const c of S.cameras.values()) {
    const k = key(c.ward, c.gateway);
    if (!byGw.has(k)) byGw.set(k, []);
    byGw.get(k).push(c);
  }
  return byGw;
}
function gatewayHeader(k, cams) {
  const [ward, gateway] = k.split("\u0000");
  const bad = cams.filter((c) => c.state !== "up").length;
  return el("h2", {}, gateway, el("span", { class: "muted" }, ward),
    gwState(S.gateways.get(k)), el("span", { class: "muted" }, t("gw_cams", { n: cams.length, bad })));
}
function gatewaySection(k, cams) {
  cams.sort((a, b) => (a.camera < b.camera ? -1 : 1));
  const sec = el("section", { class: "gw", "data-gateway": k.split("\u0000")[1] },
    gatewayHeader(k, cams), el("div", { class: "cams" }, ...cams.map(cameraCard)));
  S.sections.set(k, sec);
  return sec;
}
function camerasOf(k) {
  return [...S.cameras.values()].filter((c) => key(c.ward, c.gateway) === k);
}
/** The whole grid (after a load or a language switch). */
function renderCameras() {
  S.sections = new Map();
  const byGw = camerasByGateway();
  $("#grid").replaceChildren(...[...byGw.entries()].sort((a, b) => (a[0] < b[0] ? -1 : 1))
    .map(([k, cams]) => gatewaySection(k, cams)));
  renderSummary();
  const ids = [...new Set([...S.cameras.values()].map((c) => c.camera))].sort();
  $("#camera-ids").replaceChildren(...ids.map((i) => el("option", { value: i })));
}
/** One gateway's section, after a change to one of its cameras (the rest stays as it is). */
function renderGateway(k) {
  const old = S.sections && S.sections.get(k);
  if (!old) { renderCameras(); return; }
  old.replaceWith(gatewaySection(k, camerasOf(k)));
  renderSummary();
}
/** Only the sections' headers (online state, counts), after gateway changes. */
function renderHeaders() {
  if (!S.sections) return;
  const byGw = camerasByGateway();
  for (const [k, cams] of byGw) {
    const sec = S.sections.get(k);
    if (!sec) { renderCameras(); return; }
    sec.firstChild.replaceWith(gatewayHeader(k, cams));
  }
  renderSummary();
}
function renderSummary() {
  const counts = { up: 0, down: 0, degraded: 0 };
  for (const c of S.cameras.values()) if (c.state in counts) counts[c.state]++;
  $("#summary").replaceChildren(
    el("span", {}, t("n_gateways", { n: camerasByGateway().size })),
    el("span", { class: "on-line" }, t("n_up", { n: counts.up })),
    el("span", { class: "off-line" }, t("n_down", { n: counts.down })),
    el("span", {}, t("n_degraded", { n: counts.degraded })));
}
function gwState(g) {
  if (!g || g.online === null || g.online === undefined) return el("span", { class: "muted" }, t("gw_unknown"));
  if (g.online) return el("span", { class: "on-line" }, t("gw_online"));
  return el("span", { class: "off-line" }, g.reason === "shutdown" ? t("gw_shutdown") : t("gw_offline"));
}
async function command(c, op) {
  if (op === "reboot_camera" && !confirm(t("confirm_reboot", { cam: c.camera }))) return;
  try {
    const r = await api("/api/commands", { method: "POST", body: { ward: c.ward, gateway: c.gateway, op, camera: c.camera } });
    toast(r && r.ok ? t("sent") : t("cmd_failed", { why: (r && r.error) || "?" }));
  } catch (e) { toast(t("cmd_failed", { why: e.message })); }
}

// ---- alerts -------------------------------------------------------------------------------
function alertItem(a) {
  const acked = !!a.acked_by;
  const who = [a.gateway, a.camera].filter(Boolean).join(" / ");
  const detail = a.detail && typeof a.detail === "object" && Array.isArray(a.detail.problems)
    ? a.detail.problems.map((p) => word("p_", p)).join(", ") : "";
  const side = acked ? null : el("button", { class: "act side", onclick: () => ack(a.id) }, t("ack"));
  return el("li", { class: (URGENT.has(a.kind) ? "urgent" : "") + (acked ? " acked" : ""), "data-alert": a.id, "data-kind": a.kind },
    el("div", { class: "what" }, word("k_", a.kind)),
    side,
    el("div", { class: "meta" }, who, " · ", timeEl(a.ts), " · ", fmtTime(a.ts)),
    detail ? el("div", { class: "detail" }, detail) : null,
    acked ? el("div", { class: "ackinfo" }, t("acked_by", { who: a.acked_by, when: fmtTime(a.acked_at) })) : null);
}
function renderAlerts() {
  const only = $("#only-open").checked;
  const list = [...S.alerts.values()].sort((a, b) => (a.ts < b.ts ? 1 : a.ts > b.ts ? -1 : (b.seq || 0) - (a.seq || 0)));
  $("#alerts").replaceChildren(...list.filter((a) => !only || !a.acked_by).slice(0, 500).map(alertItem));
  const open = list.filter((a) => !a.acked_by && URGENT.has(a.kind)).length;
  const b = $("#unacked");
  b.textContent = String(open); b.hidden = open === 0;
}
async function ack(id) {
  try {
    const a = await api("/api/alerts/" + encodeURIComponent(id) + "/ack", { method: "POST", body: {} });
    S.alerts.set(a.id, a); renderAlerts();
  } catch (e) { toast(e.message); }
}

// ---- history ------------------------------------------------------------------------------
function filterQuery() {
  const f = new FormData($("#filter"));
  const q = new URLSearchParams();
  if (f.get("camera")) q.set("camera", f.get("camera"));
  if (f.get("state")) q.set("state", f.get("state"));
  const since = stationTimeToUtc(f.get("since")), until = stationTimeToUtc(f.get("until"));
  if (since) q.set("since", since);
  if (until) q.set("until", until);
  q.set("limit", "500");
  return q;
}
function eventRow(e) {
  const img = stillUrl(e.snapshot);
  return el("tr", { "data-event": e.id },
    el("td", {}, fmtTime(e.ts), el("br"), timeEl(e.ts)),
    el("td", {}, e.gateway), el("td", {}, e.camera),
    el("td", {}, word("ev_", e.state)), el("td", {}, word("src_", e.source)),
    el("td", {}, img ? el("img", { src: img, alt: t("still"), loading: "lazy", onclick: () => openStill(img, e.camera + " · " + fmtTime(e.ts)) }) : ""));
}
async function loadEvents() {
  try {
    const list = await api("/api/events?" + filterQuery().toString());
    S.events = list;
    renderEvents();
  } catch (e) { if (e.message !== "401") toast(e.message); }
}
function renderEvents() {
  const list = S.events || [];
  $("#events tbody").replaceChildren(...list.map(eventRow));
  $("#events-empty").hidden = list.length > 0;
}
function matchesFilter(e) {
  const q = filterQuery();
  if (q.get("camera") && q.get("camera") !== e.camera) return false;
  if (q.get("state") && q.get("state") !== e.state) return false;
  if (q.get("until")) return false;
  if (q.get("since") && e.ts < q.get("since")) return false;
  return true;
}
function openStill(src, caption) {
  const d = $("#still");
  $("img", d).src = src;
  $("figcaption", d).textContent = caption;
  d.showModal();
}

// ---- gateways -----------------------------------------------------------------------------
function renderGateways() {
  const rows = [...S.gateways.values()].sort((a, b) => key(a.ward, a.gateway) < key(b.ward, b.gateway) ? -1 : 1)
    .map((g) => el("tr", { "data-gateway": g.gateway, "data-online": g.online === null ? "unknown" : String(g.online) },
      el("td", {}, g.gateway, el("br"), el("small", { class: "muted" }, g.ward)),
      el("td", {}, gwState(g)),
      el("td", {}, g.last_seen ? timeEl(g.last_seen) : "", g.last_seen ? el("br") : null, el("small", { class: "muted" }, fmtTime(g.last_seen))),
      el("td", {}, t("gw_cams", { n: g.cameras, bad: g.cameras_not_up })),
      el("td", {}, g.buffer_depth === null || g.buffer_depth === undefined ? "–" : String(g.buffer_depth)),
      el("td", {}, typeof g.temperature_c === "number" ? g.temperature_c.toFixed(1) + " °C" : "–"),
      el("td", {}, g.version || "–")));
  $("#gateways tbody").replaceChildren(...rows);
}

// ---- loading and live updates --------------------------------------------------------------
async function loadAll() {
  const since = new Date(Date.now() - 7 * 86400e3).toISOString();
  const [gws, cams, alerts] = await Promise.all([api("/api/gateways"), api("/api/cameras"),
    api("/api/alerts?since=" + encodeURIComponent(since) + "&limit=1000")]);
  S.gateways = new Map(gws.map((g) => [key(g.ward, g.gateway), g]));
  S.cameras = new Map(cams.map((c) => [key(c.ward, c.gateway, c.camera), c]));
  S.alerts = new Map(alerts.map((a) => [a.id, a]));
  renderAll();
  if (S.tab === "history") loadEvents();
}
function renderAll() {
  if (!S.me) return;
  renderCameras(); renderAlerts(); renderGateways(); renderEvents();
}
async function reloadGateways() {
  S.gwTimer = null;
  try {
    const gws = await api("/api/gateways");
    S.gateways = new Map(gws.map((g) => [key(g.ward, g.gateway), g]));
    renderGateways(); renderHeaders();
  } catch (_) { /* the stream's reconnect reloads */ }
}
function onChange(m) {
  switch (m.type) {
    case "camera": {
      const c = m.camera, k = key(c.ward, c.gateway, c.camera);
      if (c.removed) S.cameras.delete(k); else S.cameras.set(k, c);
      renderGateway(key(c.ward, c.gateway));
      break;
    }
    case "alert": case "ack":
      S.alerts.set(m.alert.id, m.alert); renderAlerts(); break;
    case "event":
      if (S.events && matchesFilter(m.event)) { S.events.unshift(m.event); S.events.length = Math.min(S.events.length, 500); renderEvents(); }
      break;
    case "still": {
      const s = m.still;
      const c = S.cameras.get(key(s.ward, s.gateway, s.camera));
      if (c) { c.snapshot = s.snapshot; renderGateway(key(s.ward, s.gateway)); }
      for (const e of S.events || []) if (e.id === s.event_id && e.gateway === s.gateway) { e.snapshot = s.snapshot; renderEvents(); }
      break;
    }
    case "gateway":
      if (!S.gwTimer) S.gwTimer = setTimeout(reloadGateways, 1000);
      break;
    case "resync":
      loadAll();
      break;
  }
}
function connect() {
  if (S.es) S.es.close();
  const es = new EventSource("/api/stream");
  S.es = es;
  const live = $("#live");
  es.onopen = () => { live.className = "live"; live.dataset.t = "online"; live.textContent = t("online"); loadAll().catch(() => {}); };
  es.onerror = () => { live.className = "live off"; live.dataset.t = "offline"; live.textContent = t("offline"); };
  es.onmessage = (ev) => { try { onChange(JSON.parse(ev.data)); } catch (_) { /* ignore a bad line */ } };
}

// ---- session ------------------------------------------------------------------------------
function showLogin() {
  S.me = null;
  if (S.es) { S.es.close(); S.es = null; }
  $("#login").hidden = false; $("#tabs").hidden = true; $("#logout").hidden = true; $("#who").textContent = "";
  for (const v of document.querySelectorAll(".view")) v.hidden = true;
  document.body.dataset.ready = "login";
}
function showTab(tab) {
  S.tab = tab;
  for (const b of document.querySelectorAll("#tabs button")) b.classList.toggle("on", b.dataset.tab === tab);
  for (const v of document.querySelectorAll(".view")) v.hidden = v.id !== "view-" + tab;
  if (tab === "history") loadEvents();
}
async function start() {
  let me;
  try { me = await api("/api/me"); } catch (_) { return; }
  S.me = me; S.csrf = me.csrf; S.tz = me.tz || S.tz;
  $("#login").hidden = true; $("#tabs").hidden = false; $("#logout").hidden = false;
  $("#who").textContent = me.name + " (" + me.role + ")";
  $("#ward").textContent = me.ward || "";
  showTab(S.tab);
  applyLang();
  await loadAll();
  connect();
  document.body.dataset.ready = "console";
}

document.addEventListener("DOMContentLoaded", () => {
  $("#login-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const f = new FormData(ev.target);
    const err = $("#login-error");
    try {
      const r = await api("/api/login", { method: "POST", body: { name: f.get("name"), password: f.get("password") } });
      S.csrf = r.csrf; err.hidden = true; ev.target.reset();
      await start();
    } catch (_) { err.textContent = t("login_failed"); err.hidden = false; }
  });
  $("#logout").addEventListener("click", async () => { try { await api("/api/logout", { method: "POST", body: {} }); } catch (_) { /* gone anyway */ } showLogin(); });
  $("#lang").addEventListener("click", () => { S.lang = S.lang === "vi" ? "en" : "vi"; localStorage.setItem("camgw.lang", S.lang); applyLang(); });
  for (const b of document.querySelectorAll("#tabs button")) b.addEventListener("click", () => showTab(b.dataset.tab));
  $("#filter").addEventListener("submit", (ev) => { ev.preventDefault(); loadEvents(); });
  $("#only-open").addEventListener("change", renderAlerts);
  setInterval(refreshRelative, 30000);
  applyLang();
  start();
});
