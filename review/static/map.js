// sitewatch review: the run map. Every site as a point on a canvas (fast with 10,000 sites), over
// the picture of the after scenes; click or Enter opens a site, arrows move to the nearest site.
(function () {
  "use strict";
  var root = document.getElementById("run-map");
  if (!root) return;
  var canvas = document.getElementById("map-canvas");
  var wrap = document.getElementById("map-wrap");
  var tip = document.getElementById("map-tip");
  var info = document.getElementById("map-selected");
  var legend = document.getElementById("map-legend");
  var note = document.getElementById("map-note");
  var ctx = canvas.getContext("2d");
  var t0 = performance.now();

  var BAND_COLOURS = ["#b10026", "#fd8d3c", "#ffeda0", "#2c7fb8"];
  var VERDICT_COLOURS = {
    "destroyed": "#d7191c", "major-damage": "#fdae61", "minor-damage": "#ffffbf", "no-damage": "#1a9641",
    "un-classified": "#7b3294", "cannot_assess": "#999999", "disputed": "#ff00ff", "undecided": "#dddddd",
    "hidden": "#ffffff", "": null
  };
  var VERDICT_LABELS = [["destroyed", "destroyed"], ["major-damage", "major damage"], ["minor-damage", "minor damage"],
    ["no-damage", "no damage"], ["un-classified", "un-classified"], ["cannot_assess", "cannot assess"],
    ["disputed", "disputed"], ["undecided", "tied"], ["hidden", "reviewed (hidden until you review it)"], ["", "not reviewed"]];

  var S = null;           // sites (columns) from /api/map
  var n = 0, px, py;      // picture coordinates of each site (NaN without coordinates)
  var order = [];         // site positions by score, highest first
  var posInOrder = {};
  var extent = null, picture = null;
  var colourBy = "score", edges = [], threshold = 0.5;
  var selected = -1;      // position in the columns, not the site index
  var view = { s: 1, ox: 0, oy: 0 };
  var cssW = 0, cssH = 0, dpr = window.devicePixelRatio || 1;
  var drawQueued = false;

  function bandOf(i) {
    var sc = S.score[i];
    if (sc === null || S.status[i] !== "ok") return -1;
    for (var k = 0; k < edges.length; k++) if (sc >= edges[k]) return k;
    return edges.length;
  }
  function colourOf(i) {
    if (colourBy === "verdict") return VERDICT_COLOURS[S.verdict[i]];
    var b = bandOf(i);
    return b < 0 ? "#999999" : BAND_COLOURS[b];
  }
  function fmt(x, d) { return x === null ? "–" : x.toFixed(d); }
  function scoreText(p) {
    if (p === null) return "–";
    var tail = Math.min(p, 1 - p);
    var d = tail >= 0.01 ? 3 : Math.min(7, Math.max(3, Math.floor(-Math.log10(Math.max(tail, 1e-300))) + 2));
    return p.toFixed(d);
  }

  function buildLegend() {
    legend.textContent = "";
    function item(colour, label, hollow) {
      var dot = document.createElement("span");
      dot.className = "dot";
      dot.style.background = colour || "transparent";
      if (hollow) dot.style.borderStyle = "dashed";
      legend.appendChild(dot);
      legend.appendChild(document.createTextNode(label));
    }
    if (colourBy === "score") {
      var labels = [];
      for (var k = 0; k <= edges.length; k++) {
        var lo = k < edges.length ? edges[k] : 0, hi = k === 0 ? 1 : edges[k - 1];
        var text = k === 0 ? "≥ " + lo : (k === edges.length ? "< " + hi : lo + " – " + hi);
        labels.push(text + (lo >= threshold ? " (flagged)" : ""));
      }
      labels.forEach(function (l, k) { item(BAND_COLOURS[k], l); });
      item("#999999", "cannot assess");
    } else {
      VERDICT_LABELS.forEach(function (v) { item(VERDICT_COLOURS[v[0]], v[1], v[0] === ""); });
    }
  }

  function toScreen(i) { return [view.ox + px[i] * view.s, view.oy + py[i] * view.s]; }
  function fit() {
    view.s = Math.min(cssW / extent.width, cssH / extent.height);
    view.ox = (cssW - extent.width * view.s) / 2;
    view.oy = (cssH - extent.height * view.s) / 2;
  }
  function resize() {
    cssW = Math.max(320, Math.min(wrap.clientWidth || 1000, 1600));
    cssH = Math.max(240, Math.min(Math.round(window.innerHeight * 0.72), Math.round(cssW * extent.height / extent.width)));
    canvas.width = Math.round(cssW * dpr);
    canvas.height = Math.round(cssH * dpr);
    canvas.style.width = cssW + "px";
    canvas.style.height = cssH + "px";
  }
  function queueDraw() { if (!drawQueued) { drawQueued = true; requestAnimationFrame(draw); } }
  function draw() {
    drawQueued = false;
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.fillStyle = "#333";
    ctx.fillRect(0, 0, cssW, cssH);
    if (picture) ctx.drawImage(picture, view.ox, view.oy, extent.width * view.s, extent.height * view.s);
    // one path per colour: thousands of points in a few fills
    var groups = {};
    for (var i = 0; i < n; i++) {
      if (isNaN(px[i])) continue;
      var c = colourOf(i);
      var key = c === null ? "none" : c;
      (groups[key] = groups[key] || []).push(i);
    }
    var r = view.s * Math.max(extent.width, extent.height) > 4000 ? 5 : 4;
    Object.keys(groups).forEach(function (key) {
      ctx.beginPath();
      var rk = key === "none" ? r - 1.5 : r;  // not reviewed: a faint small ring, so reviewed sites stand out
      groups[key].forEach(function (i) {
        var p = toScreen(i);
        if (p[0] < -r || p[1] < -r || p[0] > cssW + r || p[1] > cssH + r) return;
        ctx.moveTo(p[0] + rk, p[1]);
        ctx.arc(p[0], p[1], rk, 0, 2 * Math.PI);
      });
      if (key !== "none") { ctx.fillStyle = key; ctx.fill(); }
      ctx.lineWidth = 1;
      ctx.strokeStyle = key === "none" ? "rgba(255,255,255,.45)" : "rgba(0,0,0,.85)";
      ctx.stroke();
    });
    if (selected >= 0 && !isNaN(px[selected])) {
      var q = toScreen(selected);
      ctx.beginPath(); ctx.arc(q[0], q[1], 10, 0, 2 * Math.PI);
      ctx.lineWidth = 4; ctx.strokeStyle = "#000"; ctx.stroke();
      ctx.lineWidth = 2; ctx.strokeStyle = "#fff"; ctx.stroke();
    }
    if (root.getAttribute("data-ready") !== "1") {
      root.setAttribute("data-ready", "1");
      window.swMapTimings = { ready_ms: performance.now() - t0, sites: n };
    }
  }

  function describe(i) {
    var parts = ["#" + (S.rank[i] || "–"), S.id[i]];
    if (S.name[i]) parts.push(S.name[i]);
    parts.push("score " + scoreText(S.score[i]) + (S.flagged[i] ? " (flagged)" : ""));
    if (S.status[i] !== "ok") parts.push("cannot assess");
    var v = S.verdict[i];
    parts.push(v === "" ? "not reviewed" : v === "hidden" ? "reviewed by others (hidden)" : "decision: " + v);
    return parts.join(" · ");
  }
  function select(i, follow) {
    if (i < 0 || i >= n) return;
    selected = i;
    info.textContent = describe(i) + " — Enter opens it";
    info.setAttribute("data-index", String(S.index[i]));
    if (follow && !isNaN(px[i])) {
      var p = toScreen(i);
      if (p[0] < 30 || p[1] < 30 || p[0] > cssW - 30 || p[1] > cssH - 30) {
        view.ox += cssW / 2 - p[0]; view.oy += cssH / 2 - p[1];
      }
    }
    queueDraw();
  }
  function nearestAt(x, y, maxPx) {
    var best = -1, bestD = maxPx * maxPx;
    for (var i = 0; i < n; i++) {
      if (isNaN(px[i])) continue;
      var p = toScreen(i), dx = p[0] - x, dy = p[1] - y, d = dx * dx + dy * dy;
      if (d <= bestD) { bestD = d; best = i; }
    }
    return best;
  }
  function nearestToward(dx, dy) {
    if (selected < 0 || isNaN(px[selected])) { select(order.length ? order[0] : 0, true); return; }
    var best = -1, bestCost = Infinity, x0 = px[selected], y0 = py[selected];
    for (var i = 0; i < n; i++) {
      if (i === selected || isNaN(px[i])) continue;
      var ex = px[i] - x0, ey = py[i] - y0;
      var along = ex * dx + ey * dy;
      if (along <= 0) continue;
      var across = Math.abs(ex * dy - ey * dx);
      if (across > 2 * along) continue;  // within about 63 degrees of the direction
      var cost = along + 2 * across;
      if (cost < bestCost) { bestCost = cost; best = i; }
    }
    if (best >= 0) select(best, true);
  }
  function open(i) { if (i >= 0) window.location.href = "/site/" + S.index[i]; }
  function zoom(factor, cx, cy) {
    view.ox = cx - (cx - view.ox) * factor;
    view.oy = cy - (cy - view.oy) * factor;
    view.s *= factor;
    queueDraw();
  }
  function zoomCentre() {
    if (selected >= 0 && !isNaN(px[selected])) return toScreen(selected);
    return [cssW / 2, cssH / 2];
  }
  function setColour(mode) {
    colourBy = mode;
    document.querySelectorAll("[data-colour]").forEach(function (b) { b.classList.toggle("active", b.getAttribute("data-colour") === mode); });
    buildLegend();
    queueDraw();
  }

  function loadPicture(tries) {
    // ask whether the picture is made before loading it (it is made in the background at start-up)
    fetch("/map/overview-status", { credentials: "same-origin" }).then(function (r) { return r.json(); }).then(function (st) {
      if (st.status === "building" && tries > 0) {
        if (note) note.textContent = "The picture of the after scenes is being made from the run's rasters; sites are shown meanwhile.";
        setTimeout(function () { loadPicture(tries - 1); }, 1500);
        return;
      }
      if (st.status !== "ready") { root.setAttribute("data-overview", "none"); if (note) note.textContent = st.note; return; }
      var img = new Image();
      img.onload = function () { picture = img; root.setAttribute("data-overview", "ready"); if (note) note.textContent = ""; queueDraw(); };
      img.onerror = function () { root.setAttribute("data-overview", "none"); };
      img.src = "/map/overview.jpg";
    });
  }

  fetch("/api/map", { credentials: "same-origin", headers: { "Accept": "application/json" } })
    .then(function (r) { return r.json(); })
    .then(function (data) {
      S = data.sites;
      n = S.index.length;
      threshold = data.threshold;
      edges = [0.9, threshold, 0.1].filter(function (e, k, a) { return a.indexOf(e) === k; }).sort(function (a, b) { return b - a; });
      extent = data.extent || { west: 0, south: 0, east: 1, north: 1, width: 1000, height: 700 };
      px = new Float64Array(n); py = new Float64Array(n);
      for (var i = 0; i < n; i++) {
        if (S.lon[i] === null || S.lat[i] === null || !data.extent) { px[i] = NaN; py[i] = NaN; continue; }
        px[i] = (S.lon[i] - extent.west) / (extent.east - extent.west) * extent.width;
        py[i] = (extent.north - S.lat[i]) / (extent.north - extent.south) * extent.height;
        posInOrder[S.index[i]] = i;
      }
      order = [];
      for (i = 0; i < n; i++) order.push(i);
      order.sort(function (a, b) {
        var sa = S.status[a] === "ok" && S.score[a] !== null ? S.score[a] : -1;
        var sb = S.status[b] === "ok" && S.score[b] !== null ? S.score[b] : -1;
        return sb - sa || a - b;
      });
      resize(); fit(); buildLegend();
      var want = root.getAttribute("data-selected");
      if (want !== "" && posInOrder[Number(want)] !== undefined) select(posInOrder[Number(want)], true);
      draw();
      if (data.overview.status !== "none") loadPicture(200); else root.setAttribute("data-overview", "none");
    });

  // for tests and scripts: where a site is drawn (CSS pixels in the canvas), which one is selected
  window.swMap = {
    screenOf: function (siteIndex) {
      var i = posInOrder[siteIndex];
      return i === undefined || isNaN(px[i]) ? null : toScreen(i);
    },
    selectedIndex: function () { return selected >= 0 ? S.index[selected] : null; }
  };

  canvas.addEventListener("click", function (ev) {
    if (dragged) return;
    var rect = canvas.getBoundingClientRect();
    var i = nearestAt(ev.clientX - rect.left, ev.clientY - rect.top, 9);
    if (i >= 0) { select(i, false); open(i); }
  });
  var dragging = false, dragged = false, lastX = 0, lastY = 0;
  canvas.addEventListener("mousedown", function (ev) { dragging = true; dragged = false; lastX = ev.clientX; lastY = ev.clientY; });
  window.addEventListener("mouseup", function () { dragging = false; setTimeout(function () { dragged = false; }, 0); });
  canvas.addEventListener("mousemove", function (ev) {
    if (!S) return;
    if (dragging) {
      var dx = ev.clientX - lastX, dy = ev.clientY - lastY;
      if (Math.abs(dx) + Math.abs(dy) > 2) dragged = true;
      view.ox += dx; view.oy += dy; lastX = ev.clientX; lastY = ev.clientY;
      queueDraw();
      return;
    }
    var rect = canvas.getBoundingClientRect();
    var x = ev.clientX - rect.left, y = ev.clientY - rect.top;
    var i = nearestAt(x, y, 9);
    if (i < 0) { tip.classList.add("hidden"); return; }
    tip.textContent = describe(i);
    tip.style.left = Math.min(x + 12, cssW - 200) + "px";
    tip.style.top = (y + 12) + "px";
    tip.classList.remove("hidden");
  });
  canvas.addEventListener("mouseleave", function () { tip.classList.add("hidden"); });
  canvas.addEventListener("wheel", function (ev) {
    ev.preventDefault();
    var rect = canvas.getBoundingClientRect();
    zoom(ev.deltaY < 0 ? 1.25 : 0.8, ev.clientX - rect.left, ev.clientY - rect.top);
  }, { passive: false });
  document.querySelectorAll("[data-colour]").forEach(function (b) {
    b.addEventListener("click", function () { setColour(b.getAttribute("data-colour")); });
  });
  window.addEventListener("resize", function () { if (S) { resize(); queueDraw(); } });

  document.addEventListener("keydown", function (ev) {
    if (!S || ev.ctrlKey || ev.metaKey || ev.altKey) return;
    var k = ev.key, pan = 80;
    var dirs = { ArrowLeft: [-1, 0], ArrowRight: [1, 0], ArrowUp: [0, -1], ArrowDown: [0, 1] };
    if (dirs[k]) {
      ev.preventDefault();
      if (ev.shiftKey) { view.ox -= dirs[k][0] * pan; view.oy -= dirs[k][1] * pan; queueDraw(); }
      else nearestToward(dirs[k][0], dirs[k][1]);
    } else if (k === "n" || k === "p") {
      var at = selected >= 0 ? order.indexOf(selected) : -1;
      var next = k === "n" ? Math.min(order.length - 1, at + 1) : Math.max(0, at - 1);
      select(order[next], true);
    } else if (k === "Enter") { ev.preventDefault(); open(selected); }
    else if (k === "+" || k === "=") { var c = zoomCentre(); zoom(1.5, c[0], c[1]); }
    else if (k === "-") { var d = zoomCentre(); zoom(1 / 1.5, d[0], d[1]); }
    else if (k === "0") { fit(); queueDraw(); }
    else if (k === "c") { setColour(colourBy === "score" ? "verdict" : "score"); }
    else if (k === "g") { window.location.href = "/queue"; }
  });
})();
