// rover-safety operator page. Plain JavaScript, no framework, nothing loaded from elsewhere.
//
// Every action is one request to the page's server side, which makes the matching gRPC call to the daemon with
// this browser's token; the live view is the daemon's WatchEvents stream as server-sent events.
//
// Driving holds a session of this tab's own: StartSession on the first press, SetPower(linear.y, angular.z) on each
// change of the keys held (auto-repeat ignored), Stop when the last is released, when the window loses focus, and
// when the tab is hidden or closed. The heartbeats come from here, every window/5, and only from here: when this
// tab dies or its network goes, they stop and the daemon stops the base at the end of the window.
"use strict";

const $ = (id) => document.getElementById(id);
const STOP = Object.freeze({ linear: 0, angular: 0 });
const KEYS = {
  ArrowUp: "up", w: "up", W: "up", ArrowDown: "down", s: "down", S: "down",
  ArrowLeft: "left", a: "left", A: "left", ArrowRight: "right", d: "right", D: "right",
};
const EVENT_LOG = 12;

const page = {
  csrf: "", authRequired: false, loggedIn: false, keyId: "", publicStop: false,
  source: null, retry: 0,
};
const drive = {
  base: "", held: new Set(), want: STOP, sent: STOP, busy: false,
  sid: "", window: 0, beat: 0, starting: null,
};

class Failure extends Error {
  constructor(status, code, message) { super(message); this.status = status; this.code = code; }
}

// --- talking to the page's server side ----------------------------------------------------------------------

async function post(path, body, keepalive = false) {
  let response;
  try {
    response = await fetch(path, {
      method: "POST", credentials: "same-origin", cache: "no-store", keepalive,
      headers: { "Content-Type": "application/json", "X-CSRF-Token": page.csrf },
      body: JSON.stringify(body || {}),
    });
  } catch (err) {
    throw new Failure(0, "NETWORK", "the rover does not answer (network?)");
  }
  let data = {};
  try { data = await response.json(); } catch (err) { data = {}; }
  if (!response.ok) {
    const failure = new Failure(response.status, data.code || String(response.status),
                                data.message || response.statusText);
    if (response.status === 401 && page.authRequired) { loggedOut(); }
    if (failure.code === "CSRF" || failure.code === "NO_VISIT") { setTimeout(boot, 0); }
    throw failure;
  }
  return data;
}

async function boot() {
  let state;
  try {
    const response = await fetch("/api/state", { credentials: "same-origin", cache: "no-store" });
    state = await response.json();
    if (!response.ok) { throw new Error(state.message || response.statusText); }
  } catch (err) {
    setLink("bad", "no answer");
    clearTimeout(page.retry);
    page.retry = setTimeout(boot, 2000);
    return;
  }
  page.csrf = state.csrf;
  page.authRequired = state.auth_required;
  page.loggedIn = state.logged_in;
  page.keyId = state.key_id;
  page.publicStop = state.public_stop;
  const canWatch = !page.authRequired || page.loggedIn;
  $("login").hidden = canWatch;
  $("live").hidden = !canWatch;
  $("logout").hidden = !page.loggedIn;
  $("who").textContent = page.loggedIn ? `key ${page.keyId}` : (page.authRequired ? "not logged in" : "no API keys (loopback)");
  const note = $("stop-note");
  note.hidden = canWatch;
  note.textContent = page.publicStop ? "STOP ALL works before login (auth.public_stop)."
                                     : "Log in to use STOP ALL (auth.public_stop is off).";
  if (canWatch) { watch(); } else { unwatch(); setLink("off", "logged out"); }
}

// The daemon refused this browser's token (revoked, expired, daemon restarted): back to the login form.
function loggedOut() {
  if (!page.loggedIn) { return; }
  page.loggedIn = false;
  endSession();
  boot();
}

// --- the live view --------------------------------------------------------------------------------------------

function watch() {
  unwatch();
  const source = new EventSource("/api/events");
  page.source = source;
  source.onopen = () => setLink("on", "live");
  source.onmessage = (message) => onEvent(JSON.parse(message.data));
  source.addEventListener("ended", () => { unwatch(); boot(); });
  source.addEventListener("failed", () => { unwatch(); setLink("bad", "stream failed"); setTimeout(boot, 1000); });
  source.onerror = () => {
    if (source.readyState === EventSource.CLOSED) {  // refused (logged out, too many tabs): ask again
      unwatch();
      setLink("bad", "disconnected");
      clearTimeout(page.retry);
      page.retry = setTimeout(boot, 2000);
    } else {
      setLink("bad", "reconnecting");
    }
  };
}

