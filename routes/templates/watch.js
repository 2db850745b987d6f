(function () {
  "use strict";
  var android = /Android/i.test(navigator.userAgent);
  var status = document.getElementById("status");

  function say(message) {
    status.textContent = message;
  }

  // execCommand is deprecated but is the only way to copy on plain-http pages, where
  // navigator.clipboard does not exist (it needs a secure context).
  function fallbackCopy(text, done) {
    var area = document.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.className = "offscreen";
    document.body.appendChild(area);
    area.select();
    var ok = false;
    try {
      ok = document.execCommand("copy");
    } catch (err) {
      ok = false;
    }
    document.body.removeChild(area);
    if (ok) {
      say(done);
    } else {
      document.getElementById("link").select();
      say("Copying is blocked here: the link is selected, copy it by hand.");
    }
  }

  function copy(text, done) {
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(
        function () { say(done); },
        function () { fallbackCopy(text, done); }
      );
    } else {
      fallbackCopy(text, done);
    }
  }

  var copyButton = document.getElementById("copy");
  copyButton.addEventListener("click", function () {
    copy(copyButton.getAttribute("data-url"), "Link copied.");
  });
  document.getElementById("link").addEventListener("focus", function (event) {
    event.target.select();
  });

  // VLC: vlc://URL is what VLC for iOS (and desktop URL handlers) understand; on Android the
  // documented way in is an intent for org.videolan.vlc.
  var vlc = document.getElementById("open-vlc");
  if (vlc && android) {
    vlc.setAttribute("href", vlc.getAttribute("data-android"));
  }
  // mpv registers no URL scheme on desktops, so there the button copies a command line.
  var mpv = document.getElementById("open-mpv");
  if (mpv && !android) {
    mpv.addEventListener("click", function (event) {
      event.preventDefault();
      copy(mpv.getAttribute("data-command"), "mpv command copied: paste it into a terminal.");
    });
  }

  var media = document.getElementById("player") || document.getElementById("picture");
  function unplayable() {
    document.getElementById("unplayable").hidden = false;
  }
  if (media) {
    media.addEventListener("error", unplayable);
    // The error may have happened before this script ran.
    if (media.error || (media.tagName === "IMG" && media.complete && !media.naturalWidth)) {
      unplayable();
    }
  }
})();
