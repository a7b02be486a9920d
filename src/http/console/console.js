// The console's only script: search as you type, and the live feed. Every page works without it.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  const box = document.getElementById("q");
  const results = document.getElementById("results");
  if (box && results) {
    let timer = null;
    let latest = 0;
    box.addEventListener("input", () => {
      clearTimeout(timer);
      timer = setTimeout(async () => {
        const q = box.value.trim();
        const asked = ++latest;
        const url = "/admin/search?partial=1&q=" + encodeURIComponent(q);
        try {
          const response = await fetch(url, { credentials: "same-origin" });
          if (!response.ok || asked !== latest) return;
          results.outerHTML = await response.text();
          history.replaceState(null, "", "/admin/search?q=" + encodeURIComponent(q));
        } catch (_) {
          // The form still works: Enter submits it.
        }
      }, 150);
    });
  }

  const feed = document.getElementById("feed");
  const status = document.getElementById("live-status");
  if (feed && window.EventSource) {
    // EventSource reconnects by itself, sending the last id it saw (Last-Event-ID).
    const source = new EventSource("/admin/live?after=" + encodeURIComponent(feed.dataset.after || "0"));
    source.addEventListener("open", () => { status.textContent = "Live: new events appear at the top."; });
    source.addEventListener("error", () => { status.textContent = "Reconnecting…"; });
    source.addEventListener("live", (message) => {
      const e = JSON.parse(message.data);
      const item = document.createElement("li");
      item.className = "live-event fresh";
      item.dataset.kind = e.kind;
      const time = document.createElement("time");
      time.textContent = e.at.replace("T", " ").replace(/\.\d+/, "").replace(/(Z|\+00:00)$/, " UTC");
      const kind = document.createElement("span");
      kind.className = "kind";
      kind.textContent = e.kind;
      const detail = document.createElement("span");
      detail.className = "detail";
      detail.textContent = e.detail;
      item.append(time, " ", kind, " ", detail);
      if (e.owner_id) {
        const link = document.createElement("a");
        link.href = "/admin/owners/" + encodeURIComponent(e.owner_id);
        link.textContent = e.owner_id;
        item.append(" ", link);
      }
      feed.prepend(item);
      while (feed.children.length > 500) feed.lastElementChild.remove();
    });
  }
});
