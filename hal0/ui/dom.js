// Small DOM helpers: h() builds elements, the formatters turn numbers into words.

/** h("button", {class: "x", onclick: f}, "text", child...) */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (k in el && typeof v !== "string") el[k] = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : String(c));
  }
  return el;
}

export const $ = (sel, root = document) => root.querySelector(sel);

export function fmtBytes(n) {
  if (n === null || n === undefined) return "—";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(i && n < 10 ? 1 : 0)} ${units[i]}`;
}

export function fmtDuration(s) {
  if (s === null || s === undefined || !isFinite(s)) return "—";
  s = Math.max(0, Math.floor(s));
  const d = Math.floor(s / 86400), hr = Math.floor((s % 86400) / 3600), m = Math.floor((s % 3600) / 60);
  if (d) return `${d}d ${hr}h`;
  if (hr) return `${hr}h ${m}m`;
  if (m) return `${m}m ${s % 60}s`;
  return `${s}s`;
}

/** A field list: [["Model", "x"], ...] -> <dl> */
export function fields(pairs) {
  return h("dl", { class: "fields" }, pairs.filter(Boolean).map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
}

/** Run an async action from a button: disables it meanwhile, reports errors to ``out``. */
export async function act(button, out, fn) {
  button.disabled = true;
  if (out) { out.textContent = ""; out.classList.remove("err"); }
  try {
    return await fn();
  } catch (e) {
    if (out) { out.textContent = e.code ? `${e.message} (${e.code})` : String(e.message || e); out.classList.add("err"); }
    return undefined;
  } finally {
    button.disabled = false;
  }
}

/** Text that may be long (a backend's last lines): its start, the rest behind a disclosure. */
export function longText(text, keep = 140) {
  if (!text || text.length <= keep) return text || "";
  return h("details", { class: "long" }, h("summary", {}, `${text.slice(0, keep)}…`), h("div", {}, text));
}
