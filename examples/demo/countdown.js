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
  function tick() {
    // Counted from when this script ran, which is after Redis measured the PTTL: the
    // reload below can only come after the key has expired, never before (a request
    // before expiry would push the expiry back).
    const left = pttl - (performance.now() - start);
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
