"use strict";
// The admin page: plain JavaScript, no build step. The token lives in sessionStorage (this tab only)
// and travels only in the Authorization header. Everything the API returns is put in the page as
// text (textContent), never as HTML. URLs are relative, so the page works behind a path prefix.

const TOKEN_KEY = "whinmovilla.token";
const REFRESH_MS = 3000;
const $ = (id) => document.getElementById(id);

let listing = null;   // the table's refresh timer
let enrolling = null; // {slot, refresh, poll}: the enrollment on show
let shown = "";       // what the table shows, so an unchanged listing leaves the rows (and clicks) alone

class ApiError extends Error {
  constructor(status, code, detail) {
    super(detail);
    this.status = status;
    this.code = code;
  }
}

async function api(method, path, body) {
  const headers = { Authorization: `Bearer ${sessionStorage.getItem(TOKEN_KEY) || ""}` };
  const init = { method, headers, cache: "no-store" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  const isJson = (response.headers.get("Content-Type") || "").includes("application/json");
  const payload = isJson ? await response.json() : await response.text();
  if (!response.ok) {
    const error = new ApiError(response.status, payload.error || "error", payload.detail || `HTTP ${response.status}`);
    if (response.status === 401) signOut(error.message);
    throw error;
  }
  return payload;
}

function say(text, isError = false) {
  $("message").textContent = text;
  $("message").className = isError ? "error" : "";
}

// --- signing in and out ---

function signedIn() {
  return Boolean(sessionStorage.getItem(TOKEN_KEY));
}

async function signIn(event) {
  event.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, $("token").value.trim());
  $("token").value = "";
  say("");
  await showConsole();
}

function signOut(reason = "") {
  sessionStorage.removeItem(TOKEN_KEY);
  stopEnrollment();
  clearInterval(listing);
  listing = null;
  shown = "";
  $("console").hidden = true;
  $("signout").hidden = true;
  $("signin").hidden = false;
  say(reason, Boolean(reason));
  $("signin").prepend($("message"));
}

async function showConsole() {
  try {
    await refresh();
  } catch (error) {
    if (error.status === 401) return; // signOut has already asked for the token again
    say(error.message, true);         // e.g. Redis down: show the console anyway and keep trying
    listingFailed = true;
  }
  if (!signedIn()) return;
  $("signin").hidden = true;
  $("console").hidden = false;
  $("signout").hidden = false;
  $("slots").before($("message"));
  clearInterval(listing);
  listing = setInterval(poll, REFRESH_MS);
}

let listingFailed = false; // the message shows a failed refresh, to clear once one succeeds

async function poll() {
  try {
    await refresh();
    if (listingFailed) say("");
    listingFailed = false;
  } catch (error) {
    if (error.status === 401) return;
    say(error.message, true);
    listingFailed = true;
  }
}

// --- the slot table ---

async function refresh() {
  const [statuses, lines] = await Promise.all([api("GET", "slots"), api("GET", "slots2lines")]);
  const lineOf = Object.assign({}, ...lines);
  render(statuses.map((pair) => {
    const [id, status] = Object.entries(pair)[0];
    return { id, status, line: lineOf[id] ?? null };
  }));
}

const ACTIONS = {
  available: ["enroll"],
  active: ["sleep", "kill"],
  sleeping: ["resume", "kill"],
};

function render(slots) {
  const listed = JSON.stringify(slots);
  if (listed === shown) return;
  shown = listed;
  const rows = slots.map((slot) => {
    const row = document.createElement("tr");
    row.id = `slot-${slot.id}`;
    row.dataset.status = slot.status;
    row.append(cell(slot.id), cell(slot.status, `status status-${slot.status}`), cell(slot.line || "—", "line"));
    const actions = cell("", "actions");
    for (const action of ACTIONS[slot.status] || []) {
      const button = document.createElement("button");
      button.type = "button";
      button.textContent = action[0].toUpperCase() + action.slice(1);
      button.dataset.action = action;
      button.dataset.slot = slot.id;
      actions.append(button);
    }
    row.append(actions);
    return row;
  });
  $("slots").tBodies[0].replaceChildren(...rows);
  $("empty").hidden = slots.length > 0;
}

function cell(text, className = "") {
  const td = document.createElement("td");
  td.textContent = text;
  if (className) td.className = className;
  return td;
}

async function onTableClick(event) {
  const button = event.target.closest("button[data-action]");
  if (!button) return;
  const { action, slot } = button.dataset;
  if (action === "enroll") return startEnrollment(slot);
  if (action === "kill" && !confirm(`Unlink the line of slot ${slot}? Its WhatsApp credentials are deleted.`)) return;
  button.disabled = true;
  say(`${button.textContent} ${slot}…`);
  try {
    await api("POST", `${action}id/${slot}`);
    say(`${button.textContent} ${slot}: done.`);
  } catch (error) {
    say(error.message, true);
  }
  shown = ""; // re-render even if nothing changed, so the button comes back
  await refresh().catch((error) => say(error.message, true));
}

async function provision(event) {
  event.preventDefault();
  try {
    const { created } = await api("POST", "slots", { count: Number($("count").value) });
    say(`Provisioned ${created.join(", ")}.`);
    await refresh();
  } catch (error) {
    say(error.message, true);
  }
}

