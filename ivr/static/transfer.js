// One transfer's live status. Logged in, it polls the desk's JSON endpoint with the session
// cookie; otherwise it asks for the agent's bearer token (kept in this tab's sessionStorage)
// and polls the JSON API with it.
(function () {
  "use strict";
  var KEY = "ivr.agentToken";
  var box = document.getElementById("transfer");
  var SESSION = box.dataset.mode === "session";
  var URL = box.dataset.source;
  var ORDER = ["requested", "in_flow", "decided", "returned"];
  // The page's language: its words come from the server, which translated them.
  var T = JSON.parse(box.dataset.texts || "{}");
  var LABEL = T.progress || {};
  function say(key, args) {
    var s = T[key] || key;
    Object.keys(args || {}).forEach(function (k) { s = s.replace("{" + k + "}", args[k]); });
    return s;
  }
  var timer = null;
  function $(id) { return document.getElementById(id); }
  function text(id, value) { $(id).textContent = value == null ? "—" : String(value); }
  function when(iso) {  // shown as the auditor pages show times: Istanbul time
    return iso ? new Date(iso).toLocaleString("tr-TR", {timeZone: "Europe/Istanbul"}) : null;
  }
  function where(r) {
    if (!r) return null;
    if (r.type === "queue") return say("queue", {name: r.name});
    if (r.type === "dial") return say("dial", {target: r.number || r.client});
    return say("end");
  }
  function ask(message) {
    clearTimeout(timer);
    $("view").hidden = true;
    if (!SESSION) $("token-form").hidden = false;
    text("message", message || "");
  }
  function show(t) {
    $("token-form").hidden = true;
    $("view").hidden = false;
    text("message", "");
    text("status", LABEL[t.status] || t.status);
    $("status").className = t.status === "failed" ? "failed" : "";
    $("status").dataset.status = t.status;
    text("decision", t.decision && ((T.decisions || {})[t.decision] || t.decision));
    text("call_sid", t.call_sid);
    text("return_to", where(t.return_to));
    ["requested_at", "redirected_at", "in_flow_at", "decided_at", "returned_at",
     "failed_at"].forEach(function (k) {
      text(k, when(t[k]));
      $(k).title = t[k] ? "UTC " + t[k] : "";  // the UTC instant on hover, as everywhere
    });
    var reached = t.status === "failed" ? -1 : ORDER.indexOf(t.status);
    document.querySelectorAll("ol.steps li").forEach(function (li, i) {
      li.className = i < reached ? "done" : (i === reached ? "now" : "");
    });
    $("error").hidden = !t.error;
    if (t.error) {
      text("error", ((T.reasons || {})[t.error.reason] || t.error.message) + (t.error.twilio_code ?
           " " + say("twilio_error", {code: t.error.twilio_code}) : ""));
    }
    text("updated", say("updated", {when: when(new Date().toISOString())}));
  }
  function request() {
    if (SESSION) {
      return fetch(URL, {headers: {"Accept": "application/json"}, cache: "no-store",
                         credentials: "same-origin"});
    }
    return fetch(URL, {headers: {"Authorization": "Bearer " + sessionStorage.getItem(KEY),
                                 "Accept": "application/json"},
                       cache: "no-store", credentials: "omit"});
  }
  function poll() {
    if (!SESSION && !sessionStorage.getItem(KEY)) { ask(); return; }
    request()
      .then(function (r) {
        return r.json().catch(function () { return {}; }).then(function (body) {
          return {status: r.status, body: body};
        });
      })
      .then(function (res) {
        if (res.status === 401) {
          if (SESSION) { window.location.reload(); return; }
          sessionStorage.removeItem(KEY);
          ask(say("token_refused"));
          return;
        }
        if (res.status !== 200) {
          ask(res.body.message || say("server_answered", {status: res.status}));
          return;
        }
        show(res.body);
        if (res.body.status !== "returned" && res.body.status !== "failed") {
          timer = setTimeout(poll, 2000);
        }
      })
      .catch(function () {
        text("message", say("unreachable"));
        timer = setTimeout(poll, 5000);
      });
  }
  $("token-form").addEventListener("submit", function (ev) {
    ev.preventDefault();
    var token = $("token").value.trim();
    if (!token) return;
    sessionStorage.setItem(KEY, token);
    $("token").value = "";
    poll();
  });
  if ($("forget")) {
    $("forget").addEventListener("click", function () {
      sessionStorage.removeItem(KEY);
      ask();
    });
  }
  poll();
})();
