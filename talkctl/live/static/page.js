// talkctl serve page: microphone or file -> PCM16 over /ws -> JPEG frames on a canvas, audio in sync.
"use strict";
const SR = 16000, FRAME = 640, HEADER = 20;
const $ = (id) => document.getElementById(id);
const token = new URLSearchParams(location.search).get("token");
const canvas = $("view"), g = canvas.getContext("2d");
let ws = null, ctx = null, mic = null, sender = null, player = null;
let sent = 0, chunks = [], latencies = [], arrivals = [], counts = [0, 0];
let queue = [], playStart = null, utterStart = null, mode = "mic", useRtc = false;

function log(msg) { $("log").textContent = msg; }
function authHeaders(extra = {}) { return token ? { ...extra, Authorization: "Bearer " + token } : extra; }
function wsUrl(levelDb) {
  const q = new URLSearchParams();
  if (token) q.set("token", token);
  if (levelDb !== undefined) q.set("level_db", levelDb.toFixed(3));
  return (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws?" + q;
}

function connect(levelDb) {
  return new Promise((resolve, reject) => {
    if (ws) { ws.onclose = null; ws.close(); }
    sent = 0; chunks = [];  // sample counts are per session
    ws = new WebSocket(wsUrl(levelDb));
    ws.binaryType = "arraybuffer";
    ws.onopen = () => { $("state").textContent = "connected"; resolve(); };
    ws.onerror = () => reject(new Error("WebSocket failed (wrong token or server down?)"));
    ws.onclose = (e) => {
      $("state").textContent = `closed (${e.code}${e.reason ? ": " + e.reason : ""})`;
      stopSending();
      if (e.code === 1000) setTimeout(() => connect().catch((err) => log(err.message)), 300);  // idle again
    };
    ws.onmessage = onMessage;
  });
}

function onEvent(m) {
  if (m.event === "hello") $("srvsize").textContent = `${m.size} px, look-ahead ${m.lookahead_ms} ms`;
  else if (m.event === "error") log("server: " + m.message);
  else $("state").textContent = m.event;
}

function onMessage(e) {
  if (typeof e.data === "string") { onEvent(JSON.parse(e.data)); return; }
  const dv = new DataView(e.data);
  const kind = dv.getUint8(8), t = dv.getFloat64(12, true);
  const blob = new Blob([new Uint8Array(e.data, HEADER)], { type: "image/jpeg" });
  const now = performance.now();
  arrivals.push(now);
  counts[kind] += 1;
  if (kind === 0) {
    const s = Math.round(t * SR);
    while (chunks.length && chunks[0].start < s + FRAME) latencies.push(now - chunks.shift().time);
    if (latencies.length > 200) latencies = latencies.slice(-200);
    if (utterStart === null) { utterStart = t; if (mode === "file" && player) startPlayback(); }
  }
  createImageBitmap(blob).then((img) => queue.push({ img, kind, t }));
}

function startPlayback() {
  player.connect(ctx.destination);
  player.start();
  playStart = ctx.currentTime;
}

function draw() {
  // file mode: a speech frame shows when the played audio reaches it; otherwise the newest frame
  let pick = null;
  while (queue.length) {
    const f = queue[0];
    const due = f.kind === 1 || playStart === null || mode !== "file" || ctx.currentTime - playStart >= f.t - utterStart;
    if (!due) break;
    pick = queue.shift();
  }
  if (pick) {
    if (canvas.width !== pick.img.width) { canvas.width = pick.img.width; canvas.height = pick.img.height; }
    g.drawImage(pick.img, 0, 0);
  }
  const now = performance.now();
  arrivals = arrivals.filter((a) => a > now - 1000);
  if (!useRtc) $("fps").textContent = arrivals.length;
  if (latencies.length) {
    const s = [...latencies].sort((a, b) => a - b);
    $("latency").textContent = Math.round(s[s.length >> 1]);
  }
  if (!useRtc) $("counts").textContent = `${counts[0]} / ${counts[1]}`;
  requestAnimationFrame(draw);
}

function sendPcm(f32) {
  if (!ws || ws.readyState !== 1) return;
  const pcm = new Int16Array(f32.length);
  for (let i = 0; i < f32.length; i++) pcm[i] = Math.max(-32768, Math.min(32767, Math.round(f32[i] * 32768)));
  chunks.push({ start: sent, time: performance.now() });
  sent += f32.length;
  ws.send(pcm.buffer);
}

function audioContext() {
  if (!ctx) ctx = new AudioContext({ sampleRate: SR });  // the browser resamples the microphone / file
  return ctx;
}

async function startMic() {
  const stream = await navigator.mediaDevices.getUserMedia({ audio: { channelCount: 1, echoCancellation: true } });
  const c = audioContext();
  const src = c.createMediaStreamSource(stream);
  const proc = c.createScriptProcessor(1024, 1, 1);
  proc.onaudioprocess = (e) => sendPcm(e.inputBuffer.getChannelData(0));
  src.connect(proc); proc.connect(c.destination);  // output is silence; the node only runs when connected
  mic = { stream, src, proc };
}

function speechLevelDb(x) {
  // the offline extractor's speech level: 95th percentile of 25 ms frame energies (10 ms hop, zero-padded)
  const n = Math.floor(x.length / 160) + 1, e = new Float64Array(n);
  for (let j = 0; j < n; j++) {
    let s = 0;
    for (let k = j * 160 - 200; k < j * 160 + 200; k++) if (k >= 0 && k < x.length) s += x[k] * x[k];
    e[j] = 10 * Math.log10(s / 400 + 1e-12);
  }
  const v = Array.from(e).sort((a, b) => a - b), pos = 0.95 * (n - 1), lo = Math.floor(pos);
  return lo + 1 < n ? v[lo] + (v[lo + 1] - v[lo]) * (pos - lo) : v[lo];
}

async function decodeFile() {  // the chosen file as 16 kHz mono, and a player node of it
  const file = $("file").files[0];
  if (!file) throw new Error("choose an audio file first");
  const c = audioContext();
  const buf = await c.decodeAudioData(await file.arrayBuffer());
  const x = new Float32Array(buf.length);
  for (let ch = 0; ch < buf.numberOfChannels; ch++) {
    const d = buf.getChannelData(ch);
    for (let i = 0; i < x.length; i++) x[i] += d[i] / buf.numberOfChannels;
  }
  const node = c.createBufferSource(), mono = c.createBuffer(1, x.length, SR);
  mono.copyToChannel(x, 0);
  node.buffer = mono;
  return { x, node };
}

async function startFile() {
  const { x, node } = await decodeFile();
  queue = []; playStart = null; utterStart = null;
  await connect(speechLevelDb(x));  // a known level: the features equal the offline render's
  player = node;
  let pos = 0;
  sender = setInterval(() => {  // real time, 40 ms at a time, as a microphone would
    sendPcm(x.subarray(pos, pos + FRAME));
    pos += FRAME;
    if (pos >= x.length) { clearInterval(sender); sender = null; ws.send(JSON.stringify({ op: "stop" })); }
  }, 1000 * FRAME / SR);
}

function stopSending() {
  if (sender) { clearInterval(sender); sender = null; }
  if (mic) { mic.proc.disconnect(); mic.src.disconnect(); mic.stream.getTracks().forEach((t) => t.stop()); mic = null; }
}

$("start").onclick = async () => {
  stopSending();
  mode = document.querySelector("input[name=src]:checked").value;
  try {
    await audioContext().resume();
    if (useRtc) await rtcStart(mode);
    else if (mode === "mic") { if (!ws || ws.readyState !== 1) await connect(); await startMic(); }
    else await startFile();
    $("state").textContent = "streaming " + mode;
  } catch (err) { log(err.message); }
};
$("interrupt").onclick = () => {
  stopSending();
  if (useRtc) { rtcSend({ op: "interrupt" }); return; }
  if (player && playStart !== null) player.stop();
  player = null; playStart = null; utterStart = null; queue = queue.filter((f) => f.kind === 1);
  if (ws && ws.readyState === 1) ws.send(JSON.stringify({ op: "interrupt" }));
};
$("stop").onclick = () => {
  stopSending();
  if (useRtc) rtcSend({ op: "stop" });
  else if (ws && ws.readyState === 1) ws.send(JSON.stringify({ op: "stop" }));
};
$("size").onchange = () => {
  for (const el of [canvas, $("rtcview")]) el.style.width = el.style.height = $("size").value + "px";
};
$("size").onchange();

async function begin() {  // WebRTC when both ends have it (?transport=ws forces the WebSocket)
  const q = new URLSearchParams(location.search);
  const health = await (await fetch("health", { headers: authHeaders() })).json();
  useRtc = q.get("transport") !== "ws" && health.webrtc && !!window.RTCPeerConnection;
  $("transport").textContent = useRtc ? "WebRTC" : "WebSocket" + (health.webrtc ? "" : " (server has no WebRTC)");
  canvas.hidden = useRtc; $("rtcview").hidden = !useRtc;
  if (useRtc) await rtcConnect(null); else await connect();
  if (q.get("autostart") === "mic") $("start").onclick();  // kiosk use, the headless-browser check
}
begin().catch((err) => log(err.message));
requestAnimationFrame(draw);
