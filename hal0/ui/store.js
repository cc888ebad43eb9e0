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
    const t = this.trails.get(slot);
    if (t && t.open && prev !== undefined && t.states[t.states.length - 1] !== snap.state) t.states.push(snap.state);
    if (t && t.open && t.until === snap.state) t.open = false;
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
    this.trails.set(name, { states: s ? [s.state] : [], open: true, until: null });
  },

  /** The action answered: stop recording once its final state has come in as an event too
   *  (the answer can overtake the event stream), or after a few seconds without it. */
  endTrail(name) {
    const t = this.trails.get(name);
    const final = this.slots.get(name)?.state;
    if (!t || !t.open) return;
    if (t.states.length > 1 && t.states[t.states.length - 1] === final) { t.open = false; return; }
    t.until = final;
    setTimeout(() => {
      if (!t.open) return;
      t.open = false;
      if (final && t.states[t.states.length - 1] !== final) t.states.push(final);
      this.changed("slot", name);
    }, 3000);
  },

  /** The states recorded since the last action began ([] if none). */
  trail(name) {
    return this.trails.get(name)?.states || [];
  },

  pullEvent(job) {
    const was = this.pulls.get(job.id);
    if (was && isOlder(job, was)) return; // the POST's answer can arrive after the job's first events
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

/** Whether ``job`` is an earlier view of the pull ``than`` shows: a job only moves forward (its
 * bytes grow, its size becomes known, it ends), whatever order its answers and events arrive in. */
function isOlder(job, than) {
  const ended = (j) => (j.state === "running" ? 0 : 1);
  const key = (j) => [ended(j), j.done, j.total === null ? 0 : 1];
  const [a, b] = [key(job), key(than)];
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return a[i] < b[i];
  return false;
}
