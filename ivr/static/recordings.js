// The call page's recording players: when one cannot play, say why, in the page's language.
// The server's error page (auditor/error.html) holds the sentence and the program's own
// words; the player's error event carries neither, so the same address is asked again.
(function () {
  "use strict";
  function show(audio, message, detail) {
    var box = document.querySelector('p.player-error[data-recording="' + audio.dataset.recording + '"]');
    if (!box) return;
    box.textContent = message;
    if (detail) {
      var small = document.createElement("small");
      var code = document.createElement("code");
      code.textContent = detail;
      small.append(" " + audio.dataset.details + ": ", code);
      box.append(small);
    }
    box.hidden = false;
  }
  function explain(audio) {
    var controller = new AbortController();
    fetch(audio.currentSrc || audio.src, {credentials: "same-origin", signal: controller.signal})
      .then(function (r) {
        if (r.ok) {  // the server had audio: the browser could not play it
          controller.abort();
          show(audio, audio.dataset.unplayable, r.headers.get("Content-Type"));
          return;
        }
        return r.text().then(function (html) {
          var doc = new DOMParser().parseFromString(html, "text/html");
          var message = doc.querySelector(".error[role=alert]");
          var detail = doc.querySelector(".detail code");
          show(audio, message ? message.textContent : audio.dataset.unplayable + " (HTTP " + r.status + ")",
               detail ? detail.textContent : "");
        });
      })
      .catch(function () { show(audio, audio.dataset.unplayable, ""); });
  }
  document.querySelectorAll("audio.recording").forEach(function (audio) {
    audio.addEventListener("error", function () { explain(audio); });
    audio.addEventListener("play", function () {
      var box = document.querySelector('p.player-error[data-recording="' + audio.dataset.recording + '"]');
      if (box) { box.hidden = true; box.textContent = ""; }
    });
  });
})();
