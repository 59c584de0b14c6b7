// shoal's web page: a table of torrents fed by /api/events, a detail pane
// for one torrent, and ways to add more. It uses nothing but docs/api.md.
//
// Everything a torrent or a peer says about itself (names, paths, client
// ids, error lines) is hostile input: it only ever reaches the page through
// textContent or setAttribute, never through HTML parsing.
"use strict";

(function () {
  const T = window.shoalTable;

  // ---- formatting ---------------------------------------------------------

  const UNITS = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];

  function bytes(n) {
    if (n == null || !isFinite(n)) return "–";
    let i = 0;
    let v = n;
    while (v >= 1024 && i < UNITS.length - 1) {
      v /= 1024;
      i++;
    }
    if (i === 0) return v + " B";
    return (v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2)) + " " + UNITS[i];
  }

  function rate(n) {
    if (!n) return "–";
    let i = 0;
    let v = n;
    while (v >= 1024 && i < UNITS.length - 1) {
      v /= 1024;
      i++;
    }
    return (i === 0 ? v.toFixed(0) : v >= 100 ? v.toFixed(0) : v.toFixed(1)) + " " + UNITS[i] + "/s";
  }

  // Time left or until something, as shoal writes it everywhere (the
  // terminal's bars, `shoal list`): 42s, 3m07s, 2h05m, 3d04h.
  function eta(s) {
    if (s == null || !isFinite(s) || s < 0) return "–";
    s = Math.floor(s);
    const two = (n) => String(n).padStart(2, "0");
    if (s < 60) return s + "s";
    if (s < 3600) return Math.floor(s / 60) + "m" + two(s % 60) + "s";
    if (s < 86400) return Math.floor(s / 3600) + "h" + two(Math.floor((s % 3600) / 60)) + "m";
    return Math.floor(s / 86400) + "d" + two(Math.floor((s % 86400) / 3600)) + "h";
  }

  // A moment as seen from now: "3m07s ago", "in 28m00s".
  function since(unix) {
    if (!unix) return "–";
    const d = Math.round(unix - Date.now() / 1000);
    return d > 0 ? "in " + eta(d) : eta(-d) + " ago";
  }

  function percent(p) {
    if (p == null || !isFinite(p)) return "–";
    const v = Math.max(0, Math.min(1, p)) * 100;
    // 99.96 % must not round up to a "100 %" that is not there yet.
    if (v >= 100) return "100 %";
    return (v >= 99.9 ? 99.9 : Math.floor(v * 10) / 10).toFixed(1) + " %";
  }

  function date(secs) {
    if (!secs) return "–";
    return new Date(secs * 1000).toLocaleString();
  }

  const STATE_LABELS = {
    metadata: "Fetching info",
    checking: "Checking",
    downloading: "Downloading",
    seeding: "Seeding",
    done: "Done",
    paused: "Paused",
    error: "Error",
  };

  function stateLabel(s) {
    return STATE_LABELS[s] || String(s || "unknown");
  }

  function capital(s) {
    return s ? s[0].toUpperCase() + s.slice(1) : s;
  }

  // What a torrent is doing, and why, as [label, reason]. A running
  // torrent with no peer says why not ("Waiting for peers", "tracker
  // 10.0.0.1:6969 unreachable, DHT off") rather than "Downloading".
  function stateWhy(t) {
    const status = typeof t.status === "string" ? t.status : "";
    if (t.state === "downloading" && !t.peers && status && status !== "downloading" && status !== "endgame") {
      const i = status.indexOf(": ");
      if (status.startsWith("waiting for peers")) return ["Waiting for peers", i > 0 ? status.slice(i + 2) : ""];
      return ["Connecting", status];
    }
    return [stateLabel(t.state), ""];
  }

  // Paused, or stopped by an error: its button resumes it.
  function isPaused(t) {
    return t.state === "paused" || t.state === "error";
  }

  // ---- DOM helpers ---------------------------------------------------------

  const $ = (id) => document.getElementById(id);

  // el("td", {class: "x"}, "text", child…): strings become text nodes.
  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    if (attrs) {
      for (const k of Object.keys(attrs)) {
        const v = attrs[k];
        if (v == null || v === false) continue;
        if (k === "class") e.className = v;
        else if (k === "text") e.textContent = v;
        else e.setAttribute(k, v === true ? "" : String(v));
      }
    }
    for (const c of children) {
      if (c == null) continue;
      e.append(typeof c === "string" ? document.createTextNode(c) : c);
    }
    return e;
  }

  function setText(e, s) {
    s = String(s);
    if (e.textContent !== s) e.textContent = s;
  }

  // ---- errors -------------------------------------------------------------

  // An error line; `kind` ("add") lets a later success take it away.
  function showError(msg, kind) {
    const list = $("errors");
    // The same message twice in a row is shown once.
    for (const li of list.children) {
      if (li.dataset.msg === msg) {
        li.classList.remove("flash");
        void li.offsetWidth;
        li.classList.add("flash");
        return;
      }
    }
    const close = el("button", { type: "button", class: "dismiss", "aria-label": "Dismiss" }, "×");
    const li = el("li", { class: "error" }, el("span", { class: "msg" }, msg), close);
    li.dataset.msg = msg;
    if (kind) li.dataset.kind = kind;
    close.addEventListener("click", () => li.remove());
    list.append(li);
    while (list.children.length > 4) list.firstElementChild.remove();
  }

  // A success makes the errors of earlier tries of the same kind moot.
  function clearErrors(kind) {
    for (const li of Array.from($("errors").children)) {
      if (li.dataset.kind === kind) li.remove();
    }
  }

  // ---- the API ------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  // fetch + JSON, with the API's {"error"} turned into an ApiError, and a
  // 401 turned into the login form.
  async function api(method, path, body, contentType) {
    const init = { method, headers: {}, credentials: "same-origin" };
    if (body !== undefined) {
      if (contentType) {
        init.body = body;
        init.headers["Content-Type"] = contentType;
      } else {
        init.body = JSON.stringify(body);
        init.headers["Content-Type"] = "application/json";
      }
    }
    let res;
    try {
      res = await fetch(path, init);
    } catch (e) {
      throw new ApiError(0, "shoal is not answering (" + method + " " + path + ")");
    }
    if (res.status === 401) {
      needLogin();
      throw new ApiError(401, "shoal asks for its access token");
    }
    const text = await res.text();
    let data = null;
    if (text) {
      try {
        data = JSON.parse(text);
      } catch (e) {
        data = null;
      }
    }
    if (!res.ok) {
      const why = data && typeof data.error === "string" ? data.error : res.status + " " + res.statusText;
      throw new ApiError(res.status, why);
    }
    return data;
  }

  const enc = encodeURIComponent;

  // ---- state --------------------------------------------------------------

  let torrents = new Map(); // info_hash → torrent as listed
  let selected = null; // info_hash of the detail pane's torrent
  let loggedOut = false;

  // How the table is sorted and filtered, kept across visits.
  const saved = (k, d) => {
    try {
      return localStorage.getItem("shoal." + k) ?? d;
    } catch (e) {
      return d;
    }
  };
  const keep = (k, v) => {
    try {
      localStorage.setItem("shoal." + k, v);
    } catch (e) {
      /* private mode: not kept */
    }
  };
  let sortKey = saved("sort", "added");
  let sortAsc = saved("asc", "1") === "1";
  let stateFilter = saved("state", "all");
  let categoryFilter = saved("category", "");
  let categories = []; // names, from /api/categories and the torrents
  const checked = new Set(); // info_hashes ticked for the selection's actions
  let anchor = null; // the row last ticked, for shift-click ranges

  // ---- the torrent table --------------------------------------------------

  const rowsEl = $("rows");
  const rowOf = new Map(); // info_hash → {tr, cells…}

  function makeRow(h) {
    const name = el("button", { type: "button", class: "name-button", "aria-controls": "detail" });
    const sub = el("span", { class: "sub" });
    const fill = el("span", { class: "fill" });
    const bar = el("span", { class: "bar", role: "progressbar", "aria-valuemin": "0", "aria-valuemax": "100" }, fill);
    const prate = el("span", { class: "prate" });
    const pct = el("span");
    const state = el("span", { class: "state" });
    const why = el("span", { class: "why" });
    const toggle = el("button", { type: "button", class: "small toggle" });
    const copy = el("button", { type: "button", class: "small icon copy", title: "Copy magnet link" }, linkIcon());
    const tick = el("input", { type: "checkbox", class: "tick" });
    const tds = {
      sel: el("td", { class: "c-sel" }, tick),
      name: el("td", { class: "c-name" }, name, sub),
      size: el("td", { class: "c-size num" }),
      progress: el("td", { class: "c-progress" }, bar, el("span", { class: "pct" }, pct, prate)),
      state: el("td", { class: "c-state" }, state, why),
      down: el("td", { class: "c-down num" }),
      up: el("td", { class: "c-up num" }),
      ratio: el("td", { class: "c-ratio num" }),
      uploaded: el("td", { class: "c-uploaded num" }),
      peers: el("td", { class: "c-peers num" }),
      eta: el("td", { class: "c-eta num" }),
      act: el("td", { class: "c-act" }, el("span", { class: "acts" }, toggle, copy)),
    };
    const tr = el("tr", { "data-hash": h });
    for (const k of Object.keys(tds)) tr.append(tds[k]);
    name.addEventListener("click", (ev) => {
      ev.stopPropagation();
      select(h);
    });
    tr.addEventListener("click", (ev) => {
      if (ev.target.closest("button, input, select, a")) return;
      select(h);
    });
    toggle.addEventListener("click", (ev) => {
      ev.stopPropagation();
      const t = torrents.get(h);
      if (t) pauseOrResume(t);
    });
    copy.addEventListener("click", (ev) => {
      ev.stopPropagation();
      const t = torrents.get(h);
      if (t) window.shoalDialogs.copyMagnet(t);
    });
    tick.addEventListener("click", (ev) => {
      ev.stopPropagation();
      tickRow(h, tick.checked, ev.shiftKey);
    });
    const r = { tr, tds, name, sub, fill, bar, pct, prate, state, why, toggle, copy, tick };
    rowOf.set(h, r);
    return r;
  }

  function updateRow(r, t) {
    const name = t.name || t.info_hash;
    setText(r.name, name);
    r.name.setAttribute("title", name);
    r.name.setAttribute("aria-expanded", selected === t.info_hash ? "true" : "false");
    const [label, reason] = stateWhy(t);
    setText(r.sub, [t.total ? bytes(t.total) : null, label, reason].filter(Boolean).join(" · "));
    setText(r.tds.size, t.total ? bytes(t.total) : "–");
    // While checking, the bar shows how much of the data has been hashed
    // (check_progress, when the service gives it).
    const checking = t.state === "checking" && typeof t.check_progress === "number";
    const p = Math.max(0, Math.min(1, (checking ? t.check_progress : t.progress) || 0));
    r.fill.style.width = (p * 100).toFixed(2) + "%";
    r.bar.setAttribute("aria-valuenow", (p * 100).toFixed(1));
    r.bar.setAttribute("aria-label", (checking ? "Check of " : "Progress of ") + name);
    r.bar.dataset.state = t.state;
    setText(r.pct, checking ? "checked " + percent(t.check_progress) : percent(t.progress));
    setText(r.prate, t.down_rate ? " · ↓ " + rate(t.down_rate) : "");
    setText(r.state, label);
    setText(r.why, reason);
    r.why.hidden = !reason;
    r.state.className = "state s-" + String(t.state).replace(/[^a-z]/g, "") + (reason ? " s-waiting" : "");
    if (t.state === "error" && t.error) r.state.setAttribute("title", t.error);
    else r.state.removeAttribute("title");
    setText(r.tds.down, rate(t.down_rate));
    setText(r.tds.up, rate(t.up_rate));
    setText(r.tds.ratio, T.ratioText(t));
    setText(r.tds.uploaded, t.uploaded ? bytes(t.uploaded) : "–");
    r.copy.setAttribute("aria-label", "Copy the magnet link of " + name);
    r.tick.setAttribute("aria-label", "Select " + name);
    r.tick.checked = checked.has(t.info_hash);
    r.tr.classList.toggle("checked", checked.has(t.info_hash));
    setText(r.tds.peers, t.known_peers != null && t.known_peers > t.peers ? t.peers + " / " + t.known_peers : String(t.peers ?? "–"));
    setText(r.tds.eta, t.progress >= 1 ? "–" : eta(t.eta));
    setText(r.toggle, isPaused(t) ? "Resume" : "Pause");
    r.toggle.setAttribute("aria-label", (isPaused(t) ? "Resume " : "Pause ") + name);
    r.tr.classList.toggle("selected", selected === t.info_hash);
    r.tr.classList.toggle("paused", isPaused(t));
    r.tr.dataset.state = t.state;
  }

  // A chain link, drawn (no icon font, no image request).
  function linkIcon() {
    const ns = "http://www.w3.org/2000/svg";
    const svg = document.createElementNS(ns, "svg");
    svg.setAttribute("viewBox", "0 0 24 24");
    svg.setAttribute("width", "16");
    svg.setAttribute("height", "16");
    svg.setAttribute("aria-hidden", "true");
    for (const d of ["M10 13a5 5 0 0 0 7.5.5l3-3a5 5 0 0 0-7-7l-1.7 1.7", "M14 11a5 5 0 0 0-7.5-.5l-3 3a5 5 0 0 0 7 7l1.7-1.7"]) {
      const path = document.createElementNS(ns, "path");
      path.setAttribute("d", d);
      path.setAttribute("fill", "none");
      path.setAttribute("stroke", "currentColor");
      path.setAttribute("stroke-width", "2");
      path.setAttribute("stroke-linecap", "round");
      svg.append(path);
    }
    return svg;
  }

  function visible(t) {
    return T.stateMatches(stateFilter, t) && T.categoryMatches(categoryFilter, t);
  }

  // Rows exist only for what is on screen and a margin either side: with
  // a thousand torrents a list update touches a few dozen rows, not a
  // thousand, and scrolling draws the next ones. Two spacer rows stand in
  // for the rest at the measured height of a row, so the scrollbar is true.
  const OVERSCAN = 15;
  let order = []; // the rows the filters let through, sorted: info_hashes
  let rowHeight = 40; // px, the mean of the rows drawn last
  let drawn = [0, 0]; // the span of `order` in the DOM
  function spacer() {
    return el("tr", { class: "spacer", "aria-hidden": "true", hidden: "" }, el("td", { colspan: "12" }));
  }
  const padTop = spacer();
  const padBottom = spacer();
  rowsEl.append(padTop, padBottom);

  function renderList(list) {
    torrents = new Map(list.map((t) => [t.info_hash, t]));
    order = [];
    for (const t of list.slice().sort(T.comparator(sortKey, sortAsc))) {
      if (visible(t)) order.push(t.info_hash);
      // A row the filter hides leaves the selection.
      else if (checked.delete(t.info_hash) && anchor === t.info_hash) anchor = null;
    }
    for (const [h, r] of rowOf) {
      if (!torrents.has(h)) {
        r.tr.remove();
        rowOf.delete(h);
        checked.delete(h);
      }
    }
    drawWindow(true);
    const shown = order.length;
    $("empty").hidden = list.length > 0;
    $("no-match").hidden = !(list.length > 0 && shown === 0);
    $("torrents").classList.toggle("is-empty", shown === 0);
    updateFilters(list);
    updateSelection();
    let down = 0;
    let up = 0;
    for (const t of list) {
      down += t.down_rate || 0;
      up += t.up_rate || 0;
    }
    setText(
      $("totals"),
      list.length + (list.length === 1 ? " torrent" : " torrents") + " · ↓ " + (down ? rate(down) : "0 B/s") + " · ↑ " + (up ? rate(up) : "0 B/s")
    );
    if (selected) {
      const t = torrents.get(selected);
      if (t) updateDetailSummary(t);
      else closeDetail();
    }
  }

  // Puts the rows of `order` that are on screen (and OVERSCAN either side)
  // in the table, in order, updated; the others leave the DOM. `fresh`:
  // the data changed, so rows already in place are updated too.
  function drawWindow(fresh) {
    const above = -rowsEl.getBoundingClientRect().top;
    const first = Math.max(0, Math.min(order.length, Math.floor(above / rowHeight) - OVERSCAN));
    const last = Math.min(order.length, first + Math.ceil(window.innerHeight / rowHeight) + 2 * OVERSCAN);
    if (!fresh && first === drawn[0] && last === drawn[1]) return;
    drawn = [first, last];
    const keep = new Set(order.slice(first, last));
    for (const [h, r] of rowOf) if (!keep.has(h) && r.tr.parentNode) r.tr.remove();
    // Rows already in place are not moved (a moved row loses focus).
    let prev = padTop;
    for (let i = first; i < last; i++) {
      const r = rowOf.get(order[i]) || makeRow(order[i]);
      const t = torrents.get(order[i]);
      if (fresh || !r.tr.parentNode) updateRow(r, t);
      if (prev.nextSibling !== r.tr) rowsEl.insertBefore(r.tr, prev.nextSibling);
      prev = r.tr;
    }
    if (last > first) {
      let sum = 0;
      for (let i = first; i < last; i++) sum += rowOf.get(order[i]).tr.offsetHeight;
      rowHeight = Math.max(16, sum / (last - first));
    }
    padTop.hidden = first === 0;
    padTop.style.height = first * rowHeight + "px";
    padBottom.hidden = last === order.length;
    padBottom.style.height = (order.length - last) * rowHeight + "px";
  }

  let windowQueued = false;
  function queueWindow() {
    if (windowQueued) return;
    windowQueued = true;
    requestAnimationFrame(() => {
      windowQueued = false;
      drawWindow(false);
    });
  }
  window.addEventListener("scroll", queueWindow, { passive: true });
  window.addEventListener("resize", queueWindow);

  // ---- sorting, filters, the selection ----------------------------------------

  // Column headers sort: a click sorts by that column, a second click
  // turns the order round; aria-sort shows which (and CSS its arrow).
  function showSort() {
    for (const th of document.querySelectorAll("#torrents thead th[data-sort]")) {
      const on = th.dataset.sort === sortKey;
      th.setAttribute("aria-sort", on ? (sortAsc ? "ascending" : "descending") : "none");
    }
  }

  for (const th of document.querySelectorAll("#torrents thead th[data-sort]")) {
    const button = th.querySelector("button");
    button.addEventListener("click", () => {
      const key = th.dataset.sort;
      if (sortKey === key) sortAsc = !sortAsc;
      else {
        sortKey = key;
        // Numbers read best largest first; names and states A to Z.
        sortAsc = key === "name" || key === "state" || key === "eta";
      }
      keep("sort", sortKey);
      keep("asc", sortAsc ? "1" : "0");
      showSort();
      renderList(Array.from(torrents.values()));
    });
  }
  showSort();

  // The filter menus, with how many torrents each choice holds.
  function updateFilters(list) {
    const stateSel = $("filter-state");
    if (!stateSel.options.length) {
      for (const [key] of T.FILTERS) stateSel.append(el("option", { value: key }));
    }
    T.FILTERS.forEach(([key, label], i) => {
      const n = list.filter((t) => T.stateMatches(key, t)).length;
      setText(stateSel.options[i], label + " (" + n + ")");
    });
    if (stateSel.value !== stateFilter) stateSel.value = stateFilter;

    const names = new Set(categories);
    for (const t of list) if (t.category) names.add(t.category);
    if (categoryFilter && categoryFilter !== T.NONE) names.add(categoryFilter);
    const sorted = Array.from(names).sort((a, b) => a.localeCompare(b));
    const catSel = $("filter-category");
    const want = [["", "Any category", list.length], [T.NONE, "No category", list.filter((t) => !t.category).length]].concat(
      sorted.map((c) => [c, c, list.filter((t) => t.category === c).length])
    );
    while (catSel.options.length > want.length) catSel.lastElementChild.remove();
    want.forEach(([value, label, n], i) => {
      let o = catSel.options[i];
      if (!o) catSel.append((o = el("option")));
      // Set always: an option without one takes its text as its value.
      if (o.getAttribute("value") !== value) o.setAttribute("value", value);
      setText(o, label + " (" + n + ")");
    });
    if (catSel.value !== categoryFilter) catSel.value = categoryFilter;
  }

  $("filter-state").addEventListener("change", (ev) => {
    stateFilter = ev.target.value;
    keep("state", stateFilter);
    renderList(Array.from(torrents.values()));
  });
  $("filter-category").addEventListener("change", (ev) => {
    categoryFilter = ev.target.value;
    keep("category", categoryFilter);
    renderList(Array.from(torrents.values()));
  });

  // The rows shown, top to bottom.
  function shownHashes() {
    return order;
  }

  // Ticks or unticks a row; with shift, every row between it and the one
  // ticked before, as file managers do.
  function tickRow(h, on, range) {
    const shown = shownHashes();
    let span = [h];
    if (range && anchor && anchor !== h) {
      const a = shown.indexOf(anchor);
      const b = shown.indexOf(h);
      if (a >= 0 && b >= 0) span = shown.slice(Math.min(a, b), Math.max(a, b) + 1);
    }
    for (const x of span) {
      if (on) checked.add(x);
      else checked.delete(x);
    }
    anchor = h;
    for (const x of span) {
      const r = rowOf.get(x);
      if (r) {
        r.tick.checked = on;
        r.tr.classList.toggle("checked", on);
      }
    }
    updateSelection();
  }

  function updateSelection() {
    const shown = shownHashes();
    const n = shown.filter((h) => checked.has(h)).length;
    const all = $("select-all");
    all.checked = n > 0 && n === shown.length;
    all.indeterminate = n > 0 && n < shown.length;
    setText($("sel-count"), n ? n + " selected" : "None selected");
    for (const id of ["bulk-pause", "bulk-resume", "bulk-recheck", "bulk-remove"]) $(id).disabled = n === 0;
    $("bulk").classList.toggle("has-selection", n > 0);
  }

  $("select-all").addEventListener("change", (ev) => {
    const on = ev.target.checked;
    for (const h of shownHashes()) {
      if (on) checked.add(h);
      else checked.delete(h);
      const r = rowOf.get(h);
      if (r) {
        r.tick.checked = on;
        r.tr.classList.toggle("checked", on);
      }
    }
    anchor = null;
    updateSelection();
  });

  function selection() {
    return shownHashes().filter((h) => checked.has(h));
  }

  // One verb for every torrent given; failures are gathered in one line.
  async function forEach(hashes, verb) {
    const failed = [];
    await Promise.all(
      hashes.map(async (h) => {
        try {
          const updated = await api("POST", "/api/torrents/" + enc(h) + "/" + verb);
          if (updated && updated.info_hash && torrents.has(updated.info_hash)) torrents.set(updated.info_hash, updated);
        } catch (e) {
          const t = torrents.get(h);
          if (e.status !== 401) failed.push(((t && t.name) || h) + ": " + e.message);
        }
      })
    );
    renderList(Array.from(torrents.values()));
    if (failed.length) showError("Could not " + (verb === "recheck" ? "re-check" : verb) + " " + failed.join("; "));
  }

  for (const [id, verb] of [
    ["bulk-pause", "pause"],
    ["bulk-resume", "resume"],
    ["bulk-recheck", "recheck"],
  ]) {
    $(id).addEventListener("click", async () => {
      const button = $(id);
      button.disabled = true;
      try {
        await forEach(selection(), verb);
      } finally {
        updateSelection();
      }
    });
  }
  $("bulk-remove").addEventListener("click", () => {
    const list = selection();
    if (list.length) askRemove(list);
  });

  // ---- actions --------------------------------------------------------------

  async function pauseOrResume(t) {
    const verb = isPaused(t) ? "resume" : "pause";
    try {
      const updated = await api("POST", "/api/torrents/" + enc(t.info_hash) + "/" + verb);
      if (updated && updated.info_hash) {
        torrents.set(updated.info_hash, updated);
        renderList(Array.from(torrents.values()));
      }
    } catch (e) {
      if (e.status !== 401) showError("Could not " + verb + " " + (t.name || t.info_hash) + ": " + e.message);
    }
  }

  let removing = [];

  // The in-page confirmation for removing `hashes` (one or many).
  function askRemove(hashes) {
    removing = hashes.slice();
    const names = hashes.map((h) => {
      const t = torrents.get(h);
      return (t && t.name) || h;
    });
    setText($("remove-title"), hashes.length === 1 ? "Remove torrent?" : "Remove " + hashes.length + " torrents?");
    const more = names.length > 6 ? ["and " + (names.length - 5) + " more"] : [];
    $("remove-name").textContent = (more.length ? names.slice(0, 5) : names).concat(more).join("\n");
    setText($("remove-data-label"), hashes.length === 1 ? "Also delete its downloaded data" : "Also delete their downloaded data");
    $("remove-data").checked = false;
    const dlg = $("remove-dialog");
    dlg.returnValue = "";
    dlg.showModal();
    $("remove-cancel").focus();
  }

  $("remove-dialog").addEventListener("close", async () => {
    const dlg = $("remove-dialog");
    const hashes = removing;
    removing = [];
    if (dlg.returnValue !== "remove" || !hashes.length) return;
    const withData = $("remove-data").checked;
    const failed = [];
    await Promise.all(
      hashes.map(async (h) => {
        const t = torrents.get(h);
        try {
          await api("DELETE", "/api/torrents/" + enc(h) + (withData ? "?delete_data=true" : ""));
          torrents.delete(h);
          checked.delete(h);
          if (selected === h) closeDetail();
        } catch (e) {
          if (e.status !== 401) failed.push(((t && t.name) || h) + ": " + e.message);
        }
      })
    );
    renderList(Array.from(torrents.values()));
    if (failed.length) showError("Could not remove " + failed.join("; "));
  });

  // ---- adding -------------------------------------------------------------

  async function addTorrentFile(file) {
    if (file.size > 16 * 1024 * 1024) {
      showError(file.name + " is too big for a .torrent file (over 16 MiB)", "add");
      return;
    }
    try {
      const r = await api("POST", "/api/torrents", file, "application/x-bittorrent");
      clearErrors("add");
      if (r && r.info_hash) flash(r.info_hash);
    } catch (e) {
      if (e.status !== 401) showError("Could not add " + file.name + ": " + e.message, "add");
    }
  }

  async function addLink(text) {
    text = text.trim();
    if (!text) return false;
    let body;
    if (/^magnet:/i.test(text)) body = { magnet: text };
    else if (/^https?:\/\//i.test(text)) body = { url: text };
    else if (/^[0-9a-f]{40}$/i.test(text) || /^[a-z2-7]{32}$/i.test(text)) body = { magnet: "magnet:?xt=urn:btih:" + text };
    else if (/^[0-9a-f]{64}$/i.test(text)) body = { magnet: "magnet:?xt=urn:btmh:1220" + text };
    else {
      showError("That is not a magnet link, a .torrent URL or an info-hash", "add");
      return false;
    }
    try {
      const r = await api("POST", "/api/torrents", body);
      clearErrors("add");
      if (r && r.info_hash) flash(r.info_hash);
      return true;
    } catch (e) {
      if (e.status !== 401) showError("Could not add the link: " + e.message, "add");
      return false;
    }
  }

  // A just-added torrent's row is highlighted once it shows up.
  let toFlash = null;
  function flash(h) {
    toFlash = h;
    refresh();
  }

  $("add-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const input = $("magnet");
    const button = $("add-button");
    button.disabled = true;
    try {
      if (await addLink(input.value)) input.value = "";
    } finally {
      button.disabled = false;
    }
  });

  $("file-input").addEventListener("change", async (ev) => {
    const files = Array.from(ev.target.files || []);
    ev.target.value = "";
    for (const f of files) await addTorrentFile(f);
  });

  // Drag and drop anywhere on the page.
  let dragDepth = 0;
  const dropEl = $("drop");
  function dragHasFiles(ev) {
    const types = ev.dataTransfer ? Array.from(ev.dataTransfer.types) : [];
    return types.includes("Files") || types.includes("text/uri-list");
  }
  document.addEventListener("dragenter", (ev) => {
    if (!dragHasFiles(ev)) return;
    ev.preventDefault();
    dragDepth++;
    dropEl.hidden = false;
  });
  document.addEventListener("dragover", (ev) => {
    if (!dragHasFiles(ev)) return;
    ev.preventDefault();
    ev.dataTransfer.dropEffect = "copy";
  });
  document.addEventListener("dragleave", () => {
    dragDepth = Math.max(0, dragDepth - 1);
    if (dragDepth === 0) dropEl.hidden = true;
  });
  document.addEventListener("drop", async (ev) => {
    if (!ev.dataTransfer) return;
    ev.preventDefault();
    dragDepth = 0;
    dropEl.hidden = true;
    const files = Array.from(ev.dataTransfer.files || []);
    if (files.length) {
      for (const f of files) await addTorrentFile(f);
      return;
    }
    const link = (ev.dataTransfer.getData("text/uri-list") || ev.dataTransfer.getData("text/plain") || "").split(/\r?\n/).find((l) => l && !l.startsWith("#"));
    if (link) await addLink(link);
  });

  // ---- the detail pane ----------------------------------------------------

  let detailTimer = null;
  let detailGen = 0;
  const fileRows = new Map(); // index → {tr, …}

  function select(h) {
    if (selected === h) {
      closeDetail();
      return;
    }
    selected = h;
    detailGen++;
    fileRows.clear();
    $("files").replaceChildren();
    $("peers").replaceChildren();
    $("trackers").replaceChildren();
    setText($("trackers-count"), "");
    setText($("peers-count"), "");
    setText($("pieces-count"), "");
    lastPieces = null;
    drawPieces();
    const pane = $("detail");
    pane.hidden = false;
    document.body.classList.add("has-detail");
    const t = torrents.get(h);
    if (t) updateDetailSummary(t);
    for (const [k, r] of rowOf) {
      r.tr.classList.toggle("selected", k === h);
      r.name.setAttribute("aria-expanded", k === h ? "true" : "false");
    }
    loadDetail();
    clearInterval(detailTimer);
    detailTimer = setInterval(loadDetail, 2000);
    if (window.matchMedia("(max-width: 1099px)").matches) pane.scrollIntoView({ behavior: "smooth", block: "start" });
  }

  function closeDetail() {
    const was = selected;
    selected = null;
    detailGen++;
    clearInterval(detailTimer);
    detailTimer = null;
    $("detail").hidden = true;
    document.body.classList.remove("has-detail");
    const r = was && rowOf.get(was);
    if (r) {
      r.tr.classList.remove("selected");
      r.name.setAttribute("aria-expanded", "false");
      if ($("detail").contains(document.activeElement) || document.activeElement === document.body) r.name.focus();
    }
  }

  $("detail-close").addEventListener("click", closeDetail);
  document.addEventListener("keydown", (ev) => {
    if (ev.key === "Escape" && selected && !document.querySelector("dialog[open]")) closeDetail();
  });
  $("detail-toggle").addEventListener("click", () => {
    const t = torrents.get(selected);
    if (t) pauseOrResume(t);
  });
  $("detail-overwrite").addEventListener("click", async () => {
    const h = selected;
    const t = torrents.get(h);
    if (!h) return;
    const button = $("detail-overwrite");
    button.disabled = true;
    try {
      const updated = await api("POST", "/api/torrents/" + enc(h) + "/resume?overwrite=true");
      if (updated && updated.info_hash) {
        torrents.set(updated.info_hash, updated);
        renderList(Array.from(torrents.values()));
      }
    } catch (e) {
      if (e.status !== 401) showError("Could not overwrite for " + ((t && t.name) || h) + ": " + e.message);
    } finally {
      button.disabled = false;
    }
  });
  $("detail-remove").addEventListener("click", () => {
    if (torrents.has(selected)) askRemove([selected]);
  });
  $("detail-recheck").addEventListener("click", () => {
    if (torrents.has(selected)) forEach([selected], "recheck");
  });
  $("detail-copy").addEventListener("click", () => {
    const t = torrents.get(selected);
    if (t) window.shoalDialogs.copyMagnet(t);
  });

  function updateDetailSummary(t) {
    setText($("detail-name"), t.name || t.info_hash);
    setText($("detail-toggle"), isPaused(t) ? "Resume" : "Pause");
    const box = $("detail-error-box");
    if (t.state === "error" && t.error) {
      setText($("detail-error"), t.error);
      box.hidden = false;
    } else box.hidden = true;
    // Files in the way that shoal did not create: replacing them is one
    // press away, since the message says how.
    $("detail-overwrite").hidden = !(t.state === "error" && t.clash);
    const ratio = T.ratioText(t);
    const stats = [
      ["State", stateWhy(t).filter(Boolean).join(": ")],
      ["Progress", percent(t.progress)],
      ["Have", bytes(t.have_bytes) + " of " + (t.total ? bytes(t.total) : "?")],
      ["Downloaded", bytes(t.downloaded)],
      ["Uploaded", bytes(t.uploaded) + " (ratio " + ratio + ")"],
      ["Rates", "↓ " + (rate(t.down_rate) === "–" ? "0 B/s" : rate(t.down_rate)) + " · ↑ " + (rate(t.up_rate) === "–" ? "0 B/s" : rate(t.up_rate))],
      ["Peers", t.peers + " connected, " + (t.known_peers ?? "?") + " known"],
      ["ETA", t.progress >= 1 ? "–" : eta(t.eta)],
      ["Folder", t.download_dir || "–"],
      ["Category", t.category || "–"],
      ["Added", date(t.added)],
      ["Info-hash", t.info_hash],
    ];
    const dl = $("detail-stats");
    if (dl.children.length !== stats.length * 2) {
      dl.replaceChildren();
      for (const [k] of stats) dl.append(el("dt", null, k), el("dd"));
    }
    stats.forEach(([, v], i) => setText(dl.children[i * 2 + 1], v));
  }

  // Bumped by each priority change: a detail asked for before a change
  // does not put that file's old priority back when it comes late.
  let priorityEdits = 0;

  async function loadDetail() {
    const h = selected;
    const gen = detailGen;
    const asOf = priorityEdits;
    if (!h) return;
    const base = "/api/torrents/" + enc(h);
    const [info, peers, pieces] = await Promise.allSettled([api("GET", base), api("GET", base + "/peers"), api("GET", base + "/pieces")]);
    if (gen !== detailGen) return; // another torrent was picked meanwhile
    if (info.status === "fulfilled" && info.value) {
      const d = info.value;
      updateDetailSummary(Object.assign({}, torrents.get(h) || {}, d));
      renderFiles(h, d.files || [], asOf);
      renderTrackers(d.tracker_status || []);
    } else if (info.reason && info.reason.status === 404) {
      closeDetail();
      return;
    }
    if (peers.status === "fulfilled" && Array.isArray(peers.value)) renderPeers(peers.value);
    if (pieces.status === "fulfilled" && pieces.value) {
      lastPieces = pieces.value;
      drawPieces();
    }
  }

  const TRACKER_STATES = { working: "Working", failing: "Failing", "not contacted": "Not contacted" };

  // A tracker as the table names it: its host and port (the rest of its
  // URL, which may hold a passkey, is in the tooltip).
  function hostOf(url) {
    try {
      return new URL(url).host || String(url);
    } catch (e) {
      return String(url);
    }
  }

  // One row per tracker: its status, last and next announce, the seeders
  // and leechers it counted, and why its last announce failed.
  function renderTrackers(list) {
    setText($("trackers-count"), "(" + list.length + ")");
    const rows = list.map((tr) => {
      const counts = tr.seeders == null && tr.leechers == null ? "–" : (tr.seeders ?? "?") + " / " + (tr.leechers ?? "?");
      return el(
        "tr",
        { class: "t-" + String(tr.status).replace(/[^a-z]/g, "") },
        el(
          "td",
          { class: "t-url" },
          el("span", { class: "mono", title: String(tr.url) }, hostOf(tr.url)),
          tr.error ? el("span", { class: "t-error" }, String(tr.error)) : null
        ),
        el("td", { class: "t-status" }, TRACKER_STATES[tr.status] || String(tr.status)),
        el(
          "td",
          { class: "t-when" },
          el("span", { class: "t-last" }, since(tr.last_announce)),
          el("span", { class: "t-next muted" }, tr.next_announce ? "next " + since(tr.next_announce) : "")
        ),
        el("td", { class: "num t-counts" }, counts)
      );
    });
    if (!rows.length) rows.push(el("tr", { class: "none" }, el("td", { colspan: "4" }, "No tracker: peers come from the DHT, peer exchange and the local network")));
    $("trackers").replaceChildren(...rows);
  }

  function renderFiles(h, files, asOf) {
    const body = $("files");
    const seen = new Set();
    const t = torrents.get(h);
    const prefix = t && t.name && files.length > 1 && files.every((f) => String(f.path).startsWith(t.name + "/")) ? t.name + "/" : "";
    for (const f of files) {
      seen.add(f.index);
      let r = fileRows.get(f.index);
      if (!r) {
        const id = "file-" + f.index;
        const check = el("input", { type: "checkbox", id });
        const prio = el("select", { "aria-label": "Priority" }, el("option", { value: "skip" }, "Skip"), el("option", { value: "normal" }, "Normal"), el("option", { value: "high" }, "High"));
        const label = el("label", { for: id });
        const fill = el("span", { class: "fill" });
        const done = el("span", { class: "pct" });
        r = {
          check,
          prio,
          label,
          fill,
          done,
          size: el("td", { class: "f-size num" }),
          lastNonSkip: "normal",
          busy: false,
        };
        r.tr = el(
          "tr",
          null,
          el("td", { class: "f-sel" }, check),
          el("td", { class: "f-path" }, label),
          r.size,
          el("td", { class: "f-done" }, el("span", { class: "bar thin" }, fill), done),
          el("td", { class: "f-prio" }, prio),
          // Plays in the browser (or copy the link into a player) while
          // it downloads: the pieces at the reader's position come first.
          el(
            "td",
            { class: "f-play" },
            el(
              "a",
              {
                href: "/api/torrents/" + enc(h) + "/files/" + enc(String(f.index)) + "/stream",
                target: "_blank",
                rel: "noopener noreferrer",
                "aria-label": "Stream " + f.path,
              },
              "Stream"
            )
          )
        );
        check.addEventListener("change", () => setPriority(h, f.index, r, check.checked ? r.lastNonSkip : "skip"));
        prio.addEventListener("change", () => setPriority(h, f.index, r, prio.value));
        fileRows.set(f.index, r);
        body.append(r.tr);
      }
      // Paths start with the torrent's own folder; the pane's title says it.
      const shown = prefix && f.path.startsWith(prefix) && f.path.length > prefix.length ? f.path.slice(prefix.length) : f.path;
      setText(r.label, shown);
      r.label.setAttribute("title", f.path);
      setText(r.size, bytes(f.length));
      const p = f.length ? f.done / f.length : 1;
      r.fill.style.width = (p * 100).toFixed(2) + "%";
      setText(r.done, percent(p));
      r.prio.setAttribute("aria-label", "Priority of " + f.path);
      if (!r.busy && !(r.edit > asOf)) {
        r.check.checked = f.priority !== "skip";
        r.prio.value = f.priority;
        if (f.priority !== "skip") r.lastNonSkip = f.priority;
        r.tr.classList.toggle("skipped", f.priority === "skip");
      }
    }
    for (const [i, r] of fileRows) {
      if (!seen.has(i)) {
        r.tr.remove();
        fileRows.delete(i);
      }
    }
  }

  async function setPriority(h, index, r, prio) {
    r.busy = true;
    r.edit = ++priorityEdits;
    r.check.checked = prio !== "skip";
    r.prio.value = prio;
    if (prio !== "skip") r.lastNonSkip = prio;
    try {
      const body = { priorities: {} };
      body.priorities[String(index)] = prio;
      const files = await api("POST", "/api/torrents/" + enc(h) + "/files", body);
      r.busy = false;
      // Only the priorities are taken from the answer: the service restarts
      // the torrent's run on a change, so its "done" counts start over
      // while the data is checked again; the next refresh brings them.
      const list = Array.isArray(files) ? files : files && Array.isArray(files.files) ? files.files : [];
      if (selected === h) {
        for (const f of list) {
          const fr = fileRows.get(f.index);
          if (!fr || fr.busy) continue;
          fr.check.checked = f.priority !== "skip";
          fr.prio.value = f.priority;
          if (f.priority !== "skip") fr.lastNonSkip = f.priority;
          fr.tr.classList.toggle("skipped", f.priority === "skip");
        }
      }
    } catch (e) {
      r.busy = false;
      if (e.status !== 401) showError("Could not change the priority: " + e.message);
      loadDetail();
    }
  }

  function renderPeers(peers) {
    const body = $("peers");
    peers = peers.slice().sort((a, b) => (b.down_rate || 0) - (a.down_rate || 0) || (b.up_rate || 0) - (a.up_rate || 0) || String(a.addr).localeCompare(String(b.addr)));
    setText($("peers-count"), "(" + peers.length + ")");
    const rows = peers.map((p) => {
      const flags = [];
      if (p.choked) flags.push("chokes us");
      if (p.interested) flags.push("we're interested");
      return el(
        "tr",
        null,
        el("td", { class: "mono" }, String(p.addr)),
        el("td", { class: "p-client", title: p.client || "" }, p.client ? String(p.client) : "–"),
        el("td", { class: "p-source" }, p.source ? String(p.source) : "–"),
        el("td", { class: "p-transport" }, p.transport === "utp" ? "uTP" : p.transport === "tcp" ? "TCP" : "–"),
        el("td", { class: "num" }, percent(p.progress)),
        el("td", { class: "num" }, rate(p.down_rate)),
        el("td", { class: "num p-up" }, rate(p.up_rate)),
        el("td", { class: "p-flags" }, flags.join(", ") || "–")
      );
    });
    if (!rows.length) rows.push(el("tr", { class: "none" }, el("td", { colspan: "8" }, "No peers connected")));
    body.replaceChildren(...rows);
  }

  // ---- the piece map ----------------------------------------------------------

  let lastPieces = null;

  function decodeBitfield(b64) {
    try {
      const s = atob(b64 || "");
      const out = new Uint8Array(s.length);
      for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
      return out;
    } catch (e) {
      return new Uint8Array(0);
    }
  }

  function cssVar(name) {
    return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
  }

  // Squares of one piece each when they fit in a few rows, otherwise each
  // square stands for a run of pieces and is shaded by how many are here.
  function drawPieces() {
    const canvas = $("pieces");
    const width = Math.max(100, canvas.clientWidth || canvas.parentElement.clientWidth);
    const dpr = window.devicePixelRatio || 1;
    const n = lastPieces ? lastPieces.piece_count || 0 : 0;
    const bits = lastPieces ? decodeBitfield(lastPieces.have) : new Uint8Array(0);
    const maxH = 96;
    let cell = n ? Math.floor(Math.sqrt((width * maxH) / n)) : 12;
    cell = Math.max(4, Math.min(14, cell));
    // Few pieces: one row of wider squares.
    if (n && width / n >= 10) cell = Math.min(24, Math.floor(width / n));
    const cols = Math.max(1, Math.floor(width / cell));
    const maxRows = Math.floor(maxH / cell);
    const per = Math.max(1, Math.ceil(n / (cols * maxRows)));
    const cells = Math.ceil(n / per);
    const rows = Math.max(1, Math.ceil(cells / cols));
    const height = n ? rows * cell : cell;
    canvas.style.height = height + "px";
    canvas.width = Math.round(width * dpr);
    canvas.height = Math.round(height * dpr);
    const ctx = canvas.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, width, height);
    const have = cssVar("--piece-have") || "#2f80ed";
    const miss = cssVar("--piece-missing") || "#ddd";
    const gap = cell >= 6 ? 1 : 0;
    let count = 0;
    for (let c = 0; c < cells; c++) {
      let got = 0;
      const from = c * per;
      const to = Math.min(n, from + per);
      for (let i = from; i < to; i++) {
        if (bits[i >> 3] & (0x80 >> (i & 7))) got++;
      }
      count += got;
      const x = (c % cols) * cell;
      const y = Math.floor(c / cols) * cell;
      ctx.globalAlpha = 1;
      ctx.fillStyle = miss;
      ctx.fillRect(x, y, cell - gap, cell - gap);
      if (got) {
        ctx.globalAlpha = got / (to - from);
        ctx.fillStyle = have;
        ctx.fillRect(x, y, cell - gap, cell - gap);
      }
    }
    ctx.globalAlpha = 1;
    if (n) {
      setText($("pieces-count"), "(" + count + " of " + n + (per > 1 ? ", " + per + " per square" : "") + ")");
      canvas.setAttribute("aria-label", "Piece map: " + count + " of " + n + " pieces here");
    }
  }

  let resizeTimer = null;
  window.addEventListener("resize", () => {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(drawPieces, 100);
  });
  window.matchMedia("(prefers-color-scheme: dark)").addEventListener("change", drawPieces);

  // ---- login ------------------------------------------------------------------

  function needLogin() {
    if (loggedOut) return;
    loggedOut = true;
    stopEvents();
    if (selected) closeDetail();
    $("offline").hidden = true;
    $("login").hidden = false;
    $("main").hidden = true;
    $("add-form").hidden = true;
    $("limits-open").hidden = true;
    $("token").focus();
  }

  $("login-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const token = $("token").value.trim();
    if (!token) return;
    let res;
    try {
      res = await fetch("/api/login", {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ token }),
      });
    } catch (e) {
      showError("shoal is not answering");
      return;
    }
    if (!res.ok) {
      let why = res.status === 401 || res.status === 403 ? "That token is not the right one" : "Login failed (" + res.status + ")";
      try {
        const d = await res.json();
        if (d && typeof d.error === "string") why = d.error;
      } catch (e) {
        /* keep the generic line */
      }
      showError(why);
      $("token").select();
      return;
    }
    $("token").value = "";
    loggedOut = false;
    $("login").hidden = true;
    $("main").hidden = false;
    $("add-form").hidden = false;
    $("limits-open").hidden = false;
    window.shoalDialogs.loadLimits();
    for (const li of Array.from($("errors").children)) li.remove();
    start();
  });

  // ---- live updates -----------------------------------------------------------

  let source = null;
  let retryTimer = null;
  let retryDelay = 1000;
  let watchdog = null;
  let lastMessage = 0;

  function setOffline(down, detail) {
    $("offline").hidden = !down;
    document.body.classList.toggle("is-offline", down);
    if (detail) setText($("offline-detail"), detail);
  }

  function stopEvents() {
    if (source) {
      source.close();
      source = null;
    }
    clearTimeout(retryTimer);
    retryTimer = null;
  }

  function onList(list) {
    lastMessage = Date.now();
    if (!Array.isArray(list)) return;
    renderList(list);
    // Flashed if it is on screen; a row far down is not scrolled to.
    if (toFlash && torrents.has(toFlash)) {
      const r = rowOf.get(toFlash);
      if (r && r.tr.parentNode) {
        r.tr.classList.add("added");
        setTimeout(() => r.tr.classList.remove("added"), 1500);
      }
      toFlash = null;
    }
  }

  async function refresh() {
    try {
      onList(await api("GET", "/api/torrents"));
      return true;
    } catch (e) {
      return false;
    }
  }

  function connect() {
    stopEvents();
    const es = new EventSource("/api/events");
    source = es;
    es.addEventListener("open", () => {
      if (source !== es) return;
      retryDelay = 1000;
      lastMessage = Date.now();
      setOffline(false);
    });
    es.addEventListener("torrents", (ev) => {
      if (source !== es) return;
      setOffline(false);
      try {
        onList(JSON.parse(ev.data));
      } catch (e) {
        /* a torn message; the next one comes in a second */
      }
    });
    const refetch = () => {
      if (source === es) refresh();
    };
    es.addEventListener("added", () => {
      refetch();
      if (source === es) loadCategories();
    });
    es.addEventListener("removed", refetch);
    es.addEventListener("error", () => {
      if (source !== es) return;
      // Take over from the browser's own retrying: an EventSource that got
      // a 401 or a 5xx would give up for good.
      es.close();
      source = null;
      lostConnection();
    });
  }

  async function lostConnection() {
    if (loggedOut) return;
    clearTimeout(retryTimer);
    // Is it the service that is gone, or do we need to log in?
    let status = 0;
    try {
      const res = await fetch("/api/torrents", { credentials: "same-origin" });
      status = res.status;
      if (res.ok) {
        try {
          onList(await res.json());
        } catch (e) {
          /* ignore */
        }
      }
    } catch (e) {
      status = 0;
    }
    if (status === 401) {
      needLogin();
      return;
    }
    if (status >= 200 && status < 300) {
      connect();
      return;
    }
    setOffline(true, status ? "shoal answered " + status + "; trying again…" : "Trying to reconnect…");
    retryTimer = setTimeout(lostConnection, retryDelay);
    retryDelay = Math.min(retryDelay * 2, 5000);
  }

  // The categories the service knows (also those no torrent has yet).
  async function loadCategories() {
    try {
      const c = await api("GET", "/api/categories");
      if (c && typeof c === "object") categories = Object.keys(c);
      if (torrents.size) renderList(Array.from(torrents.values()));
    } catch (e) {
      /* the list still shows the torrents' own */
    }
  }

  function allCategories() {
    const names = new Set(categories);
    for (const t of torrents.values()) if (t.category) names.add(t.category);
    return Array.from(names).sort((a, b) => a.localeCompare(b));
  }

  // What dialogs.js builds on.
  window.shoal = { api, el, $, setText, showError, clearErrors, bytes, rate, enc, flash, refresh, loadCategories, allCategories, torrent: (h) => torrents.get(h) };

  function start() {
    loadCategories();
    refresh().then((ok) => {
      if (loggedOut) return;
      if (ok) connect();
      else lostConnection();
    });
    clearInterval(watchdog);
    // Updates come every second; a silent stream is a dead one even when
    // no error says so (a suspended laptop, a proxy holding the socket).
    watchdog = setInterval(() => {
      if (source && !loggedOut && Date.now() - lastMessage > 6000) {
        source.close();
        source = null;
        lostConnection();
      }
    }, 2000);
  }

  start();
})();
