// What the page knows: filled by full reads, kept current by /api/events.

const listeners = new Map(); // topic -> [fn]

export const store = {
  slots: new Map(), // name -> snapshot (as /api/slots shows it)
  trails: new Map(), // name -> the states seen since the last action began
  models: [],
  pulls: new Map(), // id -> job
  caps: {},
  tier: null, // the tier table's row for this box (its reasons for disabled slots)

  on(topic, fn) {
    if (!listeners.has(topic)) listeners.set(topic, []);
    listeners.get(topic).push(fn);
  },

  changed(topic, arg) {
    const topics = topic === "all" ? [...listeners.keys()] : [topic];
    for (const t of topics) for (const fn of listeners.get(t) || []) fn(arg);
  },

  reset() {
    this.slots.clear();
    this.trails.clear();
    this.models = [];
    this.pulls.clear();
    this.caps = {};
    this.changed("all");
  },

  setSlots(list) {
    this.slots = new Map(list.map((s) => [s.name, s]));
  },

  setModels(list) { this.models = list; },

  setPulls(list) { this.pulls = new Map(list.map((j) => [j.id, j])); },

  /** slot.state / slot.config: a whole snapshot (plus ``prev`` for a move). */
  slotEvent(ev) {
    const old = this.slots.get(ev.slot) || {};
    const { slot, prev, ts, ...snap } = ev;
    this.slots.set(slot, { ...old, ...snap });
    const trail = this.trails.get(slot);
    if (trail && prev !== undefined && trail[trail.length - 1] !== snap.state) trail.push(snap.state);
    this.changed("slot", slot);
  },

  slotDeleted(name) {
    this.slots.delete(name);
    this.trails.delete(name);
    this.changed("slots");
  },

  /** Start recording the states a slot passes through (a swap, a load...). */
  beginTrail(name) {
    const s = this.slots.get(name);
    this.trails.set(name, s ? [s.state] : []);
  },

  pullEvent(job) {
    const was = this.pulls.get(job.id);
    this.pulls.set(job.id, job);
    this.changed("pulls");
    if (job.state === "done" && (!was || was.state !== "done")) this.changed("pulled", job);
  },

  /** Slots whose live or configured model is ``id``. */
  usedBy(id) {
    return [...this.slots.values()].filter((s) => [s.model, s.model_ref, s.model_configured].includes(id))
      .map((s) => s.name);
  },
};
