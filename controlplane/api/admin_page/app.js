"use strict";
// The admin page: plain JavaScript, no build step. The token lives in sessionStorage (this tab only)
// and travels only in the Authorization header. Everything the API returns is put in the page as
// text (textContent), never as HTML. URLs are relative, so the page works behind a path prefix.

const TOKEN_KEY = "whinmovilla.token";
const REFRESH_MS = 3000;
const LINE_PATTERN = /^[1-9][0-9]{6,14}$/; // the API's: international, digits only, no "+"
const $ = (id) => document.getElementById(id);

let listing = null;      // the table's refresh timer
let enrolling = null;    // {slot, refresh, poll, expiresAt, codeExpiresAt, done}: the enrollment on show
let slots = [];          // the last listing (GET /slots/details), as the table shows it
let fresh = new Set();   // slots just provisioned: highlighted until the next action
const notes = new Map(); // slot id -> {text, kind}: feedback shown under that slot's row
const busy = new Set();  // slots with an action under way (their buttons are disabled)
let listingFailed = false; // the message shows a failed refresh, to clear once one succeeds

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

// The page-wide message, by the provisioning form: sign-in, provisioning and listing failures.
function say(text, isError = false) {
  $("message").textContent = text;
  $("message").className = isError ? "error" : "";
}

// Feedback about one slot, shown right under its row.
function note(slotId, text, kind = "") {
  notes.set(slotId, { text, kind });
  render();
}

