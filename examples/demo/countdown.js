// Live countdown of the session key's TTL, from the PTTL Redis reported when the page
// was made. When it reaches zero the key is gone from Redis, so the page goes back to
// `/`, which shows the login form with "your session expired".
(function () {
  "use strict";
  const el = document.getElementById("countdown");
  if (!el) return;
  const pttl = Number(el.dataset.pttlMs);
  const bar = document.getElementById("ttl-bar");
  const start = performance.now();
  // The other sessions' TTLs count down too (without their own requests, which this
  // page cannot see, pushing them back).
  const others = Array.from(document.querySelectorAll(".expires-in[data-pttl-ms]"));
  function words(ms) {
    const secs = Math.floor(ms / 1000);
    if (secs < 60) return secs + " s";
    if (secs < 3600) return Math.floor(secs / 60) + " min " + (secs % 60) + " s";
    return Math.floor(secs / 3600) + " h " + Math.floor((secs % 3600) / 60) + " min";
  }
  function tick() {
    // Counted from when this script ran, which is after Redis measured the PTTL: the
    // reload below can only come after the key has expired, never before (a request
    // before expiry would push the expiry back).
    const elapsed = performance.now() - start;
    others.forEach(function (cell) {
      const left = Number(cell.dataset.pttlMs) - elapsed;
      cell.textContent = left > 0 ? words(left) : "expired, unless used since";
    });
    const left = pttl - elapsed;
    if (left <= 0) {
      el.textContent = "expired";
      if (bar) bar.value = 0;
      document.body.classList.add("expired");
      setTimeout(function () { window.location.assign("/"); }, 400);
      return;
    }
    el.textContent = (left / 1000).toFixed(1) + " s";
    if (bar) bar.value = left;
    setTimeout(tick, 100);
  }
  tick();
})();
