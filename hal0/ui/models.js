// The models view: the registry, pulls with progress (from events), the catalogue.
import { del, get, post } from "./api.js";
import { $, act, fmtBytes, fmtDuration, h } from "./dom.js";
import { store } from "./store.js";

async function refreshRegistry() {
  store.setModels((await get("/api/models")).models);
  store.changed("registry");
}

let registryKey = "";

function renderRegistry() {
  const body = $("#model-table tbody");
  const key = JSON.stringify(store.models.map((m) => [m.id, m.size, m.verified, m.source, store.usedBy(m.id)]));
  if (key === registryKey) return; // a slot event that changes nothing here (a request's serving flip)
  registryKey = key;
  body.replaceChildren(...store.models.map((m) => {
    const out = h("span", { class: "out", role: "alert" });
    const rm = h("button", { type: "button", class: "danger", "aria-label": `Remove ${m.id}`, onclick: async (e) => {
      const b = e.currentTarget;
      if (b.dataset.confirm !== "1") { b.dataset.confirm = "1"; b.textContent = "Confirm"; return; }
      if (await act(b, out, () => del(`/api/models/${encodeURIComponent(m.id)}`))) await refreshRegistry();
    } }, "Remove");
    const used = store.usedBy(m.id);
    return h("tr", { dataset: { model: m.id } },
      h("th", { scope: "row" }, m.id),
      h("td", { "data-label": "Size" }, fmtBytes(m.size)),
      h("td", { "data-label": "Verified" }, m.verified ? "yes" : "no"),
      h("td", { class: "src", "data-label": "Source" }, m.source || m.path),
      h("td", { "data-label": "Used by" }, used.length ? used.join(", ") : "—"),
      h("td", {}, rm, out));
  }));
  if (!store.models.length) body.append(h("tr", {}, h("td", { colspan: 6 }, "No models registered yet.")));
}

function renderPulls() {
  const list = $("#pull-list");
  const jobs = [...store.pulls.values()].sort((a, b) => b.id.localeCompare(a.id, undefined, { numeric: true }));
  list.replaceChildren(...jobs.map((j) => {
    const pct = j.total ? Math.round((100 * j.done) / j.total) : null;
    const bar = h("progress", { max: j.total || 1, value: j.total ? j.done : undefined, "aria-label": `${j.model} progress` });
    const cancel = j.state === "running" && h("button", { type: "button", onclick: (e) =>
      act(e.currentTarget, $("#pull-out"), () => del(`/api/models/pulls/${j.id}`)) }, "Cancel");
    const what = j.state === "running"
      ? `${fmtBytes(j.done)}${j.total ? ` of ${fmtBytes(j.total)} (${pct}%)` : ""}, ${fmtBytes(j.rate)}/s, ${fmtDuration(j.eta_s)} left`
      : j.state === "failed" ? `failed: ${j.error?.message || "?"}` : j.state;
    return h("li", { dataset: { pull: j.id, state: j.state } }, h("strong", {}, j.model), " ", bar, " ", what, " ", cancel);
  }));
}

async function renderCatalog() {
  const body = $("#cat-table tbody");
  let data;
  try {
    data = await get(`/api/catalog${$("#cat-fits").checked ? "?fits=1" : ""}`);
  } catch (e) {
    body.replaceChildren(h("tr", {}, h("td", { colspan: 6 }, `The catalogue is not available: ${e.message}`)));
    return;
  }
  const have = new Set(store.models.map((m) => m.id));
  body.replaceChildren(...data.models.map((m) => {
    const pull = h("button", { type: "button", "aria-label": `Pull ${m.id}`, disabled: m.on_disk || have.has(m.id),
      onclick: (e) => act(e.currentTarget, $("#pull-out"), () => startPull(m.id)) }, m.on_disk || have.has(m.id) ? "On disk" : "Pull");
    return h("tr", {}, h("th", { scope: "row" }, m.id), h("td", { "data-label": "Kind" }, m.kind),
      h("td", { "data-label": "Size" }, fmtBytes(m.size)),
      h("td", { "data-label": "Memory" }, `${m.memory_gb} GB${m.fits === false ? " (too large)" : ""}`),
      h("td", {}, m.description), h("td", {}, pull));
  }));
}

async function startPull(ref) {
  const job = await post("/api/models/pull", { ref });
  store.pullEvent(job);
  return job;
}

export function mount() {
  store.on("registry", () => { renderRegistry(); renderCatalog(); });
  store.on("slot", renderRegistry);
  store.on("slots", renderRegistry);
  store.on("pulls", renderPulls);
  store.on("pulled", (job) => job && refreshRegistry().catch(() => {})); // a finished pull: a new entry
  $("#cat-fits").addEventListener("change", renderCatalog);
  $("#register-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const body = { id: $("#reg-id").value.trim(), path: $("#reg-path").value.trim(),
      capabilities: [$("#reg-cap").value], allow_outside_roots: $("#reg-outside").checked };
    const made = await act(e.submitter || $("#register-form button"), $("#reg-out"), () => post("/api/models", body));
    if (made) {
      $("#reg-out").textContent = `Registered ${made.id} (${fmtBytes(made.size)}).`;
      $("#reg-id").value = "";
      $("#reg-path").value = "";
      await refreshRegistry();
    }
  });
  $("#pull-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const ref = $("#pull-ref").value.trim();
    if (!ref) return;
    if (await act(e.submitter || $("#pull-form button"), $("#pull-out"), () => startPull(ref))) $("#pull-ref").value = "";
  });
}
