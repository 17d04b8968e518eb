// Live updates of the status page: the server streams the page's cells (Server-Sent
// Events) and this writes them into the elements marked data-k. Without JavaScript the
// page is the same tables, refreshed by reloading.
//
// When rows appear or go (a new shape) the page is rebuilt. A reload would wipe what a
// person is typing (a booking decision's reason), so while a form field has the focus or
// text, the new page is fetched instead and put in place around the rows being typed in,
// which stay the very same elements (value, caret and focus kept). Should such a row have
// left its section (decided elsewhere, expired), the page stays as it is and says so until
// the form is sent or cleared: the text is never lost.
"use strict";
(function () {
  const body = document.body;
  const page = body.dataset.page;
  if (!page || !window.EventSource) return;
  const refresh = Number(body.dataset.refresh || "2");
  let url = "/events?page=" + encodeURIComponent(page);
  if (body.dataset.machine) url += "&id=" + encodeURIComponent(body.dataset.machine);
  const status = document.getElementById("live");
  const cells = new Map();
  function collect() {
    cells.clear();
    document.querySelectorAll("[data-k]").forEach(function (el) { cells.set(el.dataset.k, el); });
  }
  collect();
  const source = new EventSource(url);
  let last = 0;
  let rebuilding = false;
  let held = false;  // a rebuild waits for the person to finish a form

  function typing() {  // the form fields a person is filling in
    return Array.from(document.querySelectorAll("main form input:not([type=hidden])"))
      .filter(function (el) { return el === document.activeElement || el.value !== ""; });
  }

  async function rebuild() {
    const busy = typing();
    if (!busy.length) {  // nothing to keep: reload (the page as the server builds it)
      source.close();
      window.location.reload();
      return;
    }
    const rows = [];
    for (const el of busy) {
      const row = el.closest("tr[data-booking]");
      if (!row) return hold();  // a form outside the bookings' rows: nothing to carry over
      if (rows.indexOf(row) < 0) rows.push(row);
    }
    let fresh;
    try {
      const reply = await fetch(window.location.href, { credentials: "same-origin" });
      if (!reply.ok) throw new Error("HTTP " + reply.status);
      fresh = new DOMParser().parseFromString(await reply.text(), "text/html");
    } catch (e) {
      return hold();  // tried again at the next update
    }
    const main = fresh.querySelector("main");
    const places = rows.map(function (row) {
      return main && main.querySelector('tr[data-booking="' + CSS.escape(row.dataset.booking) +
                                         '"][data-state="' + CSS.escape(row.dataset.state) + '"]');
    });
    if (!main || !fresh.body.dataset.shape || places.some(function (p) { return !p; })) {
      return hold();  // the row left its section (decided, expired): keep the page as it is
    }
    const focused = document.activeElement;
    const caret = focused && "selectionStart" in focused
      ? [focused.selectionStart, focused.selectionEnd] : null;
    places.forEach(function (place, i) { place.replaceWith(rows[i]); });
    document.querySelector("main").replaceWith(document.adoptNode(main));
    if (focused && document.contains(focused) && focused !== document.activeElement) {
      focused.focus();
      if (caret) focused.setSelectionRange(caret[0], caret[1]);
    }
    body.dataset.shape = fresh.body.dataset.shape;
    body.dataset.rebuilt = String(Number(body.dataset.rebuilt || "0") + 1);
    held = false;
    collect();
  }

  function hold() {
    held = true;
    if (status) status.textContent = "the page changed: it updates once your decision is sent";
  }

  source.onmessage = function (event) {
    const data = JSON.parse(event.data);
    if (data.shape !== body.dataset.shape) {  // rows appeared or went: rebuild the page
      if (!rebuilding) {
        rebuilding = true;
        rebuild().finally(function () { rebuilding = false; });
      }
      if (!held) return;
    }
    for (const [key, value] of Object.entries(data.cells)) {
      const el = cells.get(key);
      if (el && el.textContent !== value) {
        el.textContent = value;
        el.classList.remove("changed");
        void el.offsetWidth;  // restart the highlight animation
        el.classList.add("changed");
      }
    }
    if (data.svg !== undefined) {
      const timeline = document.getElementById("timeline");
      if (timeline) timeline.innerHTML = data.svg;
    }
    last = Date.now();
    body.dataset.live = "on";
    body.dataset.updates = String(Number(body.dataset.updates || "0") + 1);
    if (status && !held) status.textContent = "live";
  };
  source.onerror = function () {
    if (status) status.textContent = "reconnecting...";
  };
  setInterval(function () {
    if (status && last && Date.now() - last > 3 * refresh * 1000) {
      status.textContent = "stale: no update for " + Math.round((Date.now() - last) / 1000) + " s";
    }
  }, 1000);
})();
