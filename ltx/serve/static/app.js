// ltx-serve's one page: submit a prompt, follow the job's progress (SSE, polling as the fallback), play the video,
// list the key's jobs. Plain JS, no build step. Requests carry the API key as a bearer token when one is set, so
// media is fetched as blobs (a <video src> cannot send a header) and SSE is read from fetch, not EventSource.
"use strict";

const FINAL_STATES = new Set(["complete", "error", "cancelled"]);
const GALLERY_SIZE = 24;          // newest jobs shown with a thumbnail
const POLL_MS = 1000;

const $ = (id) => document.getElementById(id);
const keyInput = $("api-key");
let current = null;               // {id, abort: AbortController} of the job shown in the panel
const objectUrls = new Map();     // job id + kind -> blob URL, so thumbnails are fetched once

// ---- HTTP -----------------------------------------------------------------------------------------------------

function headers(extra = {}) {
  const key = keyInput.value.trim();
  return key ? {...extra, Authorization: `Bearer ${key}`} : extra;
}

async function api(path, options = {}) {
  const response = await fetch(path, {...options, headers: headers(options.headers)});
  if (!response.ok) {
    let line = `${response.status} ${response.statusText}`;
    try {
      const body = await response.json();
      line = describeError(body) || line;
    } catch (_) { /* not JSON: keep the status line */ }
    const error = new Error(line);
    error.status = response.status;
    throw error;
  }
  return response;
}

function describeError(body) {
  // FastAPI's 422 holds a list of {loc, msg}; our own errors a "detail" string.
  const detail = body && body.detail;
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail)) {
    return detail.map((d) => `${(d.loc || []).filter((p) => p !== "body").join(".")}: ${d.msg}`).join("; ");
  }
  return null;
}

async function blobUrl(id, kind) {
  const cacheKey = `${id}/${kind}`;
  if (!objectUrls.has(cacheKey)) {
    const response = await api(`/v1/jobs/${id}/${kind}`);
    objectUrls.set(cacheKey, URL.createObjectURL(await response.blob()));
  }
  return objectUrls.get(cacheKey);
}

// ---- the form -------------------------------------------------------------------------------------------------

async function loadInfo() {
  try {
    const info = await (await api("/v1/info")).json();
    $("key-field").hidden = !info.auth && !keyInput.value;
    fillForm(info);
  } catch (err) {
    if (err.status === 401) {
      $("key-field").hidden = false;
      $("model-line").textContent = "This server needs an API key: enter it below.";
    } else {
      $("model-line").textContent = `server unreachable or refused: ${err.message}`;
    }
  }
}

function fillForm(info) {
  const d = info.defaults || {};
  const limits = info.limits || {};
  $("model-line").textContent = `${info.model || "model"}${info.family ? ` (${info.family})` : ""}`;
  const select = $("size");
  select.replaceChildren(...sizeChoices(d.width, d.height, d.num_frames, limits.max_pixels_frames).map(([w, h]) => {
    const option = new Option(`${w} x ${h}${w === d.width && h === d.height ? " (default)" : ""}`, `${w}x${h}`);
    option.selected = w === d.width && h === d.height;
    return option;
  }));
  setNumber("num_frames", d.num_frames, 1, null);
  setNumber("steps", d.steps, 1, limits.max_steps);
  setNumber("guidance_scale", d.guidance_scale, 0, null);
  if (d.negative_prompt) $("negative_prompt").value = d.negative_prompt;
  $("player").muted = !info.audio;  // LTX-2 videos carry their soundtrack
  const loras = info.loras || [];
  $("lora-field").hidden = $("lora-strength-field").hidden = !loras.length;
  $("lora").replaceChildren(new Option("none", ""), ...loras.map((name) => new Option(name, name)));
}

function sizeChoices(width, height, frames, maxVolume) {
  // The default size and its scalings by 1/2 ... 2 (multiples of 32, as the VAE needs), landscape and portrait,
  // within the server's height x width x frames limit.
  const seen = new Map();
  for (const scale of [0.5, 0.75, 1, 1.5, 2]) {
    for (const [w, h] of [[width, height], [height, width]]) {
      const sw = Math.max(32, Math.round((w * scale) / 32) * 32);
      const sh = Math.max(32, Math.round((h * scale) / 32) * 32);
      if (!maxVolume || sw * sh * (frames || 1) <= maxVolume) seen.set(`${sw}x${sh}`, [sw, sh]);
    }
  }
  if (!seen.size) seen.set(`${width}x${height}`, [width, height]);
  return [...seen.values()].sort((a, b) => a[0] * a[1] - b[0] * b[1] || a[0] - b[0]);
}