function unwatch() {
  if (page.source) { page.source.close(); page.source = null; }
}

function onEvent(event) {
  if (event.status) { render(event.status); }
  if (event.kind !== "snapshot") { logEvent(event); }
  if (event.kind === "shutting_down") { setLink("bad", "daemon stopping"); }
}

function setLink(kind, text) {
  const link = $("link");
  link.className = `badge ${kind}`;
  link.textContent = text;
}

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) { node.className = className; }
  if (text !== undefined) { node.textContent = text; }
  return node;
}

function row(left, right) {
  const div = el("div", "row");
  div.append(el("span", "name", left));
  if (right) { div.append(right); }
  return div;
}

function seconds(value) {
  if (value < 1) { return `${Math.round(value * 1000)} ms`; }
  if (value < 120) { return `${value.toFixed(1)} s`; }
  return `${Math.floor(value / 60)} min`;
}

function clock(unix) {
  return new Date(unix * 1000).toLocaleTimeString([], { hour12: false });
}

function replace(list, items, empty) {
  list.replaceChildren(...(items.length ? items : [el("li", "empty", empty)]));
}

function render(status) {
  const gpio = $("gpio");
  gpio.className = `badge ${status.gpio_up ? "on" : "bad"}`;
  gpio.textContent = `GPIO ${status.gpio_backend} ${status.gpio_up ? "up" : "DOWN"}`;
  const refused = $("refused");
  refused.hidden = !status.motion_refused;
  refused.textContent = status.motion_refused ? `Motion refused: ${status.motion_refused}` : "";

  replace($("resources"), status.resources.map((r) => {
    const li = el("li", r.moving ? "moving" : "");
    li.dataset.resource = r.name;
    const badge = el("span", `badge ${r.moving ? "moving" : "off"}`,
                     !r.available ? "UNAVAILABLE" : (r.moving ? "MOVING" : "stopped"));
    li.append(row(r.name, badge));
    const power = Math.round(r.power * 100);
    li.append(el("div", "detail", `${r.kind}${r.part ? ` on ${r.part}` : ""} · power ${power}%` +
                                  (r.session_tag ? ` · session ${r.session_tag}` : "")));
    const bar = el("div", "power");
    const fill = el("span");
    const width = Math.min(50, Math.abs(r.power) * 50);
    fill.style.left = r.power >= 0 ? "50%" : `${50 - width}%`;
    fill.style.width = `${width}%`;
    bar.append(fill);
    li.append(bar);
    return li;
  }), "No resources.");

  $("session-count").textContent = String(status.sessions.length);
  replace($("sessions"), status.sessions.map((s) => {
    const li = el("li");
    li.dataset.tag = s.tag;
    const late = s.since_heartbeat_seconds > s.window_seconds * 0.6;
    li.append(row(`${s.tag}${s.mine ? " (yours)" : ""}`,
                  el("span", `badge ${late ? "bad" : "on"}`, `heard ${seconds(s.since_heartbeat_seconds)} ago`)));
    li.append(el("div", "detail", `owner ${s.owner} · peer ${s.peer}`));
    li.append(el("div", "detail", `age ${seconds(s.age_seconds)} · window ${seconds(s.window_seconds)} · ` +
                                  `drives ${s.resources.length ? s.resources.join(", ") : "nothing"}`));
    return li;
  }), "No sessions.");

  replace($("expiries"), status.recent_expiries.map((e) => {
    const li = el("li");
    li.dataset.tag = e.session_tag;
    const late = e.latency_ms === null ? "" : ` · off ${e.latency_ms.toFixed(2)} ms after the deadline`;
    li.append(row(`${e.session_tag} ${e.reason}`, el("span", "detail", clock(e.unix_time))));
    li.append(el("div", "detail", `stopped ${e.stopped.length ? e.stopped.join(", ") : "nothing"}` +
                                  ` · moving ${e.moving.length ? e.moving.join(", ") : "nothing"}${late}`));
    li.append(el("div", "detail", `peer ${e.peer}`));
    return li;
  }), "No expiries yet.");

  renderBases(status);
}

