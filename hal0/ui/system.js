// Capability cards, the log follower and the hardware summary.
import { get, post, readSSE, request } from "./api.js";
import { $, act, fields, fmtBytes, h } from "./dom.js";
import { store } from "./store.js";

// --- capabilities ---------------------------------------------------------------------------

const CARD_TITLES = { embed: "Embeddings and rerank", voice: "Voice", img: "Images", npu: "NPU" };

let capsKey = "";
const capErrors = new Map(); // "card/child" -> why the last change failed

function renderCaps() {
  const list = $("#cap-list");
  // Redraw only when something shown changed (not on every request's serving flip), and keep
  // the keyboard's place.
  const key = JSON.stringify([store.caps, Object.values(store.caps || {}).flatMap((kids) => Object.values(kids))
    .map((c) => store.slots.get(c.slot)).map((s) => s && [s.state, s.enabled, s.last_error, s.message])]);
  if (key === capsKey) return;
  capsKey = key;
  const focused = document.activeElement && document.activeElement.id;
  list.replaceChildren(...Object.entries(store.caps || {}).map(([card, children]) => {
    const hid = `cap-${card}-h`;
    const rows = Object.entries(children).map(([child, c]) => {
      const live = store.slots.get(c.slot);
      const state = live ? live.state : c.state;
      const enabled = live ? live.enabled : c.enabled;
      const ck = `${card}/${child}`;
      const out = h("p", { class: "out err", role: "alert" }, capErrors.get(ck) || "");
      const seeded = !enabled && store.tier && store.tier.disabled[c.slot];
      const why = (live && (live.last_error || (state === "error" && live.message))) || seeded
        || (!c.exists && `enabling it sets up the ${c.slot} slot`);
      const box = h("input", { type: "checkbox", checked: enabled, id: `cap-${card}-${child}`,
        onchange: async (e) => {
          const want = e.currentTarget.checked;
          const scratch = h("p");
          capErrors.delete(ck);
          const done = await act(e.currentTarget, scratch,
            () => post(`/api/capabilities/${card}/${child}`, { enabled: want }));
          if (done) store.caps[card][child] = done;
          else capErrors.set(ck, `Cannot ${want ? "enable" : "disable"} ${child}: ${scratch.textContent}`);
          capsKey = ""; // the list may have been redrawn meanwhile: draw it again with the outcome
          renderCaps();
        } });
      return h("li", { class: "cap" },
        h("label", { class: "check" }, box, ` ${child}`),
        h("span", { class: "state", dataset: { state } }, state),
        c.exists && h("span", { class: "muted" }, `${c.model || "no model"} · ${c.provider || "?"} on ${c.backend || "?"}`),
        why ? h("p", { class: "muted" }, c.exists ? `Reason: ${why}` : `Not set up yet: ${why}.`) : null, out);
    });
    return h("article", { class: "card", "aria-labelledby": hid },
      h("h3", { id: hid }, CARD_TITLES[card] || card), h("ul", { class: "plain" }, rows));
  }));
  if (focused && document.getElementById(focused)) document.getElementById(focused).focus();
}

// --- logs -----------------------------------------------------------------------------------

const MAX_LINES = 2000;
let follow = null; // {name, ctrl}
let paused = false;
let held = []; // lines that arrived while paused
let visible = false;

function addLines(lines) {
  const list = $("#log-lines");
  const atEnd = list.scrollTop + list.clientHeight >= list.scrollHeight - 4;
  list.append(...lines.map((l) => h("li", {}, l)));
  while (list.childElementCount > MAX_LINES) list.firstElementChild.remove();
  if (atEnd) list.scrollTop = list.scrollHeight;
}

function stopFollowing() {
  if (follow) follow.ctrl.abort();
  follow = null;
}

async function startFollowing(name) {
  stopFollowing();
  if (!name) return;
  const me = { name, ctrl: new AbortController() };
  follow = me;
  $("#log-lines").replaceChildren();
  held = [];
  let delay = 500;
  while (follow === me) {
    try {
      const resp = await request("GET", `/api/slots/${encodeURIComponent(name)}/logs?follow=1&lines=200`, undefined,
        { signal: me.ctrl.signal, headers: { Accept: "text/event-stream" } });
      $("#log-state").textContent = paused ? "Paused" : "Following";
      delay = 500;
      $("#log-lines").replaceChildren(); // the stream starts with the tail again
      await readSSE(resp, (type, data) => {
        if (type !== "log") return;
        const line = JSON.parse(data).line;
        if (paused) held.push(line); else addLines([line]);
      });
    } catch (e) {
      if (follow !== me) return;
      if (e.status === 404) { $("#log-state").textContent = e.message; return; }
    }
    if (follow !== me) return;
    $("#log-state").textContent = "Reconnecting…";
    await new Promise((r) => setTimeout(r, delay));
    delay = Math.min(delay * 2, 10000);
  }
}