function setNumber(id, value, min, max) {
  const input = $(id);
  if (value !== undefined && value !== null) input.value = value;
  if (min !== undefined) input.min = min;
  if (max !== undefined && max !== null) input.max = max;
}

function readForm() {
  const request = {prompt: $("prompt").value.trim()};
  const negative = $("negative_prompt").value.trim();
  if (negative) request.negative_prompt = negative;
  const [width, height] = $("size").value.split("x").map(Number);
  if (width && height) Object.assign(request, {width, height});
  for (const name of ["num_frames", "steps", "seed"]) {
    const raw = $(name).value.trim();
    if (raw !== "") request[name] = Number.parseInt(raw, 10);
  }
  const guidance = $("guidance_scale").value.trim();
  if (guidance !== "") request.guidance_scale = Number.parseFloat(guidance);
  if ($("lora").value) {
    request.loras = [{name: $("lora").value, strength: Number.parseFloat($("lora_strength").value || "1")}];
  }
  return request;
}

async function submit(event) {
  event.preventDefault();
  $("form-error").textContent = "";
  const request = readForm();
  if (!request.prompt) {
    $("form-error").textContent = "Write a prompt first.";
    $("prompt").focus();
    return;
  }
  $("submit").disabled = true;
  try {
    const response = await api("/v1/jobs", {
      method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(request),
    });
    const job = await response.json();
    show(job.id, {...job, request: job.request || request});
    refreshGallery();
  } catch (err) {
    $("form-error").textContent = err.message;
  } finally {
    $("submit").disabled = false;
  }
}

// ---- one job --------------------------------------------------------------------------------------------------

function show(id, job) {
  if (current) current.abort.abort();
  current = {id, abort: new AbortController()};
  $("job-panel").hidden = false;
  $("job-id").textContent = id;
  $("player").hidden = true;
  $("player").removeAttribute("src");
  $("job-links").hidden = true;
  $("job-error").textContent = "";
  render(job);
  follow(current);
}

function render(job) {
  if (!current || job.id !== current.id) return;
  const prompt = job.request && job.request.prompt;
  if (prompt) $("job-prompt").textContent = Array.isArray(prompt) ? prompt.join(" | ") : prompt;
  $("job-state").textContent = job.state;
  $("job-state").className = `state-${job.state}`;
  const progress = $("job-progress");
  const total = job.total_steps || 0;
  if (job.state === "complete") {
    progress.value = progress.max = 1;
  } else if (total) {
    progress.max = total;
    progress.value = job.step || 0;
  } else {
    progress.removeAttribute("value");  // indeterminate while queued
  }
  const parts = [];
  if (job.state === "queued" && job.queue_position !== null && job.queue_position !== undefined) {
    parts.push(`position ${job.queue_position} in the queue`);
  }
  if (job.state === "running" && total) parts.push(`step ${job.step || 0} / ${total}`);
  if (job.state === "running" && job.eta_s !== null && job.eta_s !== undefined) {
    parts.push(`about ${Math.ceil(job.eta_s)} s left`);
  }
  $("job-detail").textContent = parts.length ? `(${parts.join(", ")})` : "";
  $("job-error").textContent = job.error || "";
  $("cancel").hidden = FINAL_STATES.has(job.state);
  if (job.state === "complete") showVideo(job.id);
}

async function showVideo(id) {
  const player = $("player");
  if (player.dataset.job === id && player.src) return;
  player.dataset.job = id;
  try {
    player.src = await blobUrl(id, "video");
    player.hidden = false;
    $("link-video").href = player.src;
    $("link-video").download = `${id}.mp4`;
    $("link-sheet").href = await blobUrl(id, "contact_sheet");
    $("link-sheet").download = `${id}.png`;
    $("link-config").href = await blobUrl(id, "config");
    $("link-config").download = `${id}.yaml`;
    $("job-links").hidden = false;
  } catch (err) {
    $("job-error").textContent = `could not fetch the outputs: ${err.message}`;
  }
}

