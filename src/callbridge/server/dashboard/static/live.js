// The live table: rows follow the server's event stream (keyed by CallSid, so a row
// being typed into is updated in place, never rebuilt); durations tick locally.
(function () {
  "use strict";
  var table = document.getElementById("live-table");
  var body = document.getElementById("live-rows");
  var status = document.getElementById("live-status");
  var csrf = document.querySelector('meta[name="csrf-token"]').content;

  function fmtDuration(ms) {
    var s = Math.max(0, Math.round(ms / 1000));
    var m = Math.floor(s / 60);
    s = s % 60;
    return m + ":" + (s < 10 ? "0" : "") + s;
  }

  function el(tag, attrs, text) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function actionForm(sid, kind) {
    var form = el("form", { method: "post", action: "/dashboard/calls/" + sid + "/" + kind, "class": kind });
    form.appendChild(el("input", { type: "hidden", name: "csrf", value: csrf }));
    if (kind === "transfer") {
      form.appendChild(el("label", { "class": "sr-only", "for": "to-" + sid }, "Transfer " + sid + " to"));
      form.appendChild(el("input", { id: "to-" + sid, name: "to", placeholder: "+15551234567",
        pattern: "\\+[1-9][0-9]{1,14}", required: "", size: "13" }));
      form.appendChild(el("button", { type: "submit" }, "Transfer"));
    } else {
      form.appendChild(el("button", { type: "submit", "aria-label": "Hang up " + sid }, "Hang up"));
    }
    return form;
  }

  function newRow(call) {
    var tr = el("tr", { "data-sid": call.sid, "data-started-ms": call.startedAtMs });
    var link = el("td");
    link.appendChild(el("a", { href: "/dashboard/calls/" + call.sid }, call.sid.slice(0, 10) + "…"));
    tr.appendChild(link);
    ["from", "to", "direction", "duration", "phase", "latency"].forEach(function (f) {
      tr.appendChild(el("td", { "data-field": f }));
    });
    var actions = el("td", { "class": "actions" });
    actions.appendChild(actionForm(call.sid, "hangup"));
    actions.appendChild(actionForm(call.sid, "transfer"));
    tr.appendChild(actions);
    return tr;
  }

  function setText(tr, field, text) {
    var td = tr.querySelector('[data-field="' + field + '"]');
    if (td.textContent !== text) td.textContent = text;
  }

  function update(calls) {
    var seen = {};
    calls.forEach(function (call) {
      seen[call.sid] = true;
      var tr = body.querySelector('tr[data-sid="' + call.sid + '"]');
      if (!tr) { tr = newRow(call); body.appendChild(tr); }
      tr.setAttribute("data-started-ms", call.startedAtMs);
      setText(tr, "from", call.from);
      setText(tr, "to", call.to);
      setText(tr, "direction", call.direction);
      var phase = tr.querySelector('[data-field="phase"]');
      if (phase.textContent !== call.phase) {
        phase.textContent = "";
        phase.appendChild(el("span", { "class": "phase phase-" + call.phase }, call.phase));
      }
      setText(tr, "latency", call.lastLatencyMs === null ? "—" : call.lastLatencyMs.toFixed(1));
    });
    Array.prototype.slice.call(body.querySelectorAll("tr[data-sid]")).forEach(function (tr) {
      if (!seen[tr.getAttribute("data-sid")]) tr.remove();
    });
    document.getElementById("live-count").textContent = String(calls.length);
    document.getElementById("live-empty").hidden = calls.length > 0;
    tick();
  }

  function tick() {
    var now = Date.now();
    body.querySelectorAll("tr[data-sid]").forEach(function (tr) {
      setText(tr, "duration", fmtDuration(now - Number(tr.getAttribute("data-started-ms"))));
    });
  }

  body.addEventListener("submit", function (event) {
    var form = event.target;
    event.preventDefault();
    var data = new URLSearchParams(new FormData(form));
    fetch(form.action, {
      method: "POST", body: data, credentials: "same-origin",
      headers: { "Accept": "application/json", "X-CSRF-Token": csrf }
    }).then(function (r) { return r.json(); }).then(function (answer) {
      status.textContent = answer.detail;
    }).catch(function (err) { status.textContent = "Failed: " + err; });
  });

  var source = new EventSource(table.getAttribute("data-events"));
  source.addEventListener("calls", function (e) { update(JSON.parse(e.data)); });
  source.addEventListener("open", function () { table.setAttribute("data-connected", "yes"); });
  setInterval(tick, 1000);
})();