function renderLogSlots() {
  const sel = $("#log-slot");
  const keep = sel.value;
  const names = [...store.slots.keys()];
  if ([...sel.options].map((o) => o.value).join() !== names.join()) {
    sel.replaceChildren(...names.map((n) => h("option", { value: n }, n)));
    sel.value = names.includes(keep) ? keep : names[0] || "";
  }
  if (visible && (!follow || follow.name !== sel.value)) startFollowing(sel.value);
}

/** The log stream is open only while the Logs view shows. */
export function logsVisible(show) {
  visible = show;
  if (!show) { stopFollowing(); $("#log-state").textContent = ""; return; }
  renderLogSlots();
}

// --- hardware -------------------------------------------------------------------------------

export async function loadHardware() {
  const body = $("#hw-body");
  try {
    const [hw, tier] = await Promise.all([get("/api/hardware"), get("/api/hardware/tier")]);
    body.replaceChildren(renderHardware(hw, tier));
  } catch (e) {
    body.replaceChildren(h("p", { class: "err" }, `Could not read the hardware: ${e.message}`));
  }
}

function renderHardware(hw, t) {
  const gpus = (hw.gpus || []).map((g) => `${g.vendor || "?"} ${g.name || g.pci || ""}`.trim() +
    (g.vram_bytes ? `, ${fmtBytes(g.vram_bytes)} VRAM` : "") + (g.gtt_bytes ? `, ${fmtBytes(g.gtt_bytes)} GTT` : "") +
    (g.pci === hw.primary_gpu ? " (primary)" : ""));
  const tier = t.tier;
  return h("div", { class: "cards" },
    h("article", { class: "card", "aria-labelledby": "hw-box-h" }, h("h3", { id: "hw-box-h" }, "This box"), fields([
      ["CPU", `${hw.cpu?.model || "?"} (${hw.cpu?.cores ?? "?"} cores, ${hw.cpu?.threads ?? "?"} threads)`],
      ["Memory", fmtBytes(hw.memory?.total_bytes) + (hw.memory?.cgroup_limit_bytes ? ` (limit ${fmtBytes(hw.memory.cgroup_limit_bytes)})` : "")],
      ["GPUs", gpus.length ? gpus.join("; ") : "none"],
      ["Vulkan", hw.vulkan?.gpu ? "GPU driver" : (hw.vulkan?.icds || []).length ? "CPU only (lavapipe)" : "no"],
      ["ROCm", hw.rocm?.kfd ? "/dev/kfd present" : "no"],
      ["NVIDIA", hw.nvidia?.devices ? `driver ${hw.nvidia.driver_version || "?"}` : "no"],
      ["NPU", hw.npu?.xdna ? "AMD XDNA" : "no"],
      ["Free disk", fmtBytes(hw.disk?.free_bytes)],
      ["Kernel", `${hw.kernel || "?"} (${hw.arch || "?"})`],
    ])),
    h("article", { class: "card", "aria-labelledby": "hw-tier-h" }, h("h3", { id: "hw-tier-h" }, "Tier"), tier ? fields([
      ["Tier", tier.name],
      ["Backend", tier.backend],
      ["Memory for models", fmtBytes(t.memory_bytes)],
      ...Object.entries(tier.models).map(([slot, m]) => [`${slot} model`, m]),
      ...Object.entries(tier.disabled).map(([slot, why]) => [`${slot} disabled`, why]),
    ]) : h("p", {}, "The probe has not run yet.")));
}

export function mount() {
  store.on("slot", renderCaps);
  store.on("slots", () => { renderCaps(); renderLogSlots(); });
  store.on("slot", renderLogSlots); // a new slot joins the list; otherwise nothing is redrawn
  $("#log-slot").addEventListener("change", () => startFollowing($("#log-slot").value));
  $("#log-pause").addEventListener("click", (e) => {
    paused = !paused;
    e.currentTarget.setAttribute("aria-pressed", String(paused));
    e.currentTarget.textContent = paused ? "Resume" : "Pause";
    $("#log-state").textContent = paused ? `Paused` : "Following";
    if (!paused && held.length) { addLines(held); held = []; }
  });
  $("#hw-probe").addEventListener("click", (e) => act(e.currentTarget, $("#hw-out"), async () => {
    await post("/api/hardware/probe");
    await loadHardware();
  }));
}
