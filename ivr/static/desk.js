// The agent desk: keeps the transfer list current by polling the desk's JSON endpoint
// (with the session cookie) every 2 s while a transfer is still on its way.
(function () {
  "use strict";
  var LIVE = ["requested", "in_flow", "decided"];
  var section = document.getElementById("transfers");
  var rows = document.getElementById("transfer-rows");
  if (!section || !rows) return;
  var source = section.dataset.source;
  // The page's language: its words come from the server, which translated them.
  var T = JSON.parse(section.dataset.texts || "{}");
  function say(key, args) {
    var s = T[key] || key;
    Object.keys(args || {}).forEach(function (k) { s = s.replace("{" + k + "}", args[k]); });
    return s;
  }

  function when(iso) {
    var t = document.createElement("time");
    if (!iso) { t.textContent = "—"; return t; }
    t.dateTime = iso;
    t.title = "UTC " + iso;
    t.textContent = new Date(iso).toLocaleString("tr-TR", {timeZone: "Europe/Istanbul"});
    return t;
  }
  function where(r) {
    if (r.type === "queue") return say("queue", {name: r.name});
    if (r.type === "dial") return say("dial", {target: r.number || r.client});
    return say("end");
  }
  function cell(tr, content, cls) {
    var td = document.createElement("td");
    if (cls) td.className = cls;
    if (typeof content === "string") td.textContent = content; else td.appendChild(content);
    tr.appendChild(td);
  }
  function row(t) {
    var tr = document.createElement("tr");
    tr.dataset.transfer = t.id;
    tr.dataset.status = t.status;
    cell(tr, when(t.requested_at));
    cell(tr, t.call_sid, "sid");
    cell(tr, where(t.return_to));
    cell(tr, ((T.statuses || {})[t.status] || t.status) + (t.error ? ": " + ((T.reasons || {})[t.error.reason] || t.error.message) : ""),
         "status" + (t.status === "failed" ? " failed" : ""));
    var decision = document.createElement("span");
    if (t.decision) {
      decision.className = "decision " + t.decision;
      decision.textContent = (T.decisions || {})[t.decision] || t.decision;
      cell(tr, decision, "decision-cell");
    } else {
      cell(tr, "—", "decision-cell");
    }
    var link = document.createElement("a");
    link.href = t.page_url;
    link.textContent = say("details");
    cell(tr, link);
    return tr;
  }
  function live() {
    return Array.prototype.some.call(rows.querySelectorAll("tr[data-status]"), function (tr) {
      return LIVE.indexOf(tr.dataset.status) >= 0;
    });
  }
  function show(list) {
    var fresh = document.createDocumentFragment();
    list.forEach(function (t) { fresh.appendChild(row(t)); });
    if (!list.length) {
      var tr = document.createElement("tr");
      tr.className = "none-row";
      cell(tr, say("none"), "none");
      tr.firstChild.colSpan = 6;
      fresh.appendChild(tr);
    }
    rows.replaceChildren(fresh);
    document.getElementById("updated").textContent = say("updated", {
      when: new Date().toLocaleString("tr-TR", {timeZone: "Europe/Istanbul"})});
  }
  function poll() {
    fetch(source, {headers: {"Accept": "application/json"}, cache: "no-store",
                   credentials: "same-origin"})
      .then(function (r) {
        if (r.status === 401) { window.location.reload(); return null; }
        return r.ok ? r.json() : null;
      })
      .then(function (body) {
        if (body) show(body.transfers);
        if (live()) setTimeout(poll, 2000);
      })
      .catch(function () { setTimeout(poll, 5000); });
  }
  if (live()) setTimeout(poll, 2000);
})();
