// The slots view: one card per slot, updated in place from events.
import { post, del } from "./api.js";
import { $, act, fields, fmtBytes, fmtDuration, h, longText } from "./dom.js";
import { store } from "./store.js";

const LIVE = new Set(["ready", "serving", "idle"]);
const cards = new Map(); // name -> {el, update}

function memoryText(m) {
  if (m === undefined || m === null) return null;
  if (typeof m === "number") return fmtBytes(m);
  if (typeof m !== "object") return String(m);
  return Object.entries(m).filter(([, v]) => v !== null && typeof v !== "object")
    .map(([k, v]) => `${k.replace(/_bytes$/, "").replace(/_/g, " ")} ${/bytes/.test(k) ? fmtBytes(v) : v}`)
    .join(", ");
}

function swapFailure(e) {
  const d = e.details || {};
  if (e.code === "slot.swap_failed" && d.rolled_back) {
    return [`Swap failed; rolled back to ${d.running}. Reason: `, longText(d.reason)];
  }
  if (e.code === "slot.swap_failed") return ["Swap failed and was not rolled back. Reason: ", longText(d.reason || e.message)];
  return [`${e.message} (${e.code})`];
}

function makeCard(name) {
  const hid = `slot-${name}-h`;
  const state = h("span", { class: "state", dataset: { role: "state" } });
  const badge = h("span", { class: "badge" });
  const info = h("div");
  const trail = h("p", { class: "trail", "aria-label": `${name} progress` });
  const out = h("p", { class: "out", role: "alert" });
  const btn = (label, action) => h("button", { type: "button", onclick: (e) => run(e.currentTarget, action) }, label);
  const load = btn("Load", "load"), unload = btn("Unload", "unload"), restart = btn("Restart", "restart");
  const toggle = h("button", { type: "button", onclick: (e) => run(e.currentTarget, snap().enabled ? "disable" : "enable") });
  const remove = h("button", { type: "button", class: "danger", onclick: (e) => removeSlot(e.currentTarget) }, "Delete");
  const picker = h("select", { id: `swap-${name}` });
  const swapBtn = h("button", { type: "submit" }, "Swap");
  const swap = h("form", { class: "row swap", onsubmit: (e) => { e.preventDefault(); swapTo(picker.value); } },
    h("label", { for: `swap-${name}` }, "Swap to"), picker, swapBtn);
  const el = h("article", { class: "card slot", "aria-labelledby": hid, dataset: { slot: name } },
    h("header", {}, h("h3", { id: hid }, name), state, badge),
    info, trail, h("div", { class: "actions" }, load, unload, restart, toggle, remove), swap, out);

  const snap = () => store.slots.get(name) || {};

  async function run(button, action) {
    store.beginTrail(name);
    update();
    const done = await act(button, out, () => post(`/api/slots/${name}/${action}`));
    if (done) store.slotEvent({ slot: name, ...done });
    store.endTrail(name);
    update();
  }

  async function swapTo(model) {
    if (!model) return;
    store.beginTrail(name);
    update();
    out.textContent = "";
    out.classList.remove("err");
    swapBtn.disabled = true;
    try {
      const done = await post(`/api/slots/${name}/swap`, { model });
      store.slotEvent({ slot: name, ...done });
      out.textContent = `Now serving ${done.model}.`;
    } catch (e) {
      out.replaceChildren(...swapFailure(e));
      out.classList.add("err");
    } finally {
      store.endTrail(name);
      swapBtn.disabled = false;
      picker.value = "";
      update(); // the picker shows what runs now
    }
  }

  async function removeSlot(button) {
    if (button.dataset.confirm !== "1") {
      button.dataset.confirm = "1";
      button.textContent = "Confirm delete";
      return;
    }
    await act(button, out, () => del(`/api/slots/${name}`));
  }

  function update() {
    const s = snap();
    state.textContent = s.state || "unknown";
    state.dataset.state = s.state || "";
    badge.textContent = s.builtin ? "built-in" : "custom";
    const up = LIVE.has(s.state) && s.loaded_at ? fmtDuration(Date.now() / 1000 - s.loaded_at) : "—";
    const next = s.model_configured && s.model_configured !== s.model_ref && s.model_configured !== s.model
      ? ` (next start: ${s.model_configured})` : "";
    const mem = memoryText(s.memory);
    info.replaceChildren(fields([
      ["Model", (s.model || "—") + next],
      ["Provider", `${s.provider || "?"} on ${s.backend || "?"}`],
      ["Port", s.port ?? "—"],
      mem !== null && ["Memory", mem],
      ["Uptime", up],
      ["Requests", `${s.inflight ?? 0} in flight, ${s.queued ?? 0} queued`],
      !s.enabled && ["Enabled", "no (disabled)"],
      s.message && ["Message", longText(s.message)],
      s.last_error && ["Last error", longText(s.last_error)],
      s.pull && ["Pulling", `${fmtBytes(s.pull.done)} of ${fmtBytes(s.pull.total)}`],
    ]));
    const t = store.trail(name);
    trail.textContent = t.length > 1 ? t.join(" → ") : "";
    toggle.textContent = s.enabled ? "Disable" : "Enable";
    load.disabled = !s.enabled || LIVE.has(s.state); // nothing to do: the slot serves, or may not start
    unload.disabled = s.state === "offline";
    restart.disabled = !s.enabled;
    remove.hidden = !!s.builtin;
    if (s.builtin) remove.remove();
    const current = picker.value || s.model_ref || s.model_configured || "";
    const ids = store.models.map((m) => m.id);
    const opts = [...new Set([...ids, ...(current ? [current] : [])])].sort();
    if (picker.options.length !== opts.length || [...picker.options].some((o, i) => o.value !== opts[i])) {
      picker.replaceChildren(...opts.map((id) => h("option", { value: id }, id)));
      picker.value = current;
    }
    if (!picker.value) picker.value = current;
  }
  return { el, update };
}

function renderAll() {
  const list = $("#slot-list");
  const names = [...store.slots.keys()];
  for (const [name, c] of cards) if (!store.slots.has(name)) { c.el.remove(); cards.delete(name); }
  names.sort((a, b) => (store.slots.get(b).builtin - store.slots.get(a).builtin));
  for (const name of names) {
    if (!cards.has(name)) cards.set(name, makeCard(name));
    const c = cards.get(name);
    c.update();
    list.append(c.el); // keeps the order: built-ins first
  }
  const sel = $("#create-model");
  const keep = sel.value;
  sel.replaceChildren(h("option", { value: "" }, "(none)"), ...store.models.map((m) => h("option", { value: m.id }, m.id)));
  sel.value = keep;
}

export function mount() {
  store.on("slot", (name) => {
    if (name && cards.has(name)) cards.get(name).update();
    else renderAll();
  });
  store.on("slots", renderAll);
  store.on("registry", renderAll);
  setInterval(() => { for (const c of cards.values()) c.update(); }, 5000); // uptimes only: no request
  $("#create-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const body = { name: $("#create-name").value.trim(), provider: $("#create-provider").value,
      backend: $("#create-backend").value };
    if ($("#create-model").value) body.model = $("#create-model").value;
    const made = await act(e.submitter || $("#create-form button"), $("#create-out"), () => post("/api/slots", body));
    if (made) {
      store.slotEvent({ slot: made.name, ...made });
      $("#create-out").textContent = `Created ${made.name} on port ${made.port}.`;
      $("#create-name").value = "";
    }
  });
}