function logEvent(event) {
  const parts = [clock(event.unix_time), event.kind];
  if (event.session_tag) { parts.push(event.session_tag); }
  if (event.resources.length) { parts.push(event.resources.join(", ")); }
  if (event.latency_ms !== null) { parts.push(`${event.latency_ms.toFixed(2)} ms`); }
  if (event.detail) { parts.push(event.detail); }
  const list = $("events");
  list.prepend(el("li", "", parts.join(" · ")));
  while (list.children.length > EVENT_LOG) { list.lastElementChild.remove(); }
}

// --- STOP ALL ---------------------------------------------------------------------------------------------------

async function stopAll() {
  const button = $("stop-all");
  drive.held.clear();
  drive.want = STOP;
  drive.sent = STOP;  // StopAll stops the base too; a command still in flight is followed by a Stop (see pump)
  renderPad();
  button.classList.add("sent");
  try {
    await post("/api/stop_all", {}, true);
    button.textContent = "STOPPED";
  } catch (err) {
    button.textContent = "STOP ALL";
    showNote(err.status === 401 ? "Not stopped: log in first (auth.public_stop is off)." : `Not stopped: ${err.message}`);
    button.classList.remove("sent");
    return;
  }
  setTimeout(() => { button.textContent = "STOP ALL"; button.classList.remove("sent"); }, 1500);
}

function showNote(text) {
  const note = $("stop-note");
  note.hidden = false;
  note.textContent = text;
}

// --- driving ----------------------------------------------------------------------------------------------------

function renderBases(status) {
  const bases = status.resources.filter((r) => r.kind === "base" && r.available).map((r) => r.name);
  const select = $("base");
  const names = Array.from(select.options).map((o) => o.value);
  if (names.join("\n") !== bases.join("\n")) {
    select.replaceChildren(...bases.map((name) => { const o = el("option", "", name); o.value = name; return o; }));
    if (bases.includes(drive.base)) { select.value = drive.base; }
  }
  if (!bases.includes(drive.base)) { release(); drive.base = bases[0] || ""; }
  $("base-choice").hidden = bases.length < 2;
  $("no-base").hidden = bases.length > 0;
  $("pad").hidden = bases.length === 0;
}

function speed() { return Number($("speed").value) / 100; }

function wanted() {
  const h = drive.held;
  const p = speed();
  const linear = (h.has("up") ? 1 : 0) - (h.has("down") ? 1 : 0);
  const angular = (h.has("left") ? 1 : 0) - (h.has("right") ? 1 : 0);  // counter-clockwise positive
  return { linear: linear * p, angular: angular * p };
}

const same = (a, b) => a.linear === b.linear && a.angular === b.angular;
const isStop = (v) => v.linear === 0 && v.angular === 0;

function changed() {
  drive.want = wanted();
  renderPad();
  pump();
}

function press(dir) {
  if (drive.held.has(dir) || !drive.base) { return; }
  drive.held.add(dir);
  changed();
}

function unpress(dir) {
  if (!drive.held.delete(dir)) { return; }
  changed();
}

// Everything held is let go: Stop, if this page is driving.
function release() {
  const driving = drive.held.size > 0 || !isStop(drive.sent) || !isStop(drive.want);
  drive.held.clear();
  if (driving) { changed(); }
}

// One command at a time, in order, the latest wish winning: a Stop is never overtaken by an older SetPower.
async function pump() {
  if (drive.busy) { return; }
  drive.busy = true;
  try {
    let stopTries = 0;
    while (!same(drive.want, drive.sent)) {
      const want = drive.want;
      const base = drive.base;
      try {
        if (isStop(want)) {
          await post(`/api/bases/${encodeURIComponent(base)}/stop`, {}, true);
        } else {
          await setPower(base, want);
        }
        drive.sent = want;
        driveError("");
      } catch (err) {
        if (isStop(want) && err.status === 0 && ++stopTries < 4) { continue; }  // the lapse stops it if this cannot
        drive.sent = want;
        driveError(err.message);
        if (!isStop(want)) { drive.held.clear(); drive.want = STOP; renderPad(); }
      }
    }
  } finally {
    drive.busy = false;
  }
}

async function setPower(base, want) {
  for (let attempt = 0; ; attempt++) {
    const sid = drive.sid || await startSession();
    try {
      await post(`/api/bases/${encodeURIComponent(base)}/power`, { session: sid, ...want });
      return;
    } catch (err) {
      // The session lapsed or was closed: start a fresh one, but only if this is still what is wanted.
      if (err.code !== "SESSION_EXPIRED" || attempt > 0 || !same(want, drive.want)) { throw err; }
      if (drive.sid === sid) { forget(); }
    }
  }
}

