// HNDSR web page, the map view: a georeferenced input and its result drawn where they lie, in the raster's own
// CRS, with a swipe between them, the pointer's coordinates (the raster's CRS and longitude/latitude) and the
// result's footprint. OpenLayers and proj4js (vendored) load on the first opening; a CRS's definition comes from
// the service (/ui/crs/EPSG:<code>), so nothing is fetched from outside it unless a basemap is configured.
// app.js calls HNDSRMap.offer(...) when a GeoTIFF result with an EPSG code is shown, HNDSRMap.withdraw() on reset.
"use strict";

window.HNDSRMap = (() => {
  const $ = (id) => document.getElementById(id);
  const el = {
    compare: $("view-compare"), mapButton: $("view-map"), viewer: $("viewer"), zoom: $("zoom-group"),
    hint: $("viewer-hint"), wrap: $("map-view"), map: $("map"), swipe: $("map-swipe"), coords: $("map-coords"),
    footprint: $("map-footprint"), status: $("map-status"), frame: $("map-swipe-line").parentElement,
  };
  let offered = null; // {input: File, result: Blob | URL string, crs, stretch, basemapUrl}
  let map = null;
  let vendor = null;
  let opening = null; // the map being built

  function load(tag, attributes) {
    return new Promise((resolve, reject) => {
      const node = Object.assign(document.createElement(tag), attributes);
      node.onload = resolve;
      node.onerror = () => reject(new Error(`could not load ${attributes.src || attributes.href}`));
      document.head.append(node);
    });
  }

  // The CRS definitions OpenLayers does not carry itself (it knows EPSG:4326 and EPSG:3857) come from the service.
  async function projectionDefinition(code) {
    const response = await fetch(`/ui/crs/${encodeURIComponent(code)}`);
    if (!response.ok) throw new Error(`the service does not know ${code}`);
    return response.text();
  }

  function loadVendor() {
    vendor ??= Promise.all([
      load("script", { src: "/ui/vendor/ol.js" }),
      load("script", { src: "/ui/vendor/proj4.js" }),
      load("link", { rel: "stylesheet", href: "/ui/vendor/ol.css" }),
    ]).then(() => {
      ol.proj.proj4.register(proj4);
      ol.proj.proj4.setProjectionCodeLookup(projectionDefinition);
    }).catch((err) => {
      vendor = null;
      throw err;
    });
    return vendor;
  }

  // One raster for ol.source.GeoTIFF: a Blob is read in the page, a URL by HTTP ranges (a COG's overviews first).
  // The page's own stretch (2nd-98th percentiles of each band) as one range for the three bands drawn.
  function sourceInfo(raster, stretch, bands) {
    const info = typeof raster === "string" ? { url: raster } : { blob: raster };
    if (bands >= 3) info.bands = [1, 2, 3];
    else info.bands = [1];
    if (stretch) {
      info.min = Math.min(...stretch.map(([low]) => low));
      info.max = Math.max(...stretch.map(([, high]) => high));
    }
    return info;
  }

  function setView(mode) {
    const onMap = mode === "map";
    el.compare.setAttribute("aria-pressed", String(!onMap));
    el.mapButton.setAttribute("aria-pressed", String(onMap));
    el.viewer.hidden = onMap;
    el.zoom.hidden = onMap;
    el.hint.hidden = onMap;
    el.wrap.hidden = !onMap;
    if (onMap) open().catch((err) => say(`The map could not be drawn: ${err.message}`, true));
  }

  function say(text, failed = false) {
    el.status.textContent = text;
    el.status.classList.toggle("failed", failed);
    el.status.hidden = !text;
  }

  // One opening at a time: a second click while OpenLayers loads waits for the first instead of building a twin.
  function open() {
    if (map) {
      map.updateSize();
      return Promise.resolve();
    }
    opening ??= build(offered).finally(() => { opening = null; });
    return opening;
  }

  async function build(data) {
    if (!data) return;
    say("Loading the map…");
    await loadVendor();
    const input = new ol.source.GeoTIFF({ sources: [sourceInfo(data.input, data.stretch, data.bands)] });
    const result = new ol.source.GeoTIFF({ sources: [sourceInfo(data.result, data.stretch, data.bands)] });
    const view = await result.getView();
    if (data !== offered || map) return; // another image was chosen meanwhile
    if (!view.projection) throw new Error(`the result's CRS (${data.crs}) is unknown to the map`);
    map = draw(data, input, result, view);
    say("");
  }

  function draw(data, inputSource, resultSource, viewOptions) {
    const projection = ol.proj.get(viewOptions.projection);
    const extent = viewOptions.extent;
    const footprint = new ol.layer.Vector({
      source: new ol.source.Vector({ features: [new ol.Feature(ol.geom.Polygon.fromExtent(extent))] }),
      style: new ol.style.Style({ stroke: new ol.style.Stroke({ color: "#f5c518", width: 2 }) }),
    });
    const input = new ol.layer.WebGLTile({ source: inputSource, className: "hndsr-input" });
    const result = new ol.layer.WebGLTile({ source: resultSource, className: "hndsr-result" });
    result.on("postrender", (event) => {
      event.context.canvas.style.clipPath = `inset(0 0 0 ${el.swipe.value}%)`;
    });
    const layers = [input, result, footprint];
    if (data.basemapUrl) layers.unshift(new ol.layer.Tile({ source: new ol.source.XYZ({ url: data.basemapUrl }) }));
    const created = new ol.Map({
      target: el.map,
      layers,
      view: new ol.View({ ...viewOptions, projection, showFullExtent: true }),
      controls: ol.control.defaults.defaults({ attribution: Boolean(data.basemapUrl), rotate: false })
        .extend([new ol.control.ScaleLine()]),
    });
    created.getView().fit(extent, { padding: [24, 24, 24, 24] });
    created.on("pointermove", (event) => showCoordinates(event.coordinate, projection, data.crs));
    el.map.dataset.projection = data.crs;
    el.map.dataset.extent = JSON.stringify(extent);
    showFootprint(extent, projection, data.crs);
    created.once("rendercomplete", () => el.map.setAttribute("data-rendered", "true"));
    return created;
  }

  const degrees = (value, positive, negative) => `${Math.abs(value).toFixed(5)}° ${value >= 0 ? positive : negative}`;
  const lonLat = ([lon, lat]) => `${degrees(lat, "N", "S")}, ${degrees(lon, "E", "W")}`;

  function showCoordinates(coordinate, projection, crs) {
    const own = projection.getUnits() === "degrees" ? "" :
      `x ${coordinate[0].toFixed(1)}, y ${coordinate[1].toFixed(1)} ${projection.getUnits() || ""} (${crs}) · `;
    el.coords.textContent = `${own}${lonLat(ol.proj.toLonLat(coordinate, projection))}`;
  }

  function showFootprint(extent, projection, crs) {
    const [west, south, east, north] = ol.proj.transformExtent(extent, projection, "EPSG:4326");
    const units = projection.getUnits() === "m" ? ` · ${((extent[2] - extent[0]) / 1000).toFixed(2)} × `
      + `${((extent[3] - extent[1]) / 1000).toFixed(2)} km` : "";
    el.footprint.textContent = `Footprint (${crs})${units}: ${lonLat([west, south])} to ${lonLat([east, north])}`;
  }

  el.swipe.addEventListener("input", () => {
    el.frame.style.setProperty("--swipe", `${el.swipe.value}%`);
    map?.render();
  });
  el.compare.addEventListener("click", () => setView("compare"));
  el.mapButton.addEventListener("click", () => setView("map"));

  return {
    // A georeferenced result to draw: the input File, the result (a Blob, or a job's result URL read by ranges),
    // its CRS ("EPSG:32631"), the page's stretch for non-8-bit data, the bands drawn, the optional basemap.
    offer(data) {
      this.withdraw();
      offered = data;
      el.mapButton.disabled = false;
      el.mapButton.title = `The input and the result on a map, in ${data.crs}`;
    },
    withdraw() {
      offered = null;
      if (map) {
        map.setTarget(null);
        map.dispose();
        map = null;
      }
      el.map.removeAttribute("data-rendered");
      el.coords.textContent = "Move the pointer over the map.";
      el.footprint.textContent = "";
      el.mapButton.disabled = true;
      el.mapButton.title = "For a GeoTIFF result with an EPSG code";
      say("");
      setView("compare");
    },
  };
})();
