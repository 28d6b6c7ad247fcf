// sitewatch review: keyboard shortcuts, verdict submission, swipe/flicker views, heatmap overlay,
// site marker and context view, copying coordinates. (The run map has its own script, map.js.)
// No inline scripts (the Content-Security-Policy forbids them); page data comes in data- attributes.
(function () {
  "use strict";
  var csrf = (document.querySelector('meta[name="csrf-token"]') || {}).content || "";
  var page = document.body.getAttribute("data-page");

  function typing(ev) {
    var t = ev.target;
    return t && (t.tagName === "TEXTAREA" || t.tagName === "INPUT" && t.type !== "checkbox" && t.type !== "range");
  }

  if (page === "queue") {
    document.addEventListener("keydown", function (ev) {
      if (typing(ev) || ev.ctrlKey || ev.metaKey || ev.altKey) return;
      var start = document.getElementById("start");
      if ((ev.key === "Enter" || ev.key === "o") && start) { ev.preventDefault(); window.location.href = start.href; }
      else if (ev.key === "p") { window.location.href = "/progress"; }
      else if (ev.key === "o") { window.location.href = "/map"; }
    });
    return;
  }
  if (page !== "site") return;

  var site = document.getElementById("site");
  var form = document.getElementById("verdict-form");
  var note = document.getElementById("note");
  var adjudicate = document.getElementById("adjudicate");
  var errorBox = document.getElementById("verdict-error");
  var viewer = document.getElementById("viewer");
  var heat = document.getElementById("img-heatmap");
  var heatToggle = document.getElementById("heatmap-toggle");
  var swipeFrame = document.getElementById("swipe-frame");
  var swipeRange = document.getElementById("swipe-range");
  var swipeAfter = document.getElementById("swipe-after");
  var afterImg = document.getElementById("img-after");
  var busy = false;
  var flickerTimer = null;

  function submitVerdict(verdict) {
    if (busy || !form) return;
    busy = true;
    var body = new URLSearchParams();
    body.set("verdict", verdict);
    body.set("note", note ? note.value : "");
    body.set("view", form.elements["view"].value);
    body.set("show", form.elements["show"].value);
    body.set("csrf", csrf);
    if (adjudicate && adjudicate.checked) body.set("adjudicate", "1");
    document.querySelectorAll('#part-marks input[type="checkbox"]').forEach(function (box) {
      if (box.checked) body.set(box.name, "on");
    });
    fetch(form.getAttribute("action"), {
      method: "POST",
      headers: { "Accept": "application/json", "X-CSRF-Token": csrf,
                 "Content-Type": "application/x-www-form-urlencoded" },
      body: body.toString(),
      credentials: "same-origin"
    }).then(function (r) {
      return r.json().catch(function () { return { ok: false, error: "HTTP " + r.status }; });
    }).then(function (data) {
      if (data.ok) { window.location.href = data.next; return; }
      busy = false;
      errorBox.textContent = "Not saved: " + (data.error || "unknown error");
      errorBox.classList.remove("hidden");
    }).catch(function (e) {
      busy = false;
      errorBox.textContent = "Not saved: " + e;
      errorBox.classList.remove("hidden");
    });
  }

  if (form) {
    form.addEventListener("submit", function (ev) {
      var btn = ev.submitter;
      if (!btn || !btn.value) return;  // let the browser post the form
      ev.preventDefault();
      submitVerdict(btn.value);
    });
  }

  // -- view modes, site marker, context view -------------------------------------------------
  var contextOn = false;
  function chipSrc(img) { return img.getAttribute(contextOn ? "data-context" : "data-chip"); }
  function currentSrc(id) { var img = document.getElementById(id); return img ? chipSrc(img) : ""; }

  function setMode(mode) {
    if (!viewer) return;
    viewer.setAttribute("data-mode", mode);
    if (flickerTimer) { clearInterval(flickerTimer); flickerTimer = null; }
    var side = mode === "side" || mode === "flicker";
    document.querySelectorAll(".frame.before").forEach(function (f) { f.classList.toggle("hidden", mode !== "side"); });
    if (swipeFrame) swipeFrame.classList.toggle("hidden", mode !== "swipe");
    document.querySelectorAll(".frame.after").forEach(function (f) { f.classList.toggle("hidden", !side); });
    if (mode === "flicker" && afterImg) {
      var showingAfter = true;
      flickerTimer = setInterval(function () {
        showingAfter = !showingAfter;
        afterImg.setAttribute("src", showingAfter ? currentSrc("img-after") : currentSrc("img-before"));
        afterImg.alt = showingAfter ? "after" : "before";
      }, 500);
    } else if (afterImg) {
      afterImg.setAttribute("src", currentSrc("img-after"));
      afterImg.alt = "after";
    }
    document.querySelectorAll("[data-mode-button]").forEach(function (b) {
      b.classList.toggle("active", b.getAttribute("data-mode-button") === mode);
    });
  }
  var modes = ["side", "swipe", "flicker"];
  document.querySelectorAll("[data-mode-button]").forEach(function (b) {
    b.addEventListener("click", function () { setMode(b.getAttribute("data-mode-button")); });
  });
  function setSwipe(pct) {
    if (!swipeAfter) return;
    pct = Math.max(0, Math.min(100, pct));
    swipeRange.value = String(pct);
    swipeAfter.style.clipPath = "inset(0 " + (100 - pct) + "% 0 0)";
  }
  if (swipeRange) { swipeRange.addEventListener("input", function () { setSwipe(Number(swipeRange.value)); }); setSwipe(50); }
  function toggleHeat(force) {
    if (!heat) return;
    var on = typeof force === "boolean" ? force : heat.classList.contains("hidden");
    if (contextOn) on = false;  // the heatmap belongs to the chip, not the context view
    heat.classList.toggle("hidden", !on);
    if (heatToggle) heatToggle.checked = on;
  }
  if (heatToggle) heatToggle.addEventListener("change", function () { toggleHeat(heatToggle.checked); });

  var markerToggle = document.getElementById("marker-toggle");
  function setMarker(on) {
    if (!viewer) return;
    viewer.setAttribute("data-marker", on ? "on" : "off");
    if (markerToggle) markerToggle.checked = on;
    try { window.localStorage.setItem("sw-marker", on ? "on" : "off"); } catch (e) { /* private mode */ }
  }
  if (markerToggle) markerToggle.addEventListener("change", function () { setMarker(markerToggle.checked); });
  var savedMarker = null;
  try { savedMarker = window.localStorage.getItem("sw-marker"); } catch (e) { savedMarker = null; }
  if (viewer) setMarker(savedMarker !== "off");

  var contextToggle = document.getElementById("context-toggle");
  var contextFailed = document.getElementById("context-failed");
  function setContext(on) {
    if (!viewer || (contextToggle && contextToggle.disabled)) return;
    contextOn = on;
    viewer.setAttribute("data-context", on ? "on" : "off");
    if (contextToggle) contextToggle.checked = on;
    document.querySelectorAll("#viewer img[data-chip]").forEach(function (img) { img.setAttribute("src", chipSrc(img)); });
    document.querySelectorAll("#viewer svg[data-view-chip]").forEach(function (svg) {
      svg.setAttribute("viewBox", svg.getAttribute(on ? "data-view-context" : "data-view-chip"));
    });
    if (on) toggleHeat(false);
    setMode(viewer.getAttribute("data-mode") || "side");
  }
  if (contextToggle) contextToggle.addEventListener("change", function () { setContext(contextToggle.checked); });
  if (viewer) setMode("side");
  document.querySelectorAll("#viewer img").forEach(function (img) {
    img.addEventListener("error", function () {
      if (contextOn && img.getAttribute("data-context")) {
        // say why (the server answers in words), and go back to the chip
        fetch(img.getAttribute("data-context"), { credentials: "same-origin" }).then(function (r) { return r.text(); })
          .then(function (text) { if (contextFailed) { contextFailed.textContent = text; contextFailed.classList.remove("hidden"); } });
        if (contextToggle) { contextToggle.checked = false; contextToggle.disabled = true; }
        contextOn = false;
        viewer.setAttribute("data-context", "off");
        document.querySelectorAll("#viewer img[data-chip]").forEach(function (i) { i.setAttribute("src", chipSrc(i)); });
        document.querySelectorAll("#viewer svg[data-view-chip]").forEach(function (svg) { svg.setAttribute("viewBox", svg.getAttribute("data-view-chip")); });
        return;
      }
      var failed = document.getElementById("chip-failed");
      var frames = viewer.querySelector(".frames");
      if (failed) failed.classList.remove("hidden");
      if (frames) frames.classList.add("hidden");
    });
  });

  // -- a facility's parts: overlay on/off, marking damaged parts (click a box or tick it) -------
  var partsToggle = document.getElementById("parts-toggle");
  function setParts(on) {
    if (!viewer || !partsToggle) return;
    viewer.setAttribute("data-parts", on ? "on" : "off");
    partsToggle.checked = on;
  }
  if (partsToggle) partsToggle.addEventListener("change", function () { setParts(partsToggle.checked); });
  function partBoxes(name) { return document.querySelectorAll('#viewer svg.parts .part[data-part="' + name + '"]'); }
  function showMark(box) {
    var name = box.name.slice("part:".length);
    partBoxes(name).forEach(function (g) { g.classList.toggle("marked", box.checked); });
  }
  document.querySelectorAll('#part-marks input[type="checkbox"]').forEach(function (box) {
    var name = box.name.slice("part:".length);
    box.addEventListener("change", function () { showMark(box); });
    box.addEventListener("focus", function () { partBoxes(name).forEach(function (g) { g.classList.add("focus"); }); });
    box.addEventListener("blur", function () { partBoxes(name).forEach(function (g) { g.classList.remove("focus"); }); });
    showMark(box);
  });
  document.querySelectorAll("#viewer svg.parts .part").forEach(function (g) {
    g.addEventListener("click", function () {
      var box = document.getElementById("part-" + g.getAttribute("data-part"));
      if (!box) return;
      box.checked = !box.checked;
      showMark(box);
    });
  });

  // -- coordinates: copy decimal or DMS -------------------------------------------------------
  document.querySelectorAll("button[data-copy]").forEach(function (b) {
    b.addEventListener("click", function () {
      var field = document.getElementById(b.getAttribute("data-copy"));
      var shown = document.getElementById("copied");
      function done() { if (shown) { shown.textContent = "copied: " + field.value; shown.classList.remove("hidden"); } }
      field.select();
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(field.value).then(done, function () { if (document.execCommand("copy")) done(); });
      } else if (document.execCommand("copy")) { done(); }
    });
  });

  var keyToVerdict = {};
  document.querySelectorAll("#verdict-form button[data-key]").forEach(function (b) {
    keyToVerdict[b.getAttribute("data-key")] = b.value;
  });
  function go(attr) { var url = site.getAttribute(attr); if (url) window.location.href = url; }

  document.addEventListener("keydown", function (ev) {
    if (ev.key === "Escape" && (typing(ev) || ev.target && ev.target.closest && ev.target.closest("#part-marks"))) { ev.target.blur(); ev.preventDefault(); return; }
    if (typing(ev) || ev.ctrlKey || ev.metaKey || ev.altKey) return;
    var k = ev.key;
    if (Object.prototype.hasOwnProperty.call(keyToVerdict, k)) { ev.preventDefault(); submitVerdict(keyToVerdict[k]); }
    else if (k === "x") { ev.preventDefault(); submitVerdict("cannot_assess"); }
    else if (k === "n") { ev.preventDefault(); if (note) note.focus(); }
    else if (k === "a") { if (adjudicate) adjudicate.checked = !adjudicate.checked; }
    else if (k === "v") { var cur = viewer ? viewer.getAttribute("data-mode") : "side"; setMode(modes[(modes.indexOf(cur) + 1) % modes.length]); }
    else if (k === "h") { toggleHeat(); }
    else if (k === "[") { setSwipe(Number(swipeRange ? swipeRange.value : 50) - 10); }
    else if (k === "]") { setSwipe(Number(swipeRange ? swipeRange.value : 50) + 10); }
    else if (k === "j" || k === "ArrowRight") { go("data-next"); }
    else if (k === "k" || k === "ArrowLeft") { go("data-prev"); }
    else if (k === "g") { go("data-queue"); }
    else if (k === "p") { window.location.href = "/progress"; }
    else if (k === "m") { var m = site.getAttribute("data-map"); if (m) window.open(m, "_blank", "noopener,noreferrer"); }
    else if (k === "o") { go("data-run-map"); }
    else if (k === "s") { setMarker(viewer && viewer.getAttribute("data-marker") === "off"); }
    else if (k === "z") { setContext(!contextOn); }
    else if (k === "b") { if (partsToggle) setParts(viewer.getAttribute("data-parts") === "off"); }
    else if (k === "d") { var first = document.querySelector('#part-marks input[type="checkbox"]'); if (first) { ev.preventDefault(); first.focus(); } }
    else if (k === "?") { var d = document.getElementById("keys-help"); if (d) d.open = !d.open; }
  });
})();
