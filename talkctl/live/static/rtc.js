// talkctl serve page, WebRTC transport: microphone or file -> POST /offer's peer; the head's video
// and the same audio come back in sync on one <video>. Control ops and events ride a data channel.
"use strict";
const rtcView = $("rtcview");
let pc = null, chan = null, rtcShown = [], rtcFile = null;

function rtcSend(op) { if (chan && chan.readyState === "open") chan.send(JSON.stringify(op)); }

function rtcClose() {
  if (rtcFile) { try { rtcFile.stop(); } catch (e) { /* not started */ } rtcFile = null; }
  if (pc) { pc.onconnectionstatechange = null; pc.close(); pc = null; chan = null; }
}

function gathered(peer) {  // the server takes no trickled candidates: send them all in the offer
  return new Promise((resolve) => {
    if (peer.iceGatheringState === "complete") return resolve();
    peer.onicegatheringstatechange = () => { if (peer.iceGatheringState === "complete") resolve(); };
    setTimeout(resolve, 3000);
  });
}

async function rtcConnect(track, levelDb) {
  rtcClose();
  const peer = pc = new RTCPeerConnection({ iceServers: [] });
  chan = pc.createDataChannel("control");
  chan.onmessage = (e) => onEvent(JSON.parse(e.data));
  if (track) pc.addTransceiver(track, { direction: "sendrecv" });
  else pc.addTransceiver("audio", { direction: "recvonly" });
  pc.addTransceiver("video", { direction: "recvonly" });
  const stream = new MediaStream();
  pc.ontrack = (e) => { stream.addTrack(e.track); rtcView.srcObject = stream; rtcView.play().catch(() => {}); };
  const connected = new Promise((resolve, reject) => {
    pc.onconnectionstatechange = () => {
      $("state").textContent = "webrtc " + peer.connectionState;
      if (peer.connectionState === "connected") resolve();
      if (peer.connectionState === "failed") reject(new Error("WebRTC connection failed"));
      if (peer.connectionState === "closed" || peer.connectionState === "failed") {
        if (peer === pc) setTimeout(() => rtcConnect(null).catch((err) => log(err.message)), 300);  // idle again
      }
    };
  });
  await pc.setLocalDescription(await pc.createOffer());
  await gathered(pc);
  const body = { sdp: pc.localDescription.sdp, type: "offer" };
  if (levelDb !== undefined) body.level_db = levelDb;
  const r = await fetch("offer", { method: "POST", body: JSON.stringify(body),
                                   headers: authHeaders({ "Content-Type": "application/json" }) });
  const answer = await r.json();
  if (!r.ok) throw new Error("offer refused: " + answer.error);
  await pc.setRemoteDescription(answer);
  await connected;
}

async function rtcStart(kind) {
  rtcView.muted = kind === "mic";  // the voice comes back in sync; a microphone would hear itself
  if (kind === "mic") {
    const stream = await navigator.mediaDevices.getUserMedia({ audio: { channelCount: 1, echoCancellation: true } });
    await rtcConnect(stream.getAudioTracks()[0]);
    return;
  }
  const { x, node } = await decodeFile();
  const dest = audioContext().createMediaStreamDestination();
  node.connect(dest);
  await rtcConnect(dest.stream.getAudioTracks()[0], speechLevelDb(x));
  rtcFile = node;
  node.onended = () => rtcSend({ op: "stop" });
  node.start();
}

function countShown() {  // frames the <video> presented, for the fps figure
  const now = performance.now();
  rtcShown.push(now);
  rtcShown = rtcShown.filter((a) => a > now - 1000);
  if (useRtc) $("fps").textContent = rtcShown.length;
  rtcView.requestVideoFrameCallback(countShown);
}
if (rtcView.requestVideoFrameCallback) rtcView.requestVideoFrameCallback(countShown);

setInterval(async () => {  // the server's own figures (over all sessions): latency p50, dropped frames
  try {
    const s = await (await fetch("stats", { headers: authHeaders() })).json();
    $("server").textContent = `${s.latency_ms ? Math.round(s.latency_ms.p50) + " ms" : "-"} / ${s.frames.dropped}`;
    if (useRtc && s.latency_ms) $("latency").textContent = Math.round(s.latency_ms.p50) + " (server)";
    if (useRtc) $("counts").textContent = `${s.frames.speech} / ${s.frames.idle} (server)`;
  } catch (e) { /* server gone: the state says so */ }
}, 1000);
