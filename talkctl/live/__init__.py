"""Live serving: a trained head speaking audio as it arrives (talkctl serve).

protocol.py  the WebSocket wire format (frame header, PCM16 in, control ops)
engine.py    the loaded model shared by every session: features recipe, renderer, poses, JPEG
session.py   one client's stream: incremental features, speech and idle frames, latency
stats.py     rolling figures for GET /stats
app.py       the aiohttp application and the serve loop (signals, session limit, token)
static/      the page served at GET / (no CDN)
"""
