// The session page, live: a countdown of the key's TTL, and every second a read of
// `GET /live`, a JSON view of the session's hash, PTTL and the user's other sessions.
// That route reads Redis with plain HGETALL and PTTL, outside the session layer, so the
// polling never loads the session: it does not push the expiry back, and the countdown
// shows the TTL really running out. When the session is gone (expired, or ended from
// another browser), the page goes back to `/`, which says so.
//
// Also: forms with `data-confirm` ask before they are sent ("End", "Log out everywhere").
(function () {
  "use strict";

  document.addEventListener("submit", function (event) {
    const message = event.target.dataset && event.target.dataset.confirm;
    if (message && !window.confirm(message)) event.preventDefault();
  });

  const countdown = document.getElementById("countdown");
  if (!countdown) return;
  const bar = document.getElementById("ttl-bar");
  const status = document.getElementById("live-status");
  const statusText = status ? status.textContent : "";
  const POLL_MS = 1000;

  // The last PTTL Redis reported (the page's, then each poll's), and when it came.
  let pttl = Number(countdown.dataset.pttlMs);
  let measuredAt = performance.now();
  // The other sessions' TTLs, each from the last report too.
  let othersMeasuredAt = measuredAt;
  let leaving = false;

  function words(ms) {
    const secs = Math.floor(ms / 1000);
    if (secs < 60) return secs + " s";
    if (secs < 3600) return Math.floor(secs / 60) + " min " + (secs % 60) + " s";
    return Math.floor(secs / 3600) + " h " + Math.floor((secs % 3600) / 60) + " min";
  }

  function leave() {
    if (leaving) return;
    leaving = true;
    countdown.textContent = "expired";
    if (bar) bar.value = 0;
    document.body.classList.add("expired");
    // `/` shows the login form, saying the session expired or was ended.
    setTimeout(function () { window.location.assign("/"); }, 400);
  }

  function tick() {
    if (leaving) return;
    // Counted from when the PTTL arrived, which is after Redis measured it: the page can
    // only leave after the key has expired, never before.
    const now = performance.now();
    const left = pttl - (now - measuredAt);
    document.querySelectorAll("#others-body .expires-in[data-pttl-ms]").forEach(function (cell) {
      const rest = Number(cell.dataset.pttlMs) - (now - othersMeasuredAt);
      cell.textContent = rest > 0 ? words(rest) : "expired, unless used since";
    });
    if (left <= 0) {
      leave();
      return;
    }
    countdown.textContent = (left / 1000).toFixed(1) + " s";
    if (bar) bar.value = left;
    setTimeout(tick, 100);
  }

  // Text with a break opportunity after each ":" and "/" and before the "T" of a
  // timestamp, as the server renders it.
  function setBreakable(el, text) {
    el.textContent = "";
    let part = "";
    for (let i = 0; i < text.length; i++) {
      const c = text[i];
      if (c === "T" && i > 0 && /[0-9]/.test(text[i - 1])) {
        el.append(part, document.createElement("wbr"));
        part = "";
      }
      part += c;
      if (c === ":" || c === "/") {
        el.append(part, document.createElement("wbr"));
        part = "";
      }
    }
    el.append(part);
  }

  function cell(className, label) {
    const td = document.createElement("td");
    td.className = className;
    if (label) td.dataset.label = label;
    return td;
  }

  // The hash table, updated in place: rows keyed by field name.
  function renderFields(fields) {
    const body = document.getElementById("fields-body");
    if (!body) return;
    const existing = new Map();
    body.querySelectorAll("tr[data-field]").forEach(function (row) {
      existing.set(row.dataset.field, row);
    });
    fields.forEach(function (field) {
      let row = existing.get(field.name);
      existing.delete(field.name);
      if (!row) {
        row = document.createElement("tr");
        row.className = field.internal ? "internal" : "user";
        row.id = "field-" + field.name;
        row.dataset.field = field.name;
        const name = cell("name");
        name.appendChild(document.createElement("code")).textContent = field.name;
        const value = cell("value");
        value.appendChild(document.createElement("code"));
        const what = cell("what");
        what.appendChild(document.createElement("span")).className = "badge";
        what.firstChild.textContent = field.internal ? "internal" : "user";
        what.append(" " + field.what);
        row.append(name, value, what);
      }
      body.appendChild(row); // keeps the server's order
      const code = row.querySelector("td.value code");
      if (code.textContent !== field.value) {
        setBreakable(code, field.value);
        row.classList.remove("changed");
        void row.offsetWidth;
        row.classList.add("changed");
      }
    });
    existing.forEach(function (row) { row.remove(); });
  }

  // "Your other sessions", updated in place: rows keyed by handle.
  function renderOthers(others, csrf) {
    const body = document.getElementById("others-body");
    if (!body || !others) return;
    const existing = new Map();
    body.querySelectorAll("tr.other-session").forEach(function (row) {
      existing.set(row.dataset.handle, row);
    });
    others.forEach(function (other) {
      let row = existing.get(other.handle);
      existing.delete(other.handle);
      if (!row) {
        row = document.createElement("tr");
        row.className = "other-session";
        row.dataset.handle = other.handle;
        const session = cell("session", "session");
        session.appendChild(document.createElement("code")).textContent = other.short + "…";
        const end = cell("end");
        const form = end.appendChild(document.createElement("form"));
        form.method = "post";
        form.action = "/sessions/end";
        form.dataset.confirm = "End session " + other.short + "…? Its browser will find itself logged out.";
        const token = form.appendChild(document.createElement("input"));
        token.type = "hidden";
        token.name = "csrf";
        token.value = csrf;
        const handle = form.appendChild(document.createElement("input"));
        handle.type = "hidden";
        handle.name = "handle";
        handle.value = other.handle;
        const button = form.appendChild(document.createElement("button"));
        button.className = "end-session danger";
        button.textContent = "End";
        row.append(
          session,
          cell("age", "started"),
          cell("last-used", "last used"),
          cell("expires-in", "expires in"),
          cell("counter", "counter"),
          end
        );
      }
      body.appendChild(row);
      const set = function (css, text) {
        const el = row.querySelector(css);
        if (el.textContent !== text) el.textContent = text;
      };
      set(".age", other.age);
      set(".last-used", other.last_used);
      set(".counter", other.counter);
      const expires = row.querySelector(".expires-in");
      expires.dataset.pttlMs = String(other.expires_in_ms);
      set(".expires-in", other.expires_in);
    });
    existing.forEach(function (row) { row.remove(); });
    const n = others.length;
    const count = document.getElementById("other-count");
    if (count) count.textContent = "(" + n + ")";
    const table = document.getElementById("others");
    if (table) table.hidden = n === 0;
    const none = document.getElementById("no-other-sessions");
    if (none) none.hidden = n !== 0;
    // "Log out everywhere else" only when there is someone else.
    const endOthers = document.getElementById("end-others-form");
    if (endOthers) endOthers.hidden = n === 0;
  }

  function setText(id, text) {
    const el = document.getElementById(id);
    if (el && el.textContent !== text) el.textContent = text;
  }

  function render(view) {
    pttl = view.pttl_ms;
    measuredAt = othersMeasuredAt = performance.now();
    setText("pttl", String(view.pttl_ms));
    setText("pttl-when", "at the last poll");
    setText("idle-ttl", String(view.ttl));
    if (bar) bar.max = view.ttl * 1000;
    const key = document.getElementById("session-key");
    if (key && key.textContent !== view.key) {
      setBreakable(key, view.key);
      setBreakable(document.getElementById("hgetall"), "HGETALL " + view.key);
    }
    setText("session-id", view.id_start + "…");
    // After a rotation in another tab, the forms need the new ID's token.
    document.querySelectorAll('input[name="csrf"]').forEach(function (input) {
      if (view.csrf && input.value !== view.csrf) input.value = view.csrf;
    });
    renderFields(view.fields);
    renderOthers(view.others, view.csrf);
  }

  function poll() {
    if (leaving) return;
    fetch("/live", { cache: "no-store", credentials: "same-origin" })
      .then(function (res) { return res.json(); })
      .then(function (reply) {
        if (reply.state === "live") {
          if (status && status.classList.contains("down")) {
            status.classList.remove("down");
            status.textContent = statusText;
          }
          render(reply.session);
        } else if (reply.state === "gone") {
          leave();
        } else if (status) {
          status.classList.add("down");
          status.textContent = "Redis is not answering: the values above are from the last answer. Still trying…";
        }
      })
      .catch(function () {
        if (status) {
          status.classList.add("down");
          status.textContent = "The demo is not answering: the values above are from the last answer. Still trying…";
        }
      })
      .finally(function () {
        if (!leaving) setTimeout(poll, POLL_MS);
      });
  }

  tick();
  setTimeout(poll, POLL_MS);
})();