// --- enrollment: the QR code, refreshed as WhatsApp rotates it, until the phone links ---

async function startEnrollment(slot) {
  stopEnrollment();
  const state = { slot, refresh: null, poll: null, expiresAt: 0, done: false };
  enrolling = state;
  $("enroll-slot").textContent = slot;
  $("enrollment").dataset.outcome = "pairing";
  $("enroll-state").textContent = "Open WhatsApp on the phone: Linked devices > Link a device, and scan this code.";
  $("qr-expiry").textContent = "Asking the slot for a code…";
  $("enrollment").hidden = false;
  $("enroll-close").textContent = "Cancel";
  $("qr").hidden = true;
  state.poll = setInterval(() => watch(state), 1000);
  await showCode(state, "POST", `enroll/${slot}`);
}

// POST /enroll starts the pairing (or joins it); the refreshes use GET /qr, which never starts one,
// so the page cannot begin a new pairing by itself once the codes have run out.
async function showCode(state, method, path) {
  try {
    const code = await api(method, path);
    if (enrolling !== state || state.done) return;
    $("qr").src = `data:image/png;base64,${code.qr}`;
    $("qr").hidden = false;
    state.expiresAt = Date.now() + code.expires_in * 1000;
    showExpiry(state);
    nextCode(state, Math.max(500, code.expires_in * 1000 + 250));
  } catch (error) {
    if (enrolling !== state || state.done) return;
    // Linked or ended meanwhile? The slot's state says which.
    const slot = await api("GET", `slot/${state.slot}`).catch(() => null);
    if (enrolling !== state || state.done) return;
    if (slot && slot.status === "active" && slot.line) return outcome(state, slot);
    if (method === "POST") return finish(state, error.message, "failed"); // never started, or refused
    if (slot && !slot.pairing) return outcome(state, slot);
    // Still pairing (a slow engine, Redis a moment away): keep the panel and its Cancel, try again.
    $("qr-expiry").textContent = `${error.message} Trying again…`;
    nextCode(state, 2000);
  }
}

function nextCode(state, delay) {
  state.refresh = setTimeout(() => showCode(state, "GET", `qr/${state.slot}`), delay);
}

async function watch(state) {
  showExpiry(state);
  if (!state.expiresAt) return; // the first code is still on its way; showCode judges that call
  const slot = await api("GET", `slot/${state.slot}`).catch(() => null);
  if (enrolling === state && !state.done && slot) outcome(state, slot);
}

// Why a pairing ended without a phone (the slot's pair_error); anything else: the codes ran out.
const ENDINGS = {
  network_unreachable: "The gateway could not reach WhatsApp. Check its network, then enroll again.",
  pair_error: "WhatsApp refused the pairing. Enroll again for new codes.",
};

function outcome(state, slot) {
  if (slot.status === "active" && slot.line) {
    finish(state, `Linked: line ${slot.line} is now on slot ${slot.id}.`, "linked");
    return true;
  }
  if (!slot.pairing) {
    const known = ENDINGS[slot.pair_error];
    finish(state, known || "The codes ran out before a phone scanned one. Enroll again for new codes.",
           known ? "failed" : "ended");
    return true;
  }
  return false;
}

function showExpiry(state) {
  if (!state.expiresAt) return;
  const seconds = Math.max(0, Math.ceil((state.expiresAt - Date.now()) / 1000));
  $("qr-expiry").textContent = `This code changes in ${seconds} s.`;
}

function finish(state, text, result) {
  state.done = true;
  $("enroll-close").textContent = "Close";
  clearTimeout(state.refresh);
  clearInterval(state.poll);
  $("enrollment").dataset.outcome = result;
  $("enroll-state").textContent = text;
  $("qr-expiry").textContent = "";
  $("qr").hidden = true;
  refresh().catch(() => {});
}

function stopEnrollment() {
  if (!enrolling) return;
  clearTimeout(enrolling.refresh);
  clearInterval(enrolling.poll);
  enrolling = null;
  $("enrollment").hidden = true;
}

async function closeEnrollment() {
  const state = enrolling;
  stopEnrollment();
  if (!state || state.done) return;
  // Cancel ends the pairing now rather than leave its codes running out unseen. /cancel touches only a
  // pairing slot: if the phone linked a moment ago, the line stays and the page says so.
  try {
    await api("POST", `cancel/${state.slot}`);
    say(`Enrollment of ${state.slot} cancelled.`);
  } catch (error) {
    const slot = await api("GET", `slot/${state.slot}`).catch(() => null);
    if (slot && slot.status === "active" && slot.line) say(`Slot ${slot.id} had just linked line ${slot.line}: kept.`);
    else say(error.message, true);
  }
  await refresh().catch((error) => say(error.message, true));
}

document.addEventListener("DOMContentLoaded", () => {
  $("signin-form").addEventListener("submit", signIn);
  $("signout").addEventListener("click", () => signOut());
  $("provision-form").addEventListener("submit", provision);
  $("slots").addEventListener("click", onTableClick);
  $("enroll-close").addEventListener("click", closeEnrollment);
  if (signedIn()) {
    showConsole();
  } else {
    signOut();
  }
});
