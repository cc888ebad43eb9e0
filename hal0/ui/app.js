// The dashboard: sign-in, the live event stream, and which view shows.
import { ApiError, LiveStream, get, session } from "./api.js";
import { $ } from "./dom.js";
import { store } from "./store.js";
import * as slots from "./slots.js";
import * as models from "./models.js";
import * as system from "./system.js";
import * as playground from "./playground.js";

const VIEWS = ["slots", "capabilities", "models", "logs", "hardware", "playground"];
let stream = null;
let scope = null; // "admin" | "inference" once signed in

function setConn(state) {
  const el = $("#conn");
  el.dataset.conn = state;
  el.textContent = { live: "Live", reconnecting: "Reconnecting…", off: "", playground: "Playground only" }[state] || state;
}

function showView() {
  if (!scope) return;
  let name = location.hash.slice(1);
  if (!VIEWS.includes(name) || (scope !== "admin" && name !== "playground")) {
    name = scope === "admin" ? "slots" : "playground";
  }
  for (const v of VIEWS) $(`#view-${v}`).hidden = v !== name;
  for (const a of document.querySelectorAll("#tabs a")) {
    if (a.getAttribute("href") === `#${name}`) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  system.logsVisible(name === "logs");
  if (name === "hardware") system.loadHardware();
  if (name === "playground") playground.refreshModels();
}

/** Everything the admin views show, read afresh (on sign-in and on every reconnect). */
async function reload() {
  const [status, reg, pulls, tier] = await Promise.all([get("/api/status"), get("/api/models"),
    get("/api/models/pulls"), get("/api/hardware/tier")]);
  store.tier = tier.tier;
  store.setSlots(status.slots);
  store.caps = status.capabilities;
  store.setModels(reg.models);
  store.setPulls(pulls.pulls);
  store.changed("all");
}

function onEvent(type, data) {
  let ev;
  try { ev = JSON.parse(data); } catch { return; }
  if (type === "slot.state" || type === "slot.config") store.slotEvent(ev);
  else if (type === "slot.deleted") store.slotDeleted(ev.slot);
  else if (type === "model.pull") store.pullEvent(ev);
  else if (type === "resync") reload().catch(() => {});
}

function signedOut(message) {
  if (stream) stream.stop();
  stream = null;
  scope = null;
  session.clear();
  store.reset();
  system.logsVisible(false);
  setConn("off");
  $("#tabs").hidden = true;
  $("#signout").hidden = true;
  for (const v of VIEWS) $(`#view-${v}`).hidden = true;
  $("#signin").hidden = false;
  $("#signin-error").textContent = message || "";
  $("#token").value = "";
}

async function signIn(token) {
  session.set(token);
  try {
    await get("/api/status");
    scope = "admin";
  } catch (e) {
    if (e instanceof ApiError && e.status === 403) {
      scope = "inference"; // a valid token without the admin scope: the playground only
    } else {
      const why = e instanceof ApiError && e.status === 401
        ? "That token was not accepted: check it and sign in again." : `hal0 did not answer (${e.message}).`;
      signedOut(why);
      return;
    }
  }
  $("#signin").hidden = true;
  $("#signin-error").textContent = "";
  $("#tabs").hidden = false;
  $("#signout").hidden = false;
  document.body.dataset.scope = scope;
  for (const a of document.querySelectorAll("#tabs a[data-admin]")) a.hidden = scope !== "admin";
  if (scope === "admin") {
    stream = new LiveStream("/api/events", {
      onEvent, onOpen: reload, onStatus: setConn,
      onAuthError: () => signedOut("The token is no longer accepted: sign in again."),
    }).start();
  } else {
    setConn("playground");
  }
  showView();
}

function main() {
  slots.mount();
  models.mount();
  system.mount();
  playground.mount(() => scope);
  $("#signin-form").addEventListener("submit", (e) => {
    e.preventDefault();
    signIn($("#token").value.trim());
  });
  $("#signout").addEventListener("click", () => signedOut("Signed out."));
  window.addEventListener("hashchange", showView);
  const saved = session.token;
  if (saved !== null) {
    signIn(saved);
    return;
  }
  $("#token").focus();
  // With [api] auth = "off" there is nothing to type: go straight in.
  fetch("/api/status", { cache: "no-store" }).then((r) => { if (r.ok && scope === null) signIn(""); }, () => {});
}

main();
