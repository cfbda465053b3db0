// HNDSR web page: pick an image, send it to /upscale (or /jobs for rasters beyond the synchronous limits),
// compare the browser's own enlargement with the HNDSR result, zoom and pan to the pixel, download.
// Plain JavaScript, no build step; TIFF/GeoTIFF is decoded by the vendored geotiff.js (global `GeoTIFF`).
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const el = {
    file: $("file"), fileInfo: $("file-info"), scale: $("scale"), model: $("model"), steps: $("steps"),
    seed: $("seed"), consistency: $("consistency"),
    format: $("format"), keyField: $("key-field"), apiKey: $("api-key"), run: $("run"), cancel: $("cancel"),
    status: $("status"), elapsed: $("elapsed"), progress: $("progress"), progressBar: $("progress-bar"),
    error: $("error"), resultInfo: $("result-info"), download: $("download"), viewer: $("viewer"),
    before: $("before"), after: $("after"), split: $("split"), zoomLevel: $("zoom-level"),
    serviceState: $("service-state"),
  };

  const KEY_STORAGE = "hndsr.apiKey";
  // A TIFF quick-look decodes three bands into an RGBA bitmap; beyond this many bytes it is drawn from an overview
  // (a COG has them) or resampled, and said so ("preview reduced").
  const PREVIEW_BUDGET_BYTES = 200e6;
  const POLL_MS = 1000;
  const config = { max_image_pixels: 16e6, max_output_pixels: 67108864, max_payload_bytes: 20 * 1024 * 1024,
                   api_key_required: false };
  let jobsDocumented = false; // the OpenAPI spec lists /jobs: large rasters go there without trying /upscale

  const input = { file: null, width: 0, height: 0, url: null, tiff: null };
  let result = null; // {url: what #after shows, downloadUrl: the file as the service sent it, contentType}
  let busy = null; // {controller, jobUrl}
  const view = { zoom: 1, x: 0, y: 0, fit: true, outW: 0, outH: 0, split: 50 };

  // ---------------------------------------------------------------- small helpers
  const fmtInt = (n) => Number(n).toLocaleString("en-US");
  const fmtBytes = (n) => n < 1024 ? `${n} B` : n < 1048576 ? `${(n / 1024).toFixed(1)} KB`
    : `${(n / 1048576).toFixed(1)} MB`;
  const extensionOf = (type) => ({ "image/png": "png", "image/jpeg": "jpg", "image/webp": "webp",
                                   "image/tiff": "tif" })[type] || "bin";
  const isTiffType = (type) => /^image\/(tiff|tif|geotiff)/i.test(type || "");

  function apiHeaders() {
    const key = sessionStorage.getItem(KEY_STORAGE);
    return key ? { Authorization: `Bearer ${key}` } : {};
  }

  function setStatus(text, progress) {
    el.status.textContent = text;
    if (progress === undefined) {
      el.progress.hidden = true;
    } else {
      el.progress.hidden = false;
      el.progress.classList.toggle("indeterminate", progress === null);
      el.progressBar.style.width = progress === null ? "" : `${Math.round(progress * 100)}%`;
      if (progress === null) el.progress.removeAttribute("aria-valuenow");
      else el.progress.setAttribute("aria-valuenow", String(Math.round(progress * 100)));
    }
  }

  function showError(title, detail) {
    el.error.replaceChildren();
    const strong = document.createElement("strong");
    strong.textContent = title;
    el.error.append(strong, document.createTextNode(detail || ""));
    el.error.hidden = false;
  }

  function clearError() {
    el.error.hidden = true;
    el.error.replaceChildren();
  }

  class ApiError extends Error {
    // `job`: {id, status} when a scene job ended without a result (the poll itself answered 200).
    constructor(status, code, detail, retryAfter, job = null) {
      super(detail);
      this.status = status;
      this.code = code;
      this.detail = detail;
      this.retryAfter = retryAfter;
      this.job = job;
    }
  }

  async function apiError(response) {
    let code = "";
    let detail = "";
    const text = await response.text().catch(() => "");
    try {
      const body = JSON.parse(text);
      code = body.error || "";
      detail = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail ?? body);
    } catch {
      detail = text.trim().slice(0, 500) || response.statusText || "no detail given";
    }
    return new ApiError(response.status, code, detail, response.headers.get("retry-after"));
  }

  function reportError(err) {
    if (err.name === "AbortError") {
      setStatus("Cancelled.");
      return;
    }
    if (err instanceof ApiError) {
      const words = err.code ? err.code.replace(/_/g, " ") : "request failed";
      let detail = err.detail;
      if (err.retryAfter) detail += ` Try again in ${err.retryAfter} s.`;
      if (err.job) {
        showError(`Job ${err.job.status} · ${words}`, `${detail} (job ${err.job.id})`);
        setStatus(`The job ${err.job.status}.`);
        return;
      }
      showError(`${err.status} · ${words}`, detail);
      if (err.status === 401) {
        askForKey(true);
        el.apiKey.focus();
      }
      setStatus("The service refused the request.");
    } else if (err instanceof TypeError && /fetch|network/i.test(err.message)) { // fetch got no answer
      showError("Could not reach the service", `${err.message}. Is it running, and reachable from this browser?`);
      setStatus("Failed.");
    } else {
      showError("Something went wrong", err.message || String(err));
      setStatus("Failed.");
    }
  }

  // ---------------------------------------------------------------- service config, readiness, API key
  async function loadConfig() {
    try {
      const response = await fetch("/ui/config.json");
      if (response.ok) Object.assign(config, await response.json());
    } catch { /* keep the defaults: the page still works, the service will say what it refuses */ }
    askForKey(config.api_key_required);
    try {
      const spec = await (await fetch("/docs.json")).json();
      jobsDocumented = Boolean(spec.paths && spec.paths["/jobs"]);
    } catch { /* no spec: /jobs is still tried when /upscale says the image is too large */ }
  }

  function askForKey(needed) {
    if (!needed && !sessionStorage.getItem(KEY_STORAGE)) return;
    el.keyField.hidden = false;
    el.apiKey.value = sessionStorage.getItem(KEY_STORAGE) || "";
    if (needed && !el.apiKey.value && document.activeElement === document.body) el.apiKey.focus();
  }

  el.apiKey.addEventListener("input", () => {
    const key = el.apiKey.value.trim();
    if (key) sessionStorage.setItem(KEY_STORAGE, key);
    else sessionStorage.removeItem(KEY_STORAGE);
  });

  async function checkReady() {
    let ready = false;
    let text = "service unreachable";
    try {
      const response = await fetch("/ready", { cache: "no-store" });
      ready = response.ok;
      text = ready ? "ready" : ((await response.json().catch(() => ({}))).reason || "not ready");
    } catch { /* shown as unreachable */ }
    el.serviceState.textContent = ready ? "service ready" : text;
    el.serviceState.classList.toggle("ready", ready);
    el.serviceState.classList.toggle("down", !ready);
    if (!ready) setTimeout(checkReady, 5000);
  }

  // ---------------------------------------------------------------- TIFF quick-looks (geotiff.js)
  // The same picture the service makes of a raster (hndsr_model.data.to_rgb8): one band repeated to grey,
  // the first three bands as RGB, uint8 as it is, anything else stretched per band between its 2nd and 98th
  // percentiles (NaN as 0). A result is drawn with the input's stretch so before and after compare fairly.
  function percentile(sorted, q) {
    const pos = (sorted.length - 1) * q;
    const lo = Math.floor(pos);
    const hi = Math.min(lo + 1, sorted.length - 1);
    return sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo);
  }

  function bandStretch(band) {
    const step = Math.max(1, Math.floor(band.length / 1e6));
    const sample = new Float64Array(Math.ceil(band.length / step));
    for (let i = 0, j = 0; i < band.length; i += step, j++) {
      const v = Number(band[i]);
      sample[j] = Number.isFinite(v) ? v : 0;
    }
    sample.sort();
    return [percentile(sample, 0.02), percentile(sample, 0.98)];
  }

  // An uncompressed 32-bit top-down BMP: browsers draw it natively and, unlike PNG, it costs nothing to encode.
  function bmpWriter(width, height) {
    const offset = 54;
    const bytes = new Uint8Array(offset + width * height * 4);
    const view = new DataView(bytes.buffer);
    bytes.set([0x42, 0x4d]);
    view.setUint32(2, bytes.length, true);
    view.setUint32(10, offset, true);
    view.setUint32(14, 40, true); // BITMAPINFOHEADER
    view.setInt32(18, width, true);
    view.setInt32(22, -height, true); // negative: rows top to bottom
    view.setUint16(26, 1, true);
    view.setUint16(28, 32, true);
    view.setUint32(34, width * height * 4, true);
    for (let o = offset + 3; o < bytes.length; o += 4) bytes[o] = 255;
    return { bytes, offset, blob: () => new Blob([bytes], { type: "image/bmp" }) };
  }

  // The smallest of the file's images (full resolution, then overviews) that is still at least `width` wide.
  async function overviewFor(tiff, image, width) {
    let best = image;
    const count = await tiff.getImageCount();
    for (let i = 1; i < count; i++) {
      const candidate = await tiff.getImage(i);
      if (candidate.getWidth() >= width && candidate.getWidth() < best.getWidth()
          && candidate.getSamplesPerPixel() === image.getSamplesPerPixel()) best = candidate;
    }
    return best;
  }

  // `source`: a Blob (a chosen file, a downloaded result) or the URL of a result too large to download here.
  async function decodeTiff(source, stretch) {
    if (typeof GeoTIFF === "undefined") throw new Error("the TIFF decoder (geotiff.js) did not load");
    // A large file is read by parts (only what the quick-look needs: by HTTP ranges for a URL), a small one at once.
    const tiff = await (typeof source === "string"
      ? GeoTIFF.fromUrl(source, { headers: apiHeaders(), allowFullFile: true })
      : source.size > 100e6 ? GeoTIFF.fromBlob(source) : GeoTIFF.fromArrayBuffer(await source.arrayBuffer()));
    const image = await tiff.getImage();
    const width = image.getWidth();
    const height = image.getHeight();
    const bands = image.getSamplesPerPixel();
    const bits = image.getBitsPerSample();
    const sampleFormat = image.getSampleFormat();
    const photometric = image.fileDirectory.getValue("PhotometricInterpretation");
    const dtype = `${({ 1: "uint", 2: "int", 3: "float" })[sampleFormat] || "uint"}${bits}`;
    const maxPixels = PREVIEW_BUDGET_BYTES / (3 * Math.ceil(bits / 8) + 4);
    const shrink = Math.max(1, Math.sqrt((width * height) / maxPixels));
    const w = Math.max(1, Math.round(width / shrink));
    const h = Math.max(1, Math.round(height / shrink));
    const options = { interleave: false, ...(shrink > 1 ? { width: w, height: h, resampleMethod: "bilinear" } : {}) };
    let rasters;
    let uint8;
    if (photometric === 6 || photometric === 5 || photometric === 8) { // YCbCr, CMYK, CIELab: let it convert
      rasters = await image.readRGB(options);
      uint8 = true;
    } else {
      const samples = bands >= 3 ? [0, 1, 2] : [0];
      rasters = await (await overviewFor(tiff, image, w)).readRasters({ ...options, samples });
      uint8 = bits === 8 && sampleFormat === 1;
    }
    const channels = rasters.length >= 3 ? [rasters[0], rasters[1], rasters[2]] : [rasters[0], rasters[0], rasters[0]];
    const used = stretch && stretch.length === 3 ? stretch : (uint8 ? null : channels.map(bandStretch));
    const bmp = bmpWriter(w, h);
    for (let c = 0; c < 3; c++) {
      const band = channels[c];
      const [low, high] = used ? used[c] : [0, 255];
      const k = 255 / Math.max(high - low, 1e-12);
      for (let i = 0, o = bmp.offset + 2 - c; i < band.length; i++, o += 4) { // BMP stores B, G, R, A
        const v = Number(band[i]);
        bmp.bytes[o] = used ? Math.min(255, Math.max(0, Math.round(((Number.isFinite(v) ? v : 0) - low) * k))) : v;
      }
    }
    const geokeys = image.getGeoKeys ? image.getGeoKeys() : null;
    const epsg = geokeys && (geokeys.ProjectedCSTypeGeoKey || geokeys.GeographicTypeGeoKey);
    return { url: URL.createObjectURL(bmp.blob()), width, height, bands, dtype, stretch: used, reduced: shrink > 1,
             crs: epsg && epsg !== 32767 ? `EPSG:${epsg}` : null };
  }

  async function sniffTiff(file) {
    const head = new Uint8Array(await file.slice(0, 4).arrayBuffer());
    const le = head[0] === 0x49 && head[1] === 0x49 && (head[2] === 42 || head[2] === 43) && head[3] === 0;
    const be = head[0] === 0x4d && head[1] === 0x4d && head[2] === 0 && (head[3] === 42 || head[3] === 43);
    return le || be;
  }

  // ---------------------------------------------------------------- choosing an image
  function releaseUrls(target) {
    for (const url of [target?.url, target?.downloadUrl]) if (url && url.startsWith("blob:")) URL.revokeObjectURL(url);
  }

  function resetResult() {
    releaseUrls(result);
    result = null;
    el.after.removeAttribute("src");
    el.resultInfo.hidden = true;
    el.resultInfo.replaceChildren();
    el.download.setAttribute("aria-disabled", "true");
    el.download.setAttribute("tabindex", "-1");
    el.download.href = "#";
    el.download.removeAttribute("download");
    el.download.textContent = "Download result";
    el.viewer.classList.add("before-only");
    window.HNDSRMap?.withdraw();
  }

  function waitForImage(img, url) {
    return new Promise((resolve, reject) => {
      img.onload = () => resolve(img);
      img.onerror = () => reject(new Error("the browser could not display this image"));
      img.src = url;
    });
  }

  async function loadFile(file) {
    if (!file || busy) return;
    clearError();
    resetResult();
    releaseUrls(input);
    Object.assign(input, { file, width: 0, height: 0, url: null, tiff: null });
    el.run.disabled = true;
    setStatus(`Reading ${file.name}…`, null);
    const details = [];
    try {
      if (isTiffType(file.type) || await sniffTiff(file)) {
        const tiff = await decodeTiff(file);
        Object.assign(input, { width: tiff.width, height: tiff.height, url: tiff.url, tiff });
        details.push(`${tiff.bands} band${tiff.bands > 1 ? "s" : ""} ${tiff.dtype}`);
        if (tiff.crs) details.push(tiff.crs);
        if (tiff.reduced) details.push("preview reduced");
        await waitForImage(el.before, tiff.url);
      } else {
        input.url = URL.createObjectURL(file);
        await waitForImage(el.before, input.url);
        Object.assign(input, { width: el.before.naturalWidth, height: el.before.naturalHeight });
      }
      showFileInfo(file, details);
      el.viewer.classList.remove("empty");
      setOutputSize(input.width * scaleValue(), input.height * scaleValue(), true);
      setStatus("Ready: choose the settings and press Upscale.");
    } catch (err) {
      // The service decides what it accepts; the page only could not draw a preview.
      el.before.removeAttribute("src");
      el.viewer.classList.add("empty");
      showFileInfo(file, ["no preview"]);
      showError("No preview", `${err.message}. You can still send it: the service will say if it cannot read it.`);
      setStatus("Ready (without a preview).");
    }
    el.run.disabled = false;
  }

  function showFileInfo(file, details) {
    el.fileInfo.replaceChildren();
    const name = document.createElement("strong");
    name.textContent = file.name;
    const size = input.width ? `${fmtInt(input.width)} × ${fmtInt(input.height)} px · ` : "";
    el.fileInfo.append(name, document.createTextNode(` — ${size}${fmtBytes(file.size)}`
      + (details.length ? ` · ${details.join(" · ")}` : "")));
    el.fileInfo.hidden = false;
  }

  el.file.addEventListener("change", () => loadFile(el.file.files[0]));

  let dragDepth = 0;
  document.addEventListener("dragenter", (event) => {
    if (!event.dataTransfer?.types?.includes("Files")) return;
    dragDepth++;
    document.body.classList.add("dragging");
  });
  document.addEventListener("dragleave", () => {
    dragDepth = Math.max(0, dragDepth - 1);
    if (!dragDepth) document.body.classList.remove("dragging");
  });
  document.addEventListener("dragover", (event) => event.preventDefault());
  document.addEventListener("drop", (event) => {
    event.preventDefault();
    dragDepth = 0;
    document.body.classList.remove("dragging");
    const file = event.dataTransfer?.files?.[0];
    if (!file) return;
    try {
      el.file.files = event.dataTransfer.files;
    } catch { /* older browsers: the page keeps the file itself */ }
    loadFile(file);
  });

  // The hint describes the model selected (each option's text is in the hint's data attributes).
  const modelHint = $("model-hint");
  el.model.addEventListener("change", () => { modelHint.textContent = modelHint.dataset[el.model.value] || ""; });

  const scaleValue = () => Number(el.scale.value);
  el.scale.addEventListener("change", () => {
    if (input.width && !result) setOutputSize(input.width * scaleValue(), input.height * scaleValue(), true);
  });

  // ---------------------------------------------------------------- running: /upscale, or /jobs when large
  function formData() {
    const data = new FormData();
    data.append("image", input.file, input.file.name);
    data.append("scale_factor", el.scale.value);
    data.append("model", el.model.value);
    data.append("ddim_steps", el.steps.value || "0");
    if (el.seed.value.trim() !== "") data.append("seed", el.seed.value.trim());
    if (el.format.value) data.append("output_format", el.format.value);
    data.append("consistency", el.consistency.checked ? "true" : "false");
    return data;
  }

  function validate() {
    const steps = Number(el.steps.value || 0);
    if (!Number.isInteger(steps) || steps < 0 || steps > 50) {
      return [el.steps, "Diffusion steps must be a whole number from 0 to 50."];
    }
    const seed = el.seed.value.trim();
    if (seed !== "" && !/^\d+$/.test(seed)) return [el.seed, "The seed must be a whole number (or empty for random)."];
    return null;
  }

  function beyondSyncLimits() {
    const scale = scaleValue();
    const pixels = input.width * input.height;
    return input.file.size > config.max_payload_bytes || pixels > config.max_image_pixels
      || pixels * scale * scale > config.max_output_pixels;
  }

  // The synchronous API's answers that mean "this is work for a scene job" (413s, and 504 past the deadline).
  const JOB_WORTHY = new Set(["image_too_large", "output_too_large", "payload_too_large", "too_slow_for_sync",
                              "inference_timeout"]);
  const NO_JOBS = new Set([404, 405]);

  async function run() {
    if (!input.file || busy) return;
    const problem = validate();
    if (problem) {
      showError("Check the settings", problem[1]);
      problem[0].focus();
      return;
    }
    clearError();
    resetResult();
    busy = { controller: new AbortController(), jobUrl: null, resultUrl: null };
    el.run.disabled = true;
    el.cancel.hidden = false;
    el.run.setAttribute("aria-busy", "true");
    const started = performance.now();
    el.run.textContent = "Working…";
    el.elapsed.textContent = "0 s";
    const ticker = setInterval(() => {
      el.elapsed.textContent = `${Math.round((performance.now() - started) / 1000)} s`;
    }, 1000);
    try {
      let response;
      if (jobsDocumented && beyondSyncLimits()) {
        response = await viaJob();
        if (response === null) response = await viaUpscale();
      } else if (input.file.size > config.max_payload_bytes) {
        // Sent anyway, the service would refuse it before reading it, which browsers report as a network error.
        throw new ApiError(413, "payload_too_large", `the file is ${fmtBytes(input.file.size)}; this service `
          + `accepts at most ${fmtBytes(config.max_payload_bytes)} per request (MAX_PAYLOAD_MB), so the page did `
          + "not send it.");
      } else {
        response = await viaUpscale();
        if (!response.ok) {
          // Too large or too long for the synchronous API: a job, where the service has them; else its answer.
          const err = await apiError(response);
          if (!JOB_WORTHY.has(err.code)) throw err;
          const slow = { inference_timeout: "The synchronous request ran out of time: continuing as a job…",
                         too_slow_for_sync: "Too long for a synchronous request here: running it as a job…" };
          response = await viaJob(slow[err.code]);
          if (response === null) throw err;
        }
      }
      if (!response.ok) throw await apiError(response);
      setStatus("Drawing the result…", null);
      await showResult(response, (performance.now() - started) / 1000, busy.resultUrl);
    } catch (err) {
      reportError(err);
    } finally {
      clearInterval(ticker);
      el.elapsed.textContent = "";
      el.run.textContent = "Upscale";
      busy = null;
      el.run.disabled = false;
      el.run.removeAttribute("aria-busy");
      el.cancel.hidden = true;
      el.progress.hidden = true;
    }
  }

  function viaUpscale() {
    setStatus(`Upscaling ×${el.scale.value}…`, null);
    const signal = busy.controller.signal;
    return fetch("/upscale", { method: "POST", body: formData(), headers: apiHeaders(), signal });
  }

  // A job (POST /jobs -> 202 {job_id, status_url, result_url}); polls GET status_url for tiles done / total.
  // Returns the result's response, or null when this service has no jobs API.
  async function viaJob(why = "The image is beyond the synchronous limits: submitting it as a job…") {
    setStatus(why, null);
    const signal = busy.controller.signal;
    const submitted = await fetch("/jobs", { method: "POST", body: formData(), headers: apiHeaders(), signal });
    if (NO_JOBS.has(submitted.status)) return null;
    if (submitted.status !== 202 && !submitted.ok) throw await apiError(submitted);
    const job = await submitted.json();
    const statusUrl = job.status_url || `/jobs/${job.job_id}`;
    const resultUrl = job.result_url || `/jobs/${job.job_id}/result`;
    busy.jobUrl = `/jobs/${job.job_id}`;
    const pace = { tiles: null, at: 0, rate: 0 }; // tiles per second, smoothed: the service counts a row at a time
    for (;;) {
      await new Promise((resolve) => setTimeout(resolve, POLL_MS));
      if (signal.aborted) throw new DOMException("cancelled", "AbortError");
      const polled = await fetch(statusUrl, { headers: apiHeaders(), cache: "no-store", signal });
      if (!polled.ok) throw await apiError(polled);
      const state = await polled.json();
      const p = state.progress || {};
      if (state.status === "succeeded") break;
      if (state.status === "failed" || state.status === "cancelled") {
        const e = state.error || {};
        throw new ApiError(null, e.error || `job_${state.status}`, e.detail || `the job ended ${state.status}`, null,
                           { id: job.job_id, status: state.status });
      }
      if (state.status === "queued") {
        setStatus(`Job ${job.job_id} queued…`, null);
      } else {
        const fraction = Number.isFinite(p.fraction) ? p.fraction : (p.tiles_total ? p.tiles_done / p.tiles_total : 0);
        const left = timeLeft(pace, p.tiles_done ?? 0, p.tiles_total);
        setStatus(`Job running: tiles ${fmtInt(p.tiles_done ?? 0)} / ${fmtInt(p.tiles_total ?? "?")} `
          + `(${Math.round(fraction * 100)} %)${left ? ` · about ${left} left` : ""}`, fraction);
      }
    }
    busy.jobUrl = null;
    busy.resultUrl = resultUrl;
    setStatus("Job done: fetching the result…", 1);
    return fetch(resultUrl, { headers: apiHeaders(), signal });
  }

  // The time a job has left at its pace so far (updated whenever the service counts more tiles); "" until known.
  function timeLeft(pace, done, total) {
    const now = performance.now();
    if (pace.tiles !== null && done > pace.tiles) {
      const rate = (done - pace.tiles) / ((now - pace.at) / 1000);
      pace.rate = pace.rate ? 0.7 * pace.rate + 0.3 * rate : rate;
    }
    if (pace.tiles === null || done > pace.tiles) Object.assign(pace, { tiles: done, at: now });
    if (!pace.rate || !total) return "";
    const seconds = (total - done) / pace.rate;
    return seconds < 90 ? `${Math.max(1, Math.round(seconds))} s` : `${Math.round(seconds / 60)} min`;
  }

  // A result larger than this is not downloaded into the page: its quick-look is read by HTTP ranges (a COG's
  // overviews) and the download link points at the service.
  const WHOLE_RESULT_MAX_BYTES = 256 * 1024 * 1024;

  el.cancel.addEventListener("click", () => {
    if (!busy) return;
    if (busy.jobUrl) fetch(busy.jobUrl, { method: "DELETE", headers: apiHeaders() }).catch(() => {});
    busy.controller.abort();
  });

  // ---------------------------------------------------------------- showing the result
  // `resultUrl`: where a job's result lives (a synchronous result exists only in `response`).
  async function showResult(response, seconds, resultUrl) {
    const contentType = (response.headers.get("content-type") || "").split(";")[0].trim().toLowerCase();
    const length = Number(response.headers.get("content-length")) || 0;
    const remote = Boolean(resultUrl) && isTiffType(contentType) && length > WHOLE_RESULT_MAX_BYTES;
    let source;
    let downloadUrl;
    if (remote) {
      response.body?.cancel();
      source = resultUrl;
      downloadUrl = resultUrl;
    } else {
      source = await response.blob();
      downloadUrl = URL.createObjectURL(source);
    }
    const size = remote ? length : source.size;
    let url = downloadUrl;
    let width = 0;
    let height = 0;
    let note = "";
    let mapCrs = null;
    if (isTiffType(contentType)) {
      const stretch = input.tiff && input.tiff.stretch;
      const tiff = await decodeTiff(source, stretch);
      ({ url, width, height } = tiff);
      mapCrs = tiff.crs;
      note = `${tiff.bands} band${tiff.bands > 1 ? "s" : ""} ${tiff.dtype}${tiff.crs ? ` · ${tiff.crs}` : ""}`
        + `${tiff.reduced ? " · preview reduced" : ""}`;
    }
    result = { url, downloadUrl, contentType };
    await waitForImage(el.after, url);
    if (mapCrs && input.tiff && input.tiff.crs) {
      // A job's result is read by the map from the service by HTTP ranges (its COG's overviews), never whole.
      window.HNDSRMap?.offer({ input: input.file, result: resultUrl || source, crs: mapCrs,
                               stretch: input.tiff.stretch, bands: input.tiff.bands, basemapUrl: config.basemap_url });
    }
    width = width || el.after.naturalWidth; // a reduced preview is still shown at the output's size
    height = height || el.after.naturalHeight;
    el.viewer.classList.remove("before-only", "empty");
    setOutputSize(width, height, view.fit);

    const stem = input.file.name.replace(/\.[^.]+$/, "") || "image";
    const ext = extensionOf(contentType);
    const name = `${stem}_x${el.scale.value}.${ext}`;
    el.download.href = downloadUrl;
    el.download.download = name;
    const label = document.createElement("span");
    label.className = "download-name";
    label.textContent = name;
    el.download.replaceChildren(document.createTextNode("Download "), label);
    el.download.title = `${name}, ${fmtBytes(size)}`;
    el.download.setAttribute("aria-disabled", "false");
    el.download.removeAttribute("tabindex");

    const modelMs = Number(response.headers.get("x-hndsr-latency-ms"));
    const rows = [
      ["Output", `${fmtInt(width)} × ${fmtInt(height)} px`],
      ["Format", `${contentType || "unknown"} · ${fmtBytes(size)}${note ? ` · ${note}` : ""}`],
      ["Time", modelMs ? `${(modelMs / 1000).toFixed(2)} s model · ${seconds.toFixed(1)} s total`
        : `${seconds.toFixed(1)} s`],
    ];
    if (response.headers.get("x-hndsr-seed") && response.headers.get("x-hndsr-seed") !== "None") {
      rows.push(["Seed", response.headers.get("x-hndsr-seed")]);
    }
    if (response.headers.get("x-request-id")) rows.push(["Request", response.headers.get("x-request-id")]);
    if (resultUrl) rows.push(["Job", resultUrl.split("/")[2] || resultUrl]);
    el.resultInfo.replaceChildren(...rows.flatMap(([k, v]) => {
      const dt = document.createElement("dt");
      const dd = document.createElement("dd");
      dt.textContent = k;
      dd.textContent = v;
      if (k === "Request" || k === "Job") dd.className = "mono";
      return [dt, dd];
    }));
    el.resultInfo.hidden = false;
    setStatus(`Done: ×${el.scale.value} in ${seconds.toFixed(1)} s. Drag the handle to compare.`);
    // One column (phones): bring the comparison into view if it is below the fold.
    const top = el.viewer.getBoundingClientRect().top;
    if (top > window.innerHeight * 0.8) el.viewer.scrollIntoView({ block: "nearest" });
  }

  el.download.addEventListener("click", (event) => {
    if (el.download.getAttribute("aria-disabled") === "true") event.preventDefault();
  });

  document.getElementById("controls").addEventListener("submit", (event) => {
    event.preventDefault();
    run();
  });

  // ---------------------------------------------------------------- the viewer: split, zoom, pan
  function viewerSize() {
    return [el.viewer.clientWidth, el.viewer.clientHeight];
  }

  function fitZoom() {
    const [vw, vh] = viewerSize();
    return view.outW ? Math.min(vw / view.outW, vh / view.outH) : 1;
  }

  function setOutputSize(width, height, refit) {
    view.outW = width;
    view.outH = height;
    if (refit) zoomTo(fitZoom(), null, true);
    else draw();
  }

  function clampPan() {
    const [vw, vh] = viewerSize();
    const w = view.outW * view.zoom;
    const h = view.outH * view.zoom;
    view.x = w <= vw ? (vw - w) / 2 : Math.min(0, Math.max(vw - w, view.x));
    view.y = h <= vh ? (vh - h) / 2 : Math.min(0, Math.max(vh - h, view.y));
  }

  function draw() {
    clampPan();
    const w = `${view.outW * view.zoom}px`;
    const h = `${view.outH * view.zoom}px`;
    const t = `translate(${Math.round(view.x)}px, ${Math.round(view.y)}px)`;
    for (const img of [el.before, el.after]) {
      img.style.width = w;
      img.style.height = h;
      img.style.transform = t;
    }
    // From 2:1 the result is shown as square pixels; the "before" keeps the browser's interpolation.
    el.after.classList.toggle("pixelated", view.zoom >= 2);
    el.zoomLevel.textContent = view.fit ? `fit ${Math.round(view.zoom * 100)} %` : `${Math.round(view.zoom * 100)} %`;
  }

  function zoomTo(zoom, at, fit = false) {
    const [vw, vh] = viewerSize();
    const min = Math.min(fitZoom(), 1) / 2;
    const next = fit ? zoom : Math.min(32, Math.max(min, zoom));
    const [cx, cy] = at || [vw / 2, vh / 2];
    view.x = cx - ((cx - view.x) * next) / view.zoom;
    view.y = cy - ((cy - view.y) * next) / view.zoom;
    view.zoom = next;
    view.fit = fit;
    draw();
  }

  function pan(dx, dy) {
    view.x += dx;
    view.y += dy;
    view.fit = false;
    draw();
  }

  function setSplit(percent) {
    view.split = Math.min(100, Math.max(0, percent));
    const rounded = Math.round(view.split * 10) / 10;
    el.viewer.style.setProperty("--split", `${view.split}%`);
    el.split.setAttribute("aria-valuenow", String(Math.round(view.split)));
    el.split.setAttribute("aria-valuetext", `${Math.round(rounded)} % before, ${Math.round(100 - rounded)} % after`);
  }

  $("zoom-in").addEventListener("click", () => zoomTo(view.zoom * 1.5));
  $("zoom-out").addEventListener("click", () => zoomTo(view.zoom / 1.5));
  $("zoom-fit").addEventListener("click", () => zoomTo(fitZoom(), null, true));
  $("zoom-1").addEventListener("click", () => zoomTo(1));

  el.viewer.addEventListener("wheel", (event) => {
    if (!view.outW) return;
    event.preventDefault();
    const rect = el.viewer.getBoundingClientRect();
    zoomTo(view.zoom * Math.exp(-event.deltaY * 0.0015), [event.clientX - rect.left, event.clientY - rect.top]);
  }, { passive: false });

  el.viewer.addEventListener("dblclick", (event) => {
    if (!view.outW || event.target === el.split || el.split.contains(event.target)) return;
    const rect = el.viewer.getBoundingClientRect();
    if (view.zoom < 0.999 || view.fit) zoomTo(1, [event.clientX - rect.left, event.clientY - rect.top]);
    else zoomTo(fitZoom(), null, true);
  });

  // One pointer pans the picture (on the handle it moves the split); two pointers pinch to zoom.
  const pointers = new Map();
  let drag = null;
  let pinch = null;

  function pinchState() {
    const [a, b] = [...pointers.values()];
    const rect = el.viewer.getBoundingClientRect();
    return { distance: Math.hypot(a.x - b.x, a.y - b.y) || 1,
             at: [(a.x + b.x) / 2 - rect.left, (a.y + b.y) / 2 - rect.top] };
  }

  el.viewer.addEventListener("pointerdown", (event) => {
    if (event.button !== 0 || !view.outW) return;
    el.viewer.setPointerCapture(event.pointerId);
    pointers.set(event.pointerId, { x: event.clientX, y: event.clientY });
    if (pointers.size === 2 && !drag?.split) {
      drag = null;
      pinch = pinchState();
      return;
    }
    const onSplit = el.split.contains(event.target);
    drag = { id: event.pointerId, split: onSplit, x: event.clientX, y: event.clientY };
    if (onSplit) el.split.focus();
    else el.viewer.classList.add("panning");
  });
  el.viewer.addEventListener("pointermove", (event) => {
    if (!pointers.has(event.pointerId)) return;
    pointers.set(event.pointerId, { x: event.clientX, y: event.clientY });
    if (pinch && pointers.size === 2) {
      const next = pinchState();
      zoomTo(view.zoom * (next.distance / pinch.distance), next.at);
      pan(next.at[0] - pinch.at[0], next.at[1] - pinch.at[1]);
      pinch = next;
    } else if (drag && drag.id === event.pointerId) {
      if (drag.split) {
        const rect = el.viewer.getBoundingClientRect();
        setSplit(((event.clientX - rect.left) / rect.width) * 100);
      } else {
        pan(event.clientX - drag.x, event.clientY - drag.y);
        drag.x = event.clientX;
        drag.y = event.clientY;
      }
    }
  });
  const endDrag = (event) => {
    pointers.delete(event.pointerId);
    if (pointers.size < 2) pinch = null;
    if (drag && drag.id === event.pointerId) drag = null;
    if (!drag) el.viewer.classList.remove("panning");
  };
  el.viewer.addEventListener("pointerup", endDrag);
  el.viewer.addEventListener("pointercancel", endDrag);

  el.split.addEventListener("keydown", (event) => {
    const big = event.shiftKey ? 10 : 1;
    const moves = { ArrowLeft: -big, ArrowDown: -big, ArrowRight: big, ArrowUp: big, PageDown: -10, PageUp: 10 };
    if (event.key in moves) setSplit(view.split + moves[event.key]);
    else if (event.key === "Home") setSplit(0);
    else if (event.key === "End") setSplit(100);
    else return;
    event.preventDefault();
    event.stopPropagation();
  });

  el.viewer.addEventListener("keydown", (event) => {
    if (!view.outW || event.target !== el.viewer) return;
    const step = event.shiftKey ? 160 : 40;
    const pans = { ArrowLeft: [step, 0], ArrowRight: [-step, 0], ArrowUp: [0, step], ArrowDown: [0, -step] };
    if (event.key in pans) pan(...pans[event.key]);
    else if (event.key === "+" || event.key === "=") zoomTo(view.zoom * 1.5);
    else if (event.key === "-" || event.key === "_") zoomTo(view.zoom / 1.5);
    else if (event.key === "0") zoomTo(fitZoom(), null, true);
    else if (event.key === "1") zoomTo(1);
    else return;
    event.preventDefault();
  });

  new ResizeObserver(() => {
    if (!view.outW) return;
    if (view.fit) zoomTo(fitZoom(), null, true);
    else draw();
  }).observe(el.viewer);

  // ---------------------------------------------------------------- start
  setSplit(50);
  el.run.disabled = true;
  loadConfig();
  checkReady();
})();
