// Live updates of the status page: the server streams the page's cells (Server-Sent
// Events) and this writes them into the elements marked data-k. Without JavaScript the
// page is the same tables, refreshed by reloading.
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
  document.querySelectorAll("[data-k]").forEach(function (el) { cells.set(el.dataset.k, el); });
  const source = new EventSource(url);
  let last = 0;
  source.onmessage = function (event) {
    const data = JSON.parse(event.data);
    if (data.shape !== body.dataset.shape) {  // rows appeared or went: rebuild the page
      source.close();
      window.location.reload();
      return;
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
    if (status) status.textContent = "live";
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