// Every action starts here, so that what earlier ones said (and a finished enrollment) does not linger.
function newAction() {
  notes.clear();
  fresh = new Set();
  say("");
  listingFailed = false;
  if (enrolling && enrolling.done) stopEnrollment();
  render();
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
  slots = [];
  notes.clear();
  fresh = new Set();
  render();
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

async function poll() {
  try {
    await refresh();
    if (listingFailed) say("");
    listingFailed = false;
  } catch (error) {
    listingError(error);
  }
}

function listingError(error) {
  if (error.status === 401) return;
  say(error.message, true);
  listingFailed = true;
}

// --- the slot table ---

// One call per refresh: every slot with its status, line and whether it is pairing.
async function refresh() {
  slots = await api("GET", "slots/details");
  render();
}

const ACTIONS = {
  available: ["enroll"],
  pairing: ["show", "cancel"],
  active: ["sleep", "kill"],
  sleeping: ["resume", "kill"],
};
const LABELS = { enroll: "Enroll", show: "Show code", cancel: "Cancel", sleep: "Sleep", resume: "Resume", kill: "Kill" };
const DONE = {
  sleep: "Done: the line is asleep (worker stopped, credentials kept).",
  resume: "Done: the line is connected again.",
  kill: "Done: the line is unlinked and its credentials deleted; the slot is available.",
};

// A pairing slot is still "available" to the API's listings; the page says what it is doing.
function shownStatus(slot) {
  return slot.status === "available" && slot.pairing ? "pairing" : slot.status;
}

function actionsOf(slot) {
  const status = shownStatus(slot);
  const onShow = enrolling && enrolling.slot === slot.id && !enrolling.done;
  return (ACTIONS[status] || []).filter((action) => !(onShow && action === "show"));
}

// Rows are kept, not rebuilt, while what they show is unchanged: a click, or typing in the enrollment
// panel (which sits in the row under its slot's), is never interrupted by a refresh.
function render() {
  const body = $("slots").tBodies[0];
  const wanted = [];
  for (const slot of slots) {
    wanted.push(slotRow(slot));
    const detail = detailRow(slot.id);
    if (detail) wanted.push(detail);
  }
  for (const child of [...body.children]) {
    if (!wanted.includes(child)) child.remove();
  }
  wanted.forEach((node, i) => {
    if (body.children[i] !== node) body.insertBefore(node, body.children[i] || null);
  });
  $("empty").hidden = slots.length > 0;
}

function slotRow(slot) {
  const status = shownStatus(slot);
  const actions = actionsOf(slot);
  const isFresh = fresh.has(slot.id);
  const signature = JSON.stringify([status, slot.line, actions, isFresh, busy.has(slot.id)]);
  const existing = $(`slot-${slot.id}`);
  if (existing && existing.dataset.signature === signature) return existing;

  const row = document.createElement("tr");
  row.id = `slot-${slot.id}`;
  row.className = isFresh ? "slot fresh" : "slot";
  row.dataset.status = status;
  row.dataset.signature = signature;
  const id = cell(slot.id, "id");
  if (isFresh) {
    const badge = document.createElement("span");
    badge.className = "badge";
    badge.textContent = "new";
    id.append(" ", badge);
  }
  row.append(id, cell(status, `status status-${status}`), cell(slot.line || "—", "line"));
  const buttons = cell("", "actions");
  for (const action of actions) {
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = LABELS[action];
    button.dataset.action = action;
    button.dataset.slot = slot.id;
    button.disabled = busy.has(slot.id);
    buttons.append(button);
  }
  row.append(buttons);
  return row;
}

// The row under a slot's: its feedback, and the enrollment panel when that slot is enrolling.
function detailRow(slotId) {
  const withPanel = Boolean(enrolling && enrolling.slot === slotId);
  const feedback = notes.get(slotId);
  if (!withPanel && !feedback) return null;
  let row = $(`detail-${slotId}`);
  if (!row) {
    row = document.createElement("tr");
    row.id = `detail-${slotId}`;
    row.className = "detail";
    const td = document.createElement("td");
    td.colSpan = 4;
    const p = document.createElement("p");
    p.id = `note-${slotId}`;
    p.setAttribute("role", "status");
    td.append(p);
    row.append(td);
  }
  const p = row.querySelector("p");
  p.textContent = feedback ? feedback.text : "";
  p.className = `note ${feedback ? feedback.kind : ""}`;
  p.hidden = !feedback;
  if (withPanel && $("enrollment").parentNode !== row.cells[0]) row.cells[0].append($("enrollment"));
  return row;
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
  if (action === "kill" && !confirm(`Unlink the line of slot ${slot}? Its WhatsApp credentials are deleted.`)) return;
  if (action === "cancel" && enrolling && enrolling.slot === slot && !enrolling.done) return closeEnrollment();
  newAction();
  if (action === "enroll") return startEnrollment(slot, "POST", `enroll/${slot}`);
  if (action === "show") return startEnrollment(slot, "GET", `qr/${slot}`); // joins, never starts one
  if (action === "cancel") return cancelPairing(slot);
  busy.add(slot);
  note(slot, `${LABELS[action]} ${slot}…`);
  try {
    await api("POST", `${action}id/${slot}`);
    busy.delete(slot);
    note(slot, DONE[action], "ok");
  } catch (error) {
    busy.delete(slot);
    note(slot, error.message, "error");
  }
  await refresh().catch(listingError);
}

async function provision(event) {
  event.preventDefault();
  newAction();
  try {
    const { created } = await api("POST", "slots", { count: Number($("count").value) });
    fresh = new Set(created);
    say(created.length === 1 ? `Provisioned ${created[0]} (highlighted below): ready to enroll.`
                             : `Provisioned ${created.length} slots (highlighted below): ${created.join(", ")}.`);
    await refresh();
    const first = created.map((id) => $(`slot-${id}`)).find(Boolean);
    if (first) {
      first.scrollIntoView({ block: "center" });
      const enroll = first.querySelector("button[data-action=enroll]");
      if (enroll) enroll.focus({ preventScroll: true });
    }
  } catch (error) {
    say(error.message, true);
  }
}

// --- enrollment: the QR code, refreshed as WhatsApp rotates it, or a code typed on the phone ---

async function startEnrollment(slot, method, path) {
  stopEnrollment();
  const state = { slot, refresh: null, poll: null, expiresAt: 0, codeExpiresAt: 0, codeLine: "", done: false };
  enrolling = state;
  $("enroll-slot").textContent = slot;
  $("enrollment").dataset.outcome = "pairing";
  $("enroll-state").textContent = "Scan this code with the phone: WhatsApp > Linked devices > Link a device.";
  $("qr-expiry").textContent = "Asking the slot for a code…";
  $("qr").hidden = true;
  $("paircode-form").hidden = false;
  $("paircode-line").value = "";
  $("paircode").hidden = true;
  $("paircode").textContent = "";
  pairState("For the phone this page is open on, which cannot scan its own screen: WhatsApp gives it a code to type.");
  $("enroll-close").textContent = "Cancel";
  $("enrollment").hidden = false;
  render(); // the panel goes under the slot's row
  $("enrollment").scrollIntoView({ block: "nearest" });
  state.poll = setInterval(() => watch(state), 1000);
  await showCode(state, method, path);
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

// Linking by code: GET /paircode/<slot>/<line> (joining the pairing under way); the phone with that
// number types the code in WhatsApp. The watch below sees the link as it does for a scan.
async function requestPairCode(event) {
  event.preventDefault();
  const state = enrolling;
  if (!state || state.done) return;
  const line = $("paircode-line").value.replace(/[\s().+-]/g, "");
  if (!LINE_PATTERN.test(line)) {
    $("paircode").hidden = true;
    pairState("Type the phone's number with its country code, digits only: 34666123456 for +34 666 12 34 56.", true);
    return;
  }
  $("paircode-button").disabled = true;
  pairState("Asking WhatsApp for a code…");
  try {
    const answer = await api("POST", `paircode/${state.slot}/${line}`);
    if (enrolling !== state || state.done) return;
    $("paircode").textContent = answer.code;
    $("paircode").hidden = false;
    state.codeLine = line;
    state.codeExpiresAt = Date.now() + answer.expires_in * 1000;
    showCodeExpiry(state);
  } catch (error) {
    if (enrolling !== state || state.done) return;
    $("paircode").hidden = true;
    pairState(error.message, true);
  } finally {
    $("paircode-button").disabled = false;
  }
}

function pairState(text, isError = false) {
  $("paircode-state").textContent = text;
  $("paircode-state").className = isError ? "error" : "hint";
}

async function watch(state) {
  showExpiry(state);
  showCodeExpiry(state);
  if (!state.expiresAt && !state.codeExpiresAt) return; // the first code is still on its way
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
  if (!state.expiresAt || state.done) return;
  const seconds = Math.max(0, Math.ceil((state.expiresAt - Date.now()) / 1000));
  $("qr-expiry").textContent = `This code changes in ${seconds} s.`;
}

function showCodeExpiry(state) {
  if (!state.codeExpiresAt || state.done) return;
  const seconds = Math.max(0, Math.ceil((state.codeExpiresAt - Date.now()) / 1000));
  pairState(`On the phone with number ${state.codeLine}: WhatsApp > Linked devices > Link a device > ` +
            `Link with phone number instead, then type this code (valid for ${seconds} s).`);
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
  $("paircode-form").hidden = true;
  refresh().catch(() => render());
}

function stopEnrollment() {
  if (!enrolling) return;
  clearTimeout(enrolling.refresh);
  clearInterval(enrolling.poll);
  enrolling = null;
  $("enrollment").hidden = true;
  document.querySelector("main").append($("enrollment")); // out of the table, whose row can go
  render();
}

async function closeEnrollment() {
  const state = enrolling;
  newAction();
  stopEnrollment();
  if (!state || state.done) return;
  // Cancel ends the pairing now rather than leave its codes running out unseen.
  await cancelPairing(state.slot);
}

// /cancel touches only a pairing slot: if the phone linked a moment ago, the line stays and the page says so.
async function cancelPairing(slotId) {
  busy.add(slotId);
  render();
  try {
    await api("POST", `cancel/${slotId}`);
    busy.delete(slotId);
    note(slotId, `Enrollment of ${slotId} cancelled.`, "ok");
  } catch (error) {
    const slot = await api("GET", `slot/${slotId}`).catch(() => null);
    busy.delete(slotId);
    if (slot && slot.status === "active" && slot.line) note(slotId, `Slot ${slotId} had just linked line ${slot.line}: kept.`, "ok");
    else note(slotId, error.message, "error");
  }
  await refresh().catch(listingError);
}

document.addEventListener("DOMContentLoaded", () => {
  $("signin-form").addEventListener("submit", signIn);
  $("signout").addEventListener("click", () => signOut());
  $("provision-form").addEventListener("submit", provision);
  $("slots").addEventListener("click", onTableClick);
  $("enroll-close").addEventListener("click", closeEnrollment);
  $("paircode-form").addEventListener("submit", requestPairCode);
  if (signedIn()) {
    showConsole();
  } else {
    signOut();
  }
});