async function follow(watch) {
  // SSE first; polling when the stream fails (a proxy that buffers, an old server) or ends early.
  let last = null;
  try {
    last = await readEvents(watch, (job) => { last = job; render(job); });
  } catch (err) {
    if (watch.abort.signal.aborted) return;
  }
  while (!watch.abort.signal.aborted && !(last && FINAL_STATES.has(last.state))) {
    try {
      last = await (await api(`/v1/jobs/${watch.id}`, {signal: watch.abort.signal})).json();
      render(last);
    } catch (err) {
      if (watch.abort.signal.aborted) return;
      $("job-error").textContent = err.message;
    }
    if (!FINAL_STATES.has(last && last.state)) await sleep(POLL_MS);
  }
  if (!watch.abort.signal.aborted) refreshGallery();
}

async function readEvents(watch, onProgress) {
  // Server-sent events read from a fetch body: `event: progress` / `data: {job}` blocks, then `event: end`.
  const response = await api(`/v1/jobs/${watch.id}/events`, {
    signal: watch.abort.signal, headers: {Accept: "text/event-stream"},
  });
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let last = null;
  for (;;) {
    const {value, done} = await reader.read();
    if (done) return last;
    buffer += value.replace(/\r\n/g, "\n");
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      let name = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) name = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).trimStart());
      }
      if (name === "end") {
        if (data.length) { try { last = JSON.parse(data.join("\n")); onProgress(last); } catch (_) { /* no body */ } }
        return last;
      }
      if (name === "progress" && data.length) {
        last = JSON.parse(data.join("\n"));
        onProgress(last);
      }
    }
  }
}

async function cancel() {
  if (!current) return;
  $("cancel").disabled = true;
  try {
    await api(`/v1/jobs/${current.id}`, {method: "DELETE"});
  } catch (err) {
    $("job-error").textContent = err.message;
  } finally {
    $("cancel").disabled = false;
  }
}

// ---- the gallery ----------------------------------------------------------------------------------------------

async function refreshGallery() {
  const list = $("gallery");
  let jobs;
  try {
    const body = await (await api("/v1/jobs")).json();
    jobs = Array.isArray(body) ? body : body.jobs || [];
  } catch (err) {
    list.replaceChildren(note(`cannot list jobs: ${err.message}`));
    return;
  }
  if (!jobs.length) {
    list.replaceChildren(note("No jobs yet."));
    return;
  }
  list.replaceChildren(...jobs.slice(0, GALLERY_SIZE).map(galleryItem));
}

function galleryItem(job) {
  const item = document.createElement("li");
  const button = document.createElement("button");
  button.type = "button";
  const prompt = (job.request && job.request.prompt) || job.id;
  button.setAttribute("aria-label", `open job ${job.id}: ${prompt} (${job.state})`);
  const image = document.createElement("img");
  image.alt = "";
  const caption = document.createElement("span");
  caption.className = "caption";
  caption.textContent = Array.isArray(prompt) ? prompt.join(" | ") : prompt;
  const state = document.createElement("span");
  state.className = `state state-${job.state}`;
  state.textContent = job.state;
  button.append(image, caption, state);
  button.addEventListener("click", () => show(job.id, job));
  item.append(button);
  if (job.state === "complete") {
    blobUrl(job.id, "contact_sheet").then((url) => { image.src = url; }).catch(() => {});
  }
  return item;
}

function note(text) {
  const item = document.createElement("li");
  item.textContent = text;
  return item;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// ---- start ----------------------------------------------------------------------------------------------------

keyInput.value = localStorage.getItem("ltx-serve-key") || "";
keyInput.addEventListener("change", () => {
  localStorage.setItem("ltx-serve-key", keyInput.value.trim());
  objectUrls.clear();
  loadInfo();
  refreshGallery();
});
$("job-form").addEventListener("submit", submit);
$("cancel").addEventListener("click", cancel);
$("refresh").addEventListener("click", refreshGallery);
loadInfo();
refreshGallery();