async function startSession() {
  if (!drive.starting) {
    drive.starting = post("/api/sessions", {}).then((reply) => {
      drive.sid = reply.id;
      drive.window = reply.window_seconds;
      clearTimeout(drive.beat);
      drive.beat = setTimeout(beat, drive.window * 200);
      renderPad();
      return reply.id;
    }).finally(() => { drive.starting = null; });
  }
  return drive.starting;
}

// A heartbeat every window/5, from this tab only; the page's server side forwards it and sends none of its own.
async function beat() {
  const sid = drive.sid;
  if (!sid) { return; }
  drive.beat = setTimeout(beat, drive.window * 200);
  try {
    await post("/api/sessions/heartbeat", { id: sid });
  } catch (err) {
    if (err.code === "SESSION_EXPIRED" && drive.sid === sid) {
      forget();
      driveError(isStop(drive.sent) ? "" : "The drive session lapsed: the base was stopped.");
    }
  }
}

function forget() {
  clearTimeout(drive.beat);
  drive.sid = "";
  renderPad();
}

// Stop and end the session (leaving the page, hiding the tab); keepalive lets both out of a closing tab.
function endSession() {
  release();
  const sid = drive.sid;
  forget();
  if (sid) { post("/api/sessions/close", { id: sid }, true).catch(() => {}); }
}

function driveError(text) {
  const node = $("drive-error");
  node.hidden = !text;
  node.textContent = text;
}

function renderPad() {
  for (const button of document.querySelectorAll("#pad .dir")) {
    button.classList.toggle("held", drive.held.has(button.dataset.dir));
  }
  const state = $("drive-state");
  if (drive.sid) {
    state.className = `badge ${isStop(drive.want) ? "on" : "moving"}`;
    state.textContent = `${isStop(drive.want) ? "session live" : "driving"} · heartbeat ${seconds(drive.window / 5)}`;
  } else {
    state.className = "badge off";
    state.textContent = "no session";
  }
  $("speed-value").textContent = `${Math.round(speed() * 100)}%`;
}

function typing(target) {
  return target instanceof HTMLInputElement && target.type !== "range" || target instanceof HTMLSelectElement;
}

// --- wiring -----------------------------------------------------------------------------------------------------

function setUp() {
  $("stop-all").addEventListener("click", stopAll);
  $("logout").addEventListener("click", async () => {
    endSession();
    try { await post("/api/logout", {}); } catch (err) { /* boot() shows what is left */ }
    boot();
  });
  $("login-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const error = $("login-error");
    error.hidden = true;
    try {
      await post("/api/login", { key_id: $("key-id").value.trim(), key: $("key").value.trim() });
      $("key").value = "";
    } catch (err) {
      error.hidden = false;
      error.textContent = err.message;
      return;
    }
    boot();
  });
  $("base").addEventListener("change", (event) => { release(); drive.base = event.target.value; });
  $("speed").addEventListener("input", () => { if (drive.held.size) { changed(); } else { renderPad(); } });

  for (const button of document.querySelectorAll("#pad .dir")) {
    const dir = button.dataset.dir;
    button.addEventListener("pointerdown", (event) => {
      event.preventDefault();
      button.setPointerCapture(event.pointerId);
      press(dir);
    });
    for (const name of ["pointerup", "pointercancel", "lostpointercapture"]) {
      button.addEventListener(name, () => unpress(dir));
    }
    button.addEventListener("contextmenu", (event) => event.preventDefault());
  }
  document.addEventListener("keydown", (event) => {
    const dir = KEYS[event.key];
    if (!dir || typing(event.target) || event.ctrlKey || event.metaKey || event.altKey) { return; }
    event.preventDefault();
    if (event.repeat) { return; }  // auto-repeat: the key is still held, nothing changed
    press(dir);
  });
  document.addEventListener("keyup", (event) => {
    const dir = KEYS[event.key];
    if (dir) { unpress(dir); }
  });
  window.addEventListener("blur", release);
  document.addEventListener("visibilitychange", () => { if (document.visibilityState === "hidden") { endSession(); } });
  window.addEventListener("pagehide", endSession);
  renderPad();
  boot();
}

setUp();
