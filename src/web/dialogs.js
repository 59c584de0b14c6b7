// shoal's web page: its dialogs. The add dialog (a folder, a category,
// start paused, the files chosen before it starts), the speed limits, and
// copying a magnet link. Built on what app.js shares as window.shoal;
// like it, text from the network only ever goes in as text.
"use strict";

window.shoalDialogs = (function () {
  const { api, el, $, setText, showError, clearErrors, bytes, rate, enc, flash, refresh } = window.shoal;

  // ---- copy a magnet link ---------------------------------------------------

  let toastTimer = null;
  function toast(msg) {
    const t = $("toast");
    setText(t, msg);
    t.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => (t.hidden = true), 2500);
  }

  // Shows the link selected in a field to copy by hand: what is left when
  // the clipboard is not ours (a page over plain http from another
  // machine is no secure context, and has no navigator.clipboard).
  function copyByHand(link) {
    const field = $("copy-field");
    field.value = link;
    $("copy-dialog").showModal();
    field.focus();
    field.select();
  }

  async function copyMagnet(t) {
    const link = String(t.magnet || "");
    if (!link) {
      showError("No magnet link for " + (t.name || t.info_hash));
      return;
    }
    try {
      if (!navigator.clipboard || !window.isSecureContext) throw new Error("no clipboard");
      await navigator.clipboard.writeText(link);
      toast("Magnet link of " + (t.name || t.info_hash) + " copied");
    } catch (e) {
      copyByHand(link);
    }
  }

  $("copy-field").addEventListener("focus", (ev) => ev.target.select());

  // ---- speed limits ---------------------------------------------------------

  let limits = { download: null, upload: null };

  function showLimits() {
    const d = limits.download ? rate(limits.download) : "∞";
    const u = limits.upload ? rate(limits.upload) : "∞";
    setText($("limits-text"), "Limits ↓ " + d + " · ↑ " + u);
    $("limits-open").classList.toggle("on", !!(limits.download || limits.upload));
  }

  async function loadLimits() {
    try {
      const l = await api("GET", "/api/limits");
      if (l) limits = { download: l.download ?? null, upload: l.upload ?? null };
      showLimits();
    } catch (e) {
      /* shown once the service answers */
    }
  }

  $("limits-cancel").addEventListener("click", () => $("limits-dialog").close("cancel"));

  const kib = (v) => (v ? String(Math.round(v / 1024)) : "");

  $("limits-open").addEventListener("click", async () => {
    await loadLimits();
    $("limit-down").value = kib(limits.download);
    $("limit-up").value = kib(limits.upload);
    const dlg = $("limits-dialog");
    dlg.returnValue = "";
    dlg.showModal();
    $("limit-down").focus();
  });

  // KiB/s as typed, as bytes per second (null: no limit); undefined for
  // what is not a number.
  function parseRate(s) {
    s = String(s).trim();
    if (!s) return null;
    const n = Number(s);
    if (!isFinite(n) || n < 0) return undefined;
    return n === 0 ? null : Math.round(n * 1024);
  }

  $("limits-dialog").addEventListener("close", async () => {
    if ($("limits-dialog").returnValue !== "save") return;
    const download = parseRate($("limit-down").value);
    const upload = parseRate($("limit-up").value);
    if (download === undefined || upload === undefined) {
      showError("A speed limit is a number of KiB/s (empty or 0 for none)");
      return;
    }
    try {
      const l = await api("PUT", "/api/limits", { download, upload });
      if (l) limits = { download: l.download ?? null, upload: l.upload ?? null };
      showLimits();
    } catch (e) {
      if (e.status !== 401) showError("Could not set the speed limits: " + e.message);
    }
  });

  // ---- the add dialog -------------------------------------------------------

  // Step one takes the source and the options; the torrent is then added
  // paused (a magnet fetches its metadata first, then pauses:
  // stop_after_metadata), step two shows its files to choose, and Start
  // sets the unticked ones to skip and resumes it (or leaves it paused).
  let adding = null; // {hash, name, paused, timer} once added
  let addFile = null;

  function resetAdd() {
    if (adding) clearTimeout(adding.timer);
    adding = null;
    addFile = null;
    $("add-dialog-form").reset();
    setText($("add-file-name"), "");
    $("add-step-source").hidden = false;
    $("add-step-files").hidden = true;
    $("add-files-box").hidden = true;
    $("add-files").replaceChildren();
    $("add-keep").hidden = true;
    $("add-submit").disabled = false;
    setText($("add-submit"), "Add");
    setText($("add-title"), "Add a torrent");
  }

  $("add-open").addEventListener("click", () => {
    resetAdd();
    const list = $("category-list");
    list.replaceChildren(...window.shoal.allCategories().map((c) => el("option", { value: c })));
    $("add-dialog").showModal();
    $("add-link").focus();
  });

  $("add-file").addEventListener("change", (ev) => {
    addFile = (ev.target.files || [])[0] || null;
    setText($("add-file-name"), addFile ? addFile.name : "");
    if (addFile) $("add-link").value = "";
  });

  // The link as the API takes it, or null.
  function linkBody(text) {
    if (/^magnet:/i.test(text)) return { magnet: text };
    if (/^https?:\/\//i.test(text)) return { url: text };
    if (/^[0-9a-f]{40}$/i.test(text) || /^[a-z2-7]{32}$/i.test(text)) return { magnet: "magnet:?xt=urn:btih:" + text };
    if (/^[0-9a-f]{64}$/i.test(text)) return { magnet: "magnet:?xt=urn:btmh:1220" + text };
    return null;
  }

  async function submitSource() {
    const text = $("add-link").value.trim();
    const dir = $("add-dir").value.trim();
    const category = $("add-category").value.trim();
    const paused = $("add-paused").checked;
    const choose = $("add-choose").checked;
    if (!text && !addFile) {
      showError("Give a magnet link or a .torrent URL, or choose a .torrent file", "add");
      return;
    }
    let r;
    try {
      if (addFile && !text) {
        const q = new URLSearchParams();
        if (dir) q.set("download_dir", dir);
        if (category) q.set("category", category);
        if (choose) q.set("stop_after_metadata", "true");
        else if (paused) q.set("paused", "true");
        r = await api("POST", "/api/torrents?" + q.toString(), addFile, "application/x-bittorrent");
      } else {
        const body = linkBody(text);
        if (!body) {
          showError("That is not a magnet link, a .torrent URL or an info-hash", "add");
          return;
        }
        if (dir) body.download_dir = dir;
        if (category) body.category = category;
        if (choose) body.stop_after_metadata = true;
        else if (paused) body.paused = true;
        r = await api("POST", "/api/torrents", body);
      }
    } catch (e) {
      if (e.status !== 401) showError("Could not add it: " + e.message, "add");
      return;
    }
    clearErrors("add");
    if (!r || !r.info_hash) return;
    flash(r.info_hash);
    if (!choose) {
      $("add-dialog").close();
      return;
    }
    adding = { hash: r.info_hash, paused, timer: null };
    const where = [dir ? "Into " + dir : "Into the default folder"];
    if (category) where.push("category " + category);
    where.push(paused ? "stays paused" : "starts once its files are chosen");
    setText($("add-files-where"), where.join(" · "));
    $("add-step-source").hidden = true;
    $("add-step-files").hidden = false;
    $("add-keep").hidden = false;
    $("add-submit").disabled = true;
    setText($("add-submit"), paused ? "Add paused" : "Start");
    setText($("add-files-status"), "Fetching its file list…");
    waitForFiles();
  }

  // Polls the torrent until its files are known (at once for a .torrent;
  // for a magnet once peers sent its metadata).
  async function waitForFiles() {
    const a = adding;
    if (!a) return;
    let d = null;
    try {
      d = await api("GET", "/api/torrents/" + enc(a.hash));
    } catch (e) {
      if (e.status === 404) {
        showError("The torrent was removed while its files were being chosen");
        $("add-dialog").close();
        return;
      }
    }
    if (adding !== a) return;
    const files = d && Array.isArray(d.files) ? d.files : [];
    if (files.length && d.state !== "metadata") {
      showFiles(d, files);
      return;
    }
    if (d) {
      const peers = d.peers ? d.peers + (d.peers === 1 ? " peer" : " peers") : "no peer yet";
      setText($("add-files-status"), "Fetching its file list from peers (" + peers + ")… Close keeps it: it pauses once the list is in.");
    }
    a.timer = setTimeout(waitForFiles, 1000);
  }

  function showFiles(d, files) {
    adding.name = d.name;
    setText($("add-title"), d.name || "Choose its files");
    setText($("add-files-status"), files.length === 1 ? "One file:" : files.length + " files: untick those you do not want.");
    const prefix = d.name && files.length > 1 && files.every((f) => String(f.path).startsWith(d.name + "/")) ? d.name + "/" : "";
    const items = files.map((f) => {
      const id = "add-file-" + f.index;
      const box = el("input", { type: "checkbox", id, "data-index": String(f.index), "data-length": String(f.length || 0) });
      box.checked = f.priority !== "skip";
      box.addEventListener("change", updateFilesSize);
      const path = String(f.path);
      const shown = prefix && path.startsWith(prefix) ? path.slice(prefix.length) : path;
      return el("li", null, box, el("label", { for: id, title: path }, shown), el("span", { class: "muted num" }, bytes(f.length)));
    });
    $("add-files").replaceChildren(...items);
    $("add-files-box").hidden = false;
    $("add-submit").disabled = false;
    updateFilesSize();
  }

  function fileBoxes() {
    return Array.from($("add-files").querySelectorAll("input[type=checkbox]"));
  }

  function updateFilesSize() {
    const boxes = fileBoxes();
    const on = boxes.filter((b) => b.checked);
    const size = on.reduce((n, b) => n + Number(b.dataset.length || 0), 0);
    setText($("add-files-size"), on.length + " of " + boxes.length + " · " + bytes(size));
    const all = $("add-files-all");
    all.checked = on.length === boxes.length;
    all.indeterminate = on.length > 0 && on.length < boxes.length;
    if (adding && !$("add-files-box").hidden) $("add-submit").disabled = on.length === 0;
  }

  $("add-files-all").addEventListener("change", (ev) => {
    for (const b of fileBoxes()) b.checked = ev.target.checked;
    updateFilesSize();
  });

  // The files as ticked, then started unless it was to stay paused.
  async function finishAdd() {
    const a = adding;
    const boxes = fileBoxes();
    const skip = boxes.filter((b) => !b.checked).map((b) => b.dataset.index);
    if (!boxes.length || skip.length === boxes.length) return;
    $("add-submit").disabled = true;
    try {
      if (skip.length) {
        const priorities = {};
        for (const i of skip) priorities[i] = "skip";
        await api("POST", "/api/torrents/" + enc(a.hash) + "/files", { priorities });
      }
      if (!a.paused) await api("POST", "/api/torrents/" + enc(a.hash) + "/resume");
    } catch (e) {
      $("add-submit").disabled = false;
      if (e.status !== 401) showError("Could not start " + (a.name || a.hash) + ": " + e.message);
      return;
    }
    adding = null;
    $("add-dialog").close();
    refresh();
  }

  $("add-dialog-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const button = $("add-submit");
    if (button.disabled) return;
    if (adding) {
      await finishAdd();
      return;
    }
    button.disabled = true;
    try {
      await submitSource();
    } finally {
      if (!adding) button.disabled = false;
    }
  });

  // Cancel takes back a torrent already added for its files to be chosen.
  $("add-cancel").addEventListener("click", async () => {
    const a = adding;
    resetAdd();
    $("add-dialog").close();
    if (!a) return;
    try {
      await api("DELETE", "/api/torrents/" + enc(a.hash));
      refresh();
    } catch (e) {
      if (e.status !== 401 && e.status !== 404) showError("Could not remove " + (a.name || a.hash) + ": " + e.message);
    }
  });

  // Close keeps it as it is: paused (or pausing once its metadata is in),
  // with its files to choose in the detail pane.
  $("add-keep").addEventListener("click", () => {
    resetAdd();
    $("add-dialog").close();
  });

  // Escape is a Close, not a Cancel: nothing added is thrown away by it.
  $("add-dialog").addEventListener("close", () => {
    if (adding) resetAdd();
  });

  loadLimits();
  setInterval(() => {
    if (!document.hidden) loadLimits();
  }, 10000);

  return { copyMagnet, loadLimits, toast };
})();
