"""Live serving: a trained head speaking audio as it arrives (talkctl serve).

protocol.py  the WebSocket wire format (frame header, PCM16 in, control ops)
engine.py    the loaded model shared by every session: features recipe, renderer, poses, JPEG
session.py   one client's stream, whatever the transport: incremental features, speech and idle
             frames, skipping frames that are too late, latency
hub.py       what the transports share: options, the session limit, per-session parameters
ws.py        the /ws transport;  webrtc.py  the POST /offer transport (aiortc, optional)
stats.py     rolling figures for GET /stats
app.py       the aiohttp application and the serve loop (signals, token)
clients.py   /ws and WebRTC clients (scripts, tests, bench)
static/      the page served at GET / (no CDN)
"""
