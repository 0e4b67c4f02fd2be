// terrabeam's map viewer: Leaflet over tiles the local server cuts from the prediction's rasters.
// Every URL is relative, so the page also works behind a proxy path (e.g. Colab's port proxy).
(function () {
  "use strict";

  const $ = (id) => document.getElementById(id);
  const state = { layers: {}, info: null, marker: null };
  window.terrabeam = state; // for tests and for poking at the map from the console

  function getJSON(url) {
    return fetch(url).then((response) => {
      if (!response.ok) throw new Error(url + ": HTTP " + response.status);
      return response.json();
    });
  }

  function escapeHtml(text) {
    return String(text).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
  }

  function percent(value, digits) {
    return value === null || value === undefined ? "–" : (100 * value).toFixed(digits) + " %";
  }

  // A tile layer whose loading state the page exposes as data-<name>-loaded on <body>.
  function tileLayer(name, url, info, options) {
    const bounds = L.latLngBounds([info.bounds[1], info.bounds[0]], [info.bounds[3], info.bounds[2]]);
    const layer = L.tileLayer(url, Object.assign({ bounds: bounds, tileSize: 256, minZoom: 0, maxZoom: 24 }, options));
    const flag = "data-" + name + "-loaded";
    layer.on("loading", () => document.body.setAttribute(flag, "false"));
    layer.on("load", () => document.body.setAttribute(flag, "true"));
    layer.on("tileerror", (event) => console.error("tile failed: " + (event.tile && event.tile.src)));
    state.layers[name] = layer;
    return layer;
  }

  function toggle(checkbox, layer) {
    const apply = () => (checkbox.checked ? layer.addTo(state.map) : layer.remove());
    checkbox.addEventListener("change", apply);
    apply();
  }

  function hectares(value) {
    return value === null || value === undefined ? "–" : Math.round(value).toLocaleString("en-US") + " ha";
  }

  // An assessment beside the map: the estimated area ± its 95 % interval, instead of the pixel share.
  function assessedArea(a, format) {
    format = format || hectares;
    if (!a || a.estimate_ha === null || a.estimate_ha === undefined) return "no estimate";
    const half = a.ci95_ha ? (a.ci95_ha[1] - a.ci95_ha[0]) / 2 : null;
    return format(a.estimate_ha) + (half === null ? "" : " ± " + format(half).replace(" ha", ""));
  }

  function legend(info) {
    const list = $("legend");
    list.innerHTML = "";
    const assessment = info.assessment;
    for (const c of info.classes) {
      const item = document.createElement("li");
      item.dataset.class = c.name;
      const figure = assessment ? assessedArea(c.assessed) : percent(c.share, 1);
      item.innerHTML =
        '<span class="swatch" style="background:' + c.color + '"></span>' +
        '<span class="name">' + escapeHtml(c.name) + "</span>" +
        '<span class="share">' + escapeHtml(figure) + "</span>";
      item.title = c.pixels.toLocaleString() + " pixels (" + percent(c.share, 1) + " of the map)" +
        (assessment && c.assessed ? "; mapped " + hectares(c.assessed.mapped_ha) + ", " + c.assessed.n + " reference points" : "");
      list.appendChild(item);
    }
    const note = $("legend-note");
    if (assessment) {
      note.textContent = "Estimated area ± 95 % interval from " + assessment.labelled + " reference points " +
        "(stratified estimators, Olofsson et al. 2014) over " + assessment.population +
        "; overall accuracy " + percent(assessment.overall_accuracy, 1) +
        (assessment.overall_ci95 ? " ± " + percent((assessment.overall_ci95[1] - assessment.overall_ci95[0]) / 2, 1) : "") + ".";
      note.hidden = false;
    } else {
      note.textContent = "Share of the map's pixels (run terrabeam assess for areas with confidence intervals).";
      note.hidden = false;
    }
  }

  function showPixel(p) {
    const box = $("pixel-info");
    box.classList.remove("note");
    let html = "<dl>" +
      "<dt>Lon, lat</dt><dd>" + p.lon.toFixed(6) + ", " + p.lat.toFixed(6) + "</dd>" +
      "<dt>" + escapeHtml(p.crs) + "</dt><dd>" + p.x.toFixed(1) + ", " + p.y.toFixed(1) + "</dd>" +
      "<dt>Row, col</dt><dd>" + p.row + ", " + p.col + "</dd>";
    if (!p.inside) {
      html += '<dt>Class</dt><dd id="pixel-class" data-class="">outside the map</dd></dl>';
    } else if (!p.class) {
      html += '<dt>Class</dt><dd id="pixel-class" data-class="">no prediction</dd></dl>';
    } else {
      html += '<dt>Class</dt><dd id="pixel-class" data-class="' + escapeHtml(p.class.name) + '">' +
        '<span class="swatch" style="background:' + p.class.color + '"></span> ' + escapeHtml(p.class.name) + "</dd></dl>";
    }
    if (p.probabilities) {
      html += '<table id="pixel-probabilities">';
      for (const q of p.probabilities) {
        const width = q.p === null ? 0 : Math.round(100 * q.p);
        html += '<tr data-class="' + escapeHtml(q.name) + '" data-p="' + (q.p === null ? "" : q.p) + '">' +
          "<td>" + escapeHtml(q.name) + '</td><td class="p">' + percent(q.p, 1) + "</td>" +
          '<td class="b"><div class="bar" style="width:' + width + "%;background:" + q.color + '"></div></td></tr>';
      }
      html += "</table>";
    }
    box.innerHTML = html;
    document.body.dataset.pixel = p.class ? p.class.name : "";
  }

  function onClick(event) {
    const { lat, lng } = event.latlng;
    if (state.marker) state.marker.remove();
    state.marker = L.circleMarker(event.latlng, { radius: 6, color: "#000", weight: 2, fill: false }).addTo(state.map);
    getJSON("api/pixel?lon=" + lng + "&lat=" + lat).then(showPixel).catch((e) => console.error(e.message));
  }

  function trainingLayers(info) {
    const notes = [];
    if (!info.training) {
      $("layer-regions").disabled = true;
      $("layer-points").disabled = true;
      if (info.training_note) notes.push("Training data: " + info.training_note + ".");
      return notes;
    }
    const regions = L.geoJSON(null, {
      style: { color: "#111", weight: 2, dashArray: "6 4", fill: false },
      onEachFeature: (feature, layer) => {
        const name = (feature.properties || {}).name;
        if (name) layer.bindTooltip(String(name));
      },
    });
    const renderer = L.canvas({ padding: 0.5 });
    const points = L.geoJSON(null, {
      pointToLayer: (feature, latlng) =>
        L.circleMarker(latlng, {
          renderer: renderer, radius: 4, weight: 1, color: "#000",
          fillColor: feature.properties.color, fillOpacity: 0.9,
        }),
      onEachFeature: (feature, layer) => {
        const p = feature.properties;
        layer.bindPopup(escapeHtml(p.id) + "<br>" + escapeHtml(p.class || "no label") + " · " + escapeHtml(p.split));
      },
    });
    state.layers.regions = regions;
    state.layers.points = points;
    getJSON("api/regions").then((data) => {
      regions.addData(data);
      document.body.dataset.regions = String(data.features.length);
    }).catch((e) => console.error(e.message));
    getJSON("api/points").then((data) => {
      points.addData(data);
      $("points-count").textContent = "(" + data.features.length.toLocaleString() + (data.complete ? "" : ", the first") + ")";
      document.body.dataset.points = String(data.features.length);
    }).catch((e) => console.error(e.message));
    toggle($("layer-regions"), regions);
    toggle($("layer-points"), points);
    return notes;
  }

  function start(info) {
    state.info = info;
    $("subtitle").textContent = info.title + " · " + info.size[0] + "×" + info.size[1] + " px · " + info.crs;
    // Whole zoom levels: fractional ones scale tiles in CSS, which leaves hairlines between them.
    const map = L.map("map", { zoomSnap: 1, maxZoom: info.maxzoom + 4, minZoom: Math.max(0, info.minzoom - 3) });
    state.map = map;
    L.control.scale({ imperial: false }).addTo(map);
    map.fitBounds([[info.bounds[1], info.bounds[0]], [info.bounds[3], info.bounds[2]]]);
    const notes = [];

    if (info.basemap) {
      $("basemap-row").hidden = false;
      const basemap = L.tileLayer(info.basemap.url, { attribution: info.basemap.attribution, maxZoom: 24, zIndex: 0 });
      state.layers.basemap = basemap;
      toggle($("layer-basemap"), basemap);
    }
    if (info.imagery) {
      $("imagery-bands").textContent = "(" + info.imagery.bands.join(", ") + (info.imagery.true_colour ? ")" : ", false colour)");
      toggle($("layer-imagery"), tileLayer("imagery", "tiles/imagery/{z}/{x}/{y}.png", info, { zIndex: 1 }));
    } else {
      $("layer-imagery").checked = false;
      $("layer-imagery").disabled = true;
      notes.push("Imagery: " + info.imagery_note + ".");
    }
    const opacity = () => parseFloat($("opacity").value);
    const classes = tileLayer("classes", "tiles/classes/{z}/{x}/{y}.png", info, {
      zIndex: 2, opacity: opacity(), className: "pixelated",
    });
    toggle($("layer-classes"), classes);

    const select = $("probability");
    if (info.probabilities) {
      for (const c of info.classes) {
        const option = document.createElement("option");
        option.value = String(c.index);
        option.textContent = c.name;
        select.appendChild(option);
      }
    } else {
      select.disabled = true;
      notes.push("Probabilities: not written by this prediction (predict with --probabilities uint8).");
    }
    select.addEventListener("change", () => {
      if (state.layers.probability) state.layers.probability.remove();
      delete state.layers.probability;
      $("probability-scale").hidden = select.value === "";
      if (select.value === "") return;
      tileLayer("probability", "tiles/probability-" + select.value + "/{z}/{x}/{y}.png", info, {
        zIndex: 3, opacity: opacity(),
      }).addTo(map);
    });
    $("opacity").addEventListener("input", () => {
      $("opacity-value").textContent = Math.round(100 * opacity()) + " %";
      classes.setOpacity(opacity());
      if (state.layers.probability) state.layers.probability.setOpacity(opacity());
    });

    notes.push(...trainingLayers(info));
    if (info.tiles_failed) notes.push(info.tiles_failed + " tiles failed to predict (see the errors folder).");
    $("notes").textContent = notes.join(" ");
    legend(info);
    map.on("click", onClick);
    document.body.dataset.state = "ready";
  }

  // A change folder has a page of its own (change.js), made of the same parts.
  const parts = { $, state, getJSON, escapeHtml, percent, hectares, assessedArea, tileLayer, toggle, trainingLayers };
  const begin = (info) => (info.kind === "change" ? window.terrabeamChange(parts, info) : start(info));

  getJSON("api/info").then(begin).catch((e) => {
    document.body.dataset.state = "failed";
    $("notes").textContent = "Cannot load the map: " + e.message;
    console.error(e.message);
  });
})();
