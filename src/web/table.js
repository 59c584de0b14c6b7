// shoal's web page: how the torrent table sorts and filters. Pure
// functions over the API's torrent objects (docs/api.md), used by app.js;
// nothing here touches the page.
"use strict";

window.shoalTable = (function () {
  // Share ratio as qBittorrent counts it: uploaded over what was
  // downloaded, or over what is here when that is more (data that was on
  // disk already); Infinity for uploads of nothing downloaded.
  function ratio(t) {
    const up = t.uploaded || 0;
    const base = Math.max(t.downloaded || 0, t.have_bytes || 0);
    if (!base) return up ? Infinity : 0;
    return up / base;
  }

  function ratioText(t) {
    const r = ratio(t);
    if (r === Infinity) return "∞";
    return r.toFixed(2);
  }

  // Ordered from doing nothing to doing the most, so a sort by state
  // groups like with like in a sensible order.
  const STATE_RANK = { error: 0, paused: 1, checking: 2, metadata: 3, downloading: 4, seeding: 5, done: 6 };

  // The value a column sorts by.
  const KEYS = {
    name: (t) => String(t.name || t.info_hash).toLowerCase(),
    size: (t) => t.total || 0,
    progress: (t) => t.progress || 0,
    state: (t) => STATE_RANK[t.state] ?? 7,
    down: (t) => t.down_rate || 0,
    up: (t) => t.up_rate || 0,
    ratio: ratio,
    uploaded: (t) => t.uploaded || 0,
    peers: (t) => t.peers || 0,
    // No ETA sorts after every known one.
    eta: (t) => (t.eta == null || !isFinite(t.eta) ? Infinity : t.eta),
    added: (t) => t.added || 0,
  };

  // The order the service lists them in (oldest added first): the
  // default, and what settles ties.
  function byAdded(a, b) {
    return (a.added || 0) - (b.added || 0) || String(a.name).localeCompare(String(b.name)) || (a.info_hash < b.info_hash ? -1 : 1);
  }

  // A comparator for column `key`, ascending or not; ties keep the added
  // order whichever way the column goes, so rows never swap at random.
  function comparator(key, ascending) {
    const get = KEYS[key];
    if (!get) return byAdded;
    const sign = ascending ? 1 : -1;
    return (a, b) => {
      const x = get(a);
      const y = get(b);
      let c = 0;
      if (typeof x === "string" || typeof y === "string") c = String(x).localeCompare(String(y));
      else if (x !== y) c = x < y ? -1 : 1;
      return sign * c || byAdded(a, b);
    };
  }

  // The state filters, as qBittorrent's and Transmission's side bars
  // name them.
  const FILTERS = [
    ["all", "All", () => true],
    ["downloading", "Downloading", (t) => t.state === "downloading" || t.state === "metadata"],
    ["seeding", "Seeding", (t) => t.state === "seeding"],
    ["completed", "Completed", (t) => t.total > 0 && t.progress >= 1],
    ["paused", "Paused", (t) => t.state === "paused"],
    ["active", "Active", (t) => (t.down_rate || 0) + (t.up_rate || 0) > 0],
    ["checking", "Checking", (t) => t.state === "checking"],
    ["error", "Error", (t) => t.state === "error"],
  ];

  function stateMatches(filter, t) {
    const f = FILTERS.find((x) => x[0] === filter);
    return !f || f[2](t);
  }

  // "" for every category, NONE for torrents without one.
  const NONE = "\u0000none";

  function categoryMatches(filter, t) {
    if (!filter) return true;
    if (filter === NONE) return !t.category;
    return t.category === filter;
  }

  return { ratio, ratioText, comparator, byAdded, FILTERS, stateMatches, categoryMatches, NONE, KEYS };
})();
