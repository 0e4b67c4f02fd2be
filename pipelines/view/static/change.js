// terrabeam's map viewer for a change folder: the two dates compared with a swipe (one map, the second
// date drawn right of a divider the user drags) or side by side (two maps that follow each other), the
// transitions between them with their areas, and both dates at a clicked pixel. viewer.js loads the
// page's info and hands a change over to terrabeamChange with the parts both pages share.
(function () {
  "use strict";

  // Panes of each map, between Leaflet's tile pane (200: the basemap) and its overlay pane (400: the
  // training data, the clicked pixel): a date's layers in its own pane, so that a swipe clips one pane.
  const PANES = { before: 250, after: 260, overlay: 270 };
  const ROLES = ["before", "after"];

  // Areas of a few hectares matter on a change map: keep decimals where they are small.
  function area(ha) {
    if (ha === null || ha === undefined) return "–";
    const size = Math.abs(ha);
    const digits = size >= 100 ? 0 : size >= 10 ? 1 : 2;
    return ha.toLocaleString("en-US", { minimumFractionDigits: digits, maximumFractionDigits: digits }) + " ha";
  }

  window.terrabeamChange = function (parts, info) {
    const { $, state, escapeHtml, percent, tileLayer } = parts;
    const dates = info.dates;
    const swatch = (color) => '<span class="swatch" style="background:' + color + '"></span>';
    const divider = $("swipe-divider");
    Object.assign(state, { info: info, mode: "swipe", swipe: 0.5, second: null, markers: [] });
    document.body.dataset.kind = "change";
    document.title = "terrabeam change " + dates.before.label + " → " + dates.after.label;
    document.querySelector("h1").textContent = "terrabeam change";
    $("subtitle").textContent = dates.before.label + " → " + dates.after.label + " · " + info.title + " · " +
      info.size[0] + "×" + info.size[1] + " px · " + info.crs;

    function makeMap(id, options) {
      // Whole zoom levels: fractional ones scale tiles in CSS, which leaves hairlines between them.
      const map = L.map(id, Object.assign({ zoomSnap: 1, maxZoom: info.maxzoom + 4, minZoom: Math.max(0, info.minzoom - 3) }, options));
      for (const [name, z] of Object.entries(PANES)) map.createPane(name).style.zIndex = String(z);
      L.control.scale({ imperial: false }).addTo(map);
      map.on("click", onClick);
      return map;
    }

    // --- layers: each one on the main map, on the second (side by side), or on both ------------------
    const opacity = () => parseFloat($("opacity").value);
    const checkboxes = {
      imagery: $("layer-imagery"),
      classes: $("layer-classes"),
      transitions: $("layer-transitions"),
      change_probability: $("layer-change-probability"),
      basemap: $("layer-basemap"),
    };
    const specs = info.layers.map((layer) => Object.assign({ instances: {} }, layer));
    if (info.basemap) specs.unshift({ id: "basemap", kind: "basemap", date: null, instances: {} });

    function instance(spec, which) {
      if (!spec.instances[which]) {
        if (spec.kind === "basemap") {
          spec.instances[which] = L.tileLayer(info.basemap.url, { attribution: info.basemap.attribution, maxZoom: 24, zIndex: 0 });
        } else {
          const drawn = spec.kind !== "imagery";
          spec.instances[which] = tileLayer(which === "main" ? spec.id : spec.id + "-2", "tiles/" + spec.id + "/{z}/{x}/{y}.png", info, {
            pane: spec.date || "overlay",
            zIndex: spec.kind === "imagery" ? 1 : spec.kind === "classes" ? 2 : spec.kind === "transitions" ? 3 : 4,
            opacity: drawn ? opacity() : 1,
            className: spec.kind === "classes" || spec.kind === "transitions" ? "pixelated" : "",
          });
        }
      }
      return spec.instances[which];
    }

    // Swipe: every layer on the main map, each date in its pane. Side by side: the first date's layers
    // on the main map, the second's on the other, the layers of both dates (transitions ...) on both.
    function refresh() {
      for (const spec of specs) {
        const on = checkboxes[spec.kind].checked;
        const wanted = {
          main: on && (state.mode === "swipe" || spec.date !== "after"),
          second: on && state.mode === "side" && spec.date !== "before",
        };
        for (const which of ["main", "second"]) {
          const map = which === "main" ? state.map : state.second;
          if (!map) continue;
          if (wanted[which]) {
            const layer = instance(spec, which);
            if (!map.hasLayer(layer)) layer.addTo(map);
          } else if (spec.instances[which] && map.hasLayer(spec.instances[which])) {
            spec.instances[which].remove();
          }
        }
      }
    }

    // --- the swipe --------------------------------------------------------------------------------
    // Each date's pane is clipped to its side of the divider. Panes sit in Leaflet's map pane, which
    // moves as the map pans, so the clip is set in layer points again after every move.
    function clipPanes() {
      const map = state.map;
      for (const role of ROLES) {
        const pane = map.getPane(role);
        if (state.mode !== "swipe") {
          pane.style.clipPath = "";
          continue;
        }
        const size = map.getSize();
        const x = Math.round(state.swipe * size.x);
        const nw = map.containerPointToLayerPoint(role === "after" ? [x, 0] : [0, 0]);
        const se = map.containerPointToLayerPoint(role === "after" ? [size.x, size.y] : [x, size.y]);
        const corners = [[nw.x, nw.y], [se.x, nw.y], [se.x, se.y], [nw.x, se.y]];
        pane.style.clipPath = "polygon(" + corners.map((c) => c[0] + "px " + c[1] + "px").join(", ") + ")";
      }
    }

    function placeDivider() {
      const width = state.map.getSize().x;
      // Side by side, the main map is the left half: the tags flank the seam between the two maps.
      const x = state.mode === "swipe" ? state.swipe * width : width;
      divider.style.left = x + "px";
      $("tag-before").style.left = x - 8 + "px";
      $("tag-after").style.left = x + 10 + "px";
      document.body.dataset.swipe = state.swipe.toFixed(3);
      clipPanes();
    }

    function setSwipe(fraction) {
      state.swipe = Math.min(1, Math.max(0, fraction));
      $("swipe").value = String(Math.round(state.swipe * 1000) / 10);
      placeDivider();
    }

    let dragging = false;
    divider.addEventListener("pointerdown", (event) => {
      event.preventDefault();
      dragging = true;
      divider.setPointerCapture(event.pointerId);
    });
    divider.addEventListener("pointermove", (event) => {
      if (!dragging) return;
      const box = $("map").getBoundingClientRect();
      setSwipe((event.clientX - box.left) / box.width);
    });
    const stop = () => { dragging = false; };
    divider.addEventListener("pointerup", stop);
    divider.addEventListener("pointercancel", stop);
    $("swipe").addEventListener("input", () => setSwipe(parseFloat($("swipe").value) / 100));

    // --- side by side -----------------------------------------------------------------------------
    function follow(leader, follower) {
      leader.on("move", () => {
        if (state.syncing || state.mode !== "side") return;
        state.syncing = true;
        follower.setView(leader.getCenter(), leader.getZoom(), { animate: false });
        state.syncing = false;
      });
    }

    function setMode(mode) {
      state.mode = mode;
      document.body.dataset.mode = mode;
      $("map-after").hidden = mode !== "side";
      divider.hidden = mode !== "swipe";
      $("swipe").disabled = mode !== "swipe";
      state.map.invalidateSize({ animate: false });
      if (mode === "side" && !state.second) {
        // No zoom buttons there (they would sit under the date's tag): it follows the main map's.
        state.second = makeMap("map-after", { zoomControl: false });
        follow(state.map, state.second);
        follow(state.second, state.map);
      }
      if (state.second && mode === "side") {
        state.second.invalidateSize({ animate: false });
        state.second.setView(state.map.getCenter(), state.map.getZoom(), { animate: false });
      }
      refresh();
      placeDivider();
    }
    for (const radio of [$("mode-swipe"), $("mode-side")]) {
      radio.addEventListener("change", () => radio.checked && setMode(radio.value));
    }

    // --- the panel ----------------------------------------------------------------------------------
    function panel() {
      const notes = [];
      $("compare").hidden = false;
      $("transitions-row").hidden = false;
      $("probability-row").hidden = true;
      $("classes-title").textContent = "Class maps " + dates.before.label + ", " + dates.after.label;
      $("transitions-title").textContent = "Transitions " + dates.before.label + " → " + dates.after.label;
      $("tag-before").textContent = dates.before.label;
      $("tag-after").textContent = dates.after.label;
      $("tag-before").hidden = $("tag-after").hidden = false;
      const withImagery = ROLES.filter((role) => dates[role].imagery);
      if (withImagery.length) {
        const bands = dates[withImagery[0]].imagery;
        $("imagery-title").textContent = "Imagery " + withImagery.map((role) => dates[role].label).join(", ");
        $("imagery-bands").textContent = "(" + bands.bands.join(", ") + (bands.true_colour ? ")" : ", false colour)");
      } else {
        $("layer-imagery").checked = false;
        $("layer-imagery").disabled = true;
      }
      for (const role of ROLES) {
        if (!dates[role].imagery) notes.push("Imagery " + dates[role].label + ": " + dates[role].imagery_note + ".");
        if (dates[role].tiles_failed) notes.push(dates[role].label + ": " + dates[role].tiles_failed + " tiles failed to predict.");
      }
      if (info.change_probability) {
        $("change-probability-row").hidden = false;
      } else {
        notes.push("Change probability: not written (a date was predicted without probabilities).");
      }
      if (info.basemap) $("basemap-row").hidden = false;
      return notes;
    }

    function legend() {
      $("legend-title").textContent = "Transitions";
      const list = $("legend");
      list.innerHTML = "";
      const assessment = info.assessment;
      for (const t of info.transitions) {
        const item = document.createElement("li");
        item.dataset.class = t.name;
        item.dataset.hectares = String(t.hectares);
        const figure = assessment ? parts.assessedArea(t.assessed, area) : area(t.hectares);
        item.innerHTML = swatch(t.color) + '<span class="name">' + escapeHtml(t.label) + "</span>" +
          '<span class="share">' + escapeHtml(figure) + "</span>";
        item.title = t.pixels.toLocaleString() + " pixels (" + percent(t.share, 1) + " of the mapped pixels)" +
          (assessment && t.assessed ? "; mapped " + area(t.hectares) + ", " + t.assessed.n + " reference points" : "");
        list.appendChild(item);
      }
      const note = $("legend-note");
      const changed = info.changed ? area(info.changed.hectares) + " changed (" + percent(info.changed.fraction, 1) + " of the mapped pixels)" : "";
      const uncertain = info.uncertain ? "; uncertain: the classes differ but the change probability is below " + info.uncertain.min_confidence : "";
      if (assessment) {
        note.textContent = "Estimated area ± 95 % interval from " + assessment.labelled + " reference points " +
          "(stratified estimators, Olofsson et al. 2014) over " + assessment.population +
          "; overall accuracy " + percent(assessment.overall_accuracy, 1) +
          (assessment.overall_ci95 ? " ± " + percent((assessment.overall_ci95[1] - assessment.overall_ci95[0]) / 2, 1) : "") +
          ". Mapped: " + changed + uncertain + ".";
      } else {
        note.textContent = "Mapped area of each transition (change.json): " + changed + uncertain +
          ". terrabeam assess design on this folder samples the transitions for areas with confidence intervals.";
      }
      note.hidden = false;
      const classes = $("class-legend");
      classes.innerHTML = "";
      for (const c of info.classes) {
        const item = document.createElement("li");
        item.dataset.class = c.name;
        item.innerHTML = swatch(c.color) + '<span class="name">' + escapeHtml(c.name) + "</span>" +
          '<span class="share">' + escapeHtml(area(c.before_ha).replace(" ha", "") + " → " + area(c.after_ha)) + "</span>";
        item.title = dates.before.label + " → " + dates.after.label + ": gain " + area(c.gain_ha) + ", loss " +
          area(c.loss_ha) + ", net " + area(c.net_ha);
        classes.appendChild(item);
      }
      $("classes-section").hidden = false;
    }

    // --- a clicked pixel: both dates, the transition ------------------------------------------------
    function showPixel(p) {
      const box = $("pixel-info");
      box.classList.remove("note");
      let html = "<dl>" +
        "<dt>Lon, lat</dt><dd>" + p.lon.toFixed(6) + ", " + p.lat.toFixed(6) + "</dd>" +
        "<dt>" + escapeHtml(p.crs) + "</dt><dd>" + p.x.toFixed(1) + ", " + p.y.toFixed(1) + "</dd>" +
        "<dt>Row, col</dt><dd>" + p.row + ", " + p.col + "</dd></dl>";
      if (!p.inside) {
        html += '<p id="pixel-transition" data-transition="">outside the map</p>';
      } else {
        html += '<table id="pixel-dates">';
        for (const role of ROLES) {
          const d = p.dates[role];
          const own = d.class && d.probabilities ? d.probabilities[d.class.index].p : null;
          html += '<tr data-date="' + role + '" data-class="' + escapeHtml(d.class ? d.class.name : "") + '">' +
            "<th>" + escapeHtml(d.label) + "</th><td>" +
            (d.class ? swatch(d.class.color) + " " + escapeHtml(d.class.name) : "no prediction") + "</td>" +
            '<td class="p">' + (own === null ? "" : percent(own, 1)) + "</td></tr>";
        }
        html += "</table><dl>";
        const t = p.transition;
        html += '<dt>Transition</dt><dd id="pixel-transition" data-transition="' + escapeHtml(t ? t.name : "") + '">' +
          (t ? swatch(t.color) + " " + escapeHtml(t.label) : "no data") + "</dd>";
        if (p.change_probability !== null) {
          html += '<dt>P(change)</dt><dd id="pixel-change-probability" data-p="' + p.change_probability + '">' +
            percent(p.change_probability, 1) + "</dd>";
        }
        html += "</dl>";
        const [pb, pa] = ROLES.map((role) => p.dates[role].probabilities);
        if (pb || pa) {
          const rows = (pb || pa).map((q, i) => [q, pb ? pb[i].p : null, pa ? pa[i].p : null]);
          html += '<table id="pixel-probabilities"><thead><tr><td></td><td>' + escapeHtml(dates.before.label) +
            "</td><td>" + escapeHtml(dates.after.label) + "</td></tr></thead>";
          for (const [q, b, a] of rows) {
            html += '<tr data-class="' + escapeHtml(q.name) + '" data-p-before="' + (b === null ? "" : b) +
              '" data-p-after="' + (a === null ? "" : a) + '"><td>' + swatch(q.color) + " " + escapeHtml(q.name) +
              '</td><td class="p">' + percent(b, 1) + '</td><td class="p">' + percent(a, 1) + "</td></tr>";
          }
          html += "</table>";
        }
      }
      box.innerHTML = html;
      document.body.dataset.pixel = p.transition ? p.transition.name : "";
    }

    function onClick(event) {
      const { lat, lng } = event.latlng;
      for (const marker of state.markers) marker.remove();
      state.markers = [state.map, state.second].filter(Boolean).map((map) =>
        L.circleMarker(event.latlng, { radius: 6, color: "#000", weight: 2, fill: false }).addTo(map));
      parts.getJSON("api/pixel?lon=" + lng + "&lat=" + lat).then(showPixel).catch((e) => console.error(e.message));
    }

    // --- start ------------------------------------------------------------------------------------
    const main = makeMap("map");
    state.map = main;
    main.fitBounds([[info.bounds[1], info.bounds[0]], [info.bounds[3], info.bounds[2]]]);
    main.on("move zoom viewreset resize", clipPanes);
    main.on("resize", placeDivider);
    const notes = panel();
    for (const checkbox of Object.values(checkboxes)) checkbox.addEventListener("change", refresh);
    $("opacity").addEventListener("input", () => {
      $("opacity-value").textContent = Math.round(100 * opacity()) + " %";
      for (const spec of specs) {
        if (spec.kind === "imagery" || spec.kind === "basemap") continue;
        for (const layer of Object.values(spec.instances)) layer.setOpacity(opacity());
      }
    });
    notes.push(...parts.trainingLayers(info));
    $("notes").textContent = notes.join(" ");
    legend();
    setMode("swipe");
    document.body.dataset.state = "ready";
  };
})();
