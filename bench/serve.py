"""Benchmark: `talkctl serve` with 1, 2 and 4 concurrent WebSocket sessions at 128^2 and 256^2.

Each size starts a real server process (`talkctl serve --run RUN --size S`); each session streams
the same speech as a microphone would: 40 ms PCM16 chunks paced in real time, then {"op": "stop"}.
Per session:
  fps        speech frames received / seconds from the first to the last (25 = keeps up)
  latency    per chunk: its send time -> arrival of the first frame showing its first sample
             (audio arrival -> frame, including the model's look-ahead and the queue)
  lag        last frame's arrival - last chunk's send (how far behind the stream ended)
  dropped    frames the server skipped to keep latency bounded (--max-lag-ms; their chunks count at
             the next frame shown)
Medians and percentiles over all sessions' chunks; the server's own /stats are kept too.
WebRTC (aiortc as the client, one session per size, --webrtc): the speech is sent as a microphone
track; the server sends each frame's 40 ms of audio back with it, so the delay of the returned
audio (cross-correlated with the sent speech, per 1 s window) is the latency from audio captured
to its frame and sound arriving, client jitter buffer included.

    OMP_WAIT_POLICY=PASSIVE python bench/serve.py --run RUN [--sizes 128,256] [--sessions 1,2,4]
        [--seconds 10] [--max-lag-ms 500] [--no-webrtc] [--out serve_cpu.json]
"""
from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import time

import numpy as np

from common import ROOT, describe, load_avg, machine, print_table, shared_file, write_json

CHUNK = 640  # 40 ms at 16 kHz


def speech(seconds: float) -> tuple[np.ndarray, str]:
    path = shared_file("data", "audio", "speaker0_19s.mp3")
    if path is not None:
        from talkctl.media.audio import load_waveform

        return load_waveform(path)[:int(seconds * 16000)], str(path.name)
    sys.path.insert(0, str(ROOT / "tests" / "fixtures"))
    import trained_run

    return trained_run.voice(seconds), "synthetic voice"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(run: str, size: int, max_sessions: int, max_lag_ms: int = 500) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE", PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    p = subprocess.Popen([sys.executable, "-m", "talkctl", "serve", "--run", run, "--size", str(size), "--port", str(port),
                          "--max-sessions", str(max_sessions), "--max-lag-ms", str(max_lag_ms), "--device", "cpu", "-q"], env=env, cwd=ROOT,
                         stderr=subprocess.PIPE, text=True)
    return p, f"http://127.0.0.1:{port}/"


async def wait_ready(url: str, p: subprocess.Popen, timeout: float = 300) -> None:
    import aiohttp

    t_end = time.monotonic() + timeout
    async with aiohttp.ClientSession() as s:
        while time.monotonic() < t_end:
            if p.poll() is not None:
                raise SystemExit(f"server exited: {p.stderr.read()[-2000:]}")
            try:
                async with s.get(url + "health") as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.2)
    raise SystemExit("server did not start")


async def session(url: str, wav: np.ndarray) -> dict:
    from talkctl.live.clients import ws_stream

    sent, got = await ws_stream(url, wav)
    lat, j = [], 0
    for s0, t_frame in got:  # frames arrive in order: each chunk's first frame is the first covering it
        while j < len(sent) and sent[j][0] < s0 + CHUNK:
            lat.append((t_frame - sent[j][1]) * 1000)
            j += 1
    span = got[-1][1] - got[0][1] if len(got) > 1 else float("nan")
    return {"frames": len(got), "fps": (len(got) - 1) / span if span > 0 else None, "latency_ms": lat,
            "lag_ms": (got[-1][1] - sent[-1][1]) * 1000 if got else None}


async def measure(url: str, wav: np.ndarray, n: int) -> dict:
    res = await asyncio.gather(*(session(url, wav) for _ in range(n)))
    lat = np.concatenate([r["latency_ms"] for r in res])
    return {"sessions": n, "frames_per_session": [r["frames"] for r in res],
            "fps_per_session_median": round(float(np.median([r["fps"] for r in res])), 2),
            "fps_total": round(float(sum(r["fps"] for r in res)), 2),
            "latency_ms_p50": round(float(np.percentile(lat, 50)), 1),
            "latency_ms_p90": round(float(np.percentile(lat, 90)), 1),
            "latency_ms_p99": round(float(np.percentile(lat, 99)), 1),
            "lag_ms_max": round(max(r["lag_ms"] for r in res), 1)}


async def server_stats(url: str) -> dict:
    import aiohttp

    async with aiohttp.ClientSession() as s, s.get(url + "stats") as r:
        return await r.json()


def echo_latency_ms(sent: np.ndarray, back: np.ndarray, offset_s: float, window_s: float = 1.0,
                    search_s: float = 3.0) -> list[float]:
    """Per window of the sent speech: where it recurs in the returned audio, as a delay in ms
    (offset_s: the returned audio's start minus the sent audio's, in wall-clock time)."""
    from scipy.signal import correlate

    w, n = int(window_s * 16000), int(search_s * 16000)
    out = []
    for i in range(0, len(sent) - w, w):
        x = sent[i:i + w]
        if np.sqrt(np.mean(x ** 2)) < 0.01:  # a pause: nothing to find
            continue
        lo = max(0, i - int(offset_s * 16000))
        seg = back[lo:lo + n + w]
        if len(seg) < w:
            continue
        energy = np.concatenate([[0.0], np.cumsum(seg.astype(np.float64) ** 2)])
        c = correlate(seg, x, mode="valid", method="fft") / (np.linalg.norm(x) * (np.sqrt(energy[w:] - energy[:-w]) + 1e-9))
        j = int(np.argmax(c))
        if c[j] > 0.5:  # a clear match (Opus keeps speech's waveform well enough)
            out.append((offset_s + (lo + j - i) / 16000) * 1000)
    return out


async def webrtc_row(url: str, size: int, wav: np.ndarray) -> dict:
    from talkctl.live.clients import call

    before = await server_stats(url)
    res = await call(url, wav, seconds=len(wav) / 16000 + 2.0)
    after = await server_stats(url)
    if res.status != 200 or res.audio_t0 is None:
        return {"size": size, "sessions": "1 webrtc", "error": res.error or "no audio came back"}
    lat = echo_latency_ms(wav, res.audio_array(), res.audio_t0 - res.sent_t0)
    t = np.array([a for a, _ in res.frames])
    t = t[(t >= res.sent_t0) & (t <= res.sent_t0 + len(wav) / 16000)]
    row = {"size": size, "sessions": "1 webrtc", "frames_per_session": [len(res.frames)],
           "fps_per_session_median": round(float((len(t) - 1) / (t[-1] - t[0])), 2) if len(t) > 1 else None,
           "dropped": after["frames"]["dropped"] - before["frames"]["dropped"], "echo_windows": len(lat)}
    if lat:
        row.update({f"latency_ms_p{p}": round(float(np.percentile(lat, p)), 1) for p in (50, 90, 99)})
    return row


async def bench_size(run: str, size: int, counts: list[int], wav: np.ndarray, max_lag_ms: int,
                     webrtc: bool) -> list[dict]:
    p, url = start_server(run, size, max(counts), max_lag_ms)
    try:
        await wait_ready(url, p)
        await measure(url, wav[:16000], 1)  # warm-up
        rows = []
        for n in counts:
            before = (await server_stats(url))["frames"]["dropped"]
            row = {"size": size, **await measure(url, wav, n)}
            row["dropped"] = (await server_stats(url))["frames"]["dropped"] - before
            row["load_avg_1min"] = load_avg()[0]
            print(f"  {size}px x{n}: {row['fps_per_session_median']} fps/session, latency p50 {row['latency_ms_p50']} ms, "
                  f"{row['dropped']} dropped", flush=True)
            rows.append(row)
        if webrtc:
            row = {**await webrtc_row(url, size, wav), "load_avg_1min": load_avg()[0]}
            print(f"  {size}px webrtc: {row}", flush=True)
            rows.append(row)
        rows[-1]["server_stats"] = await server_stats(url)
        return rows
    finally:
        p.terminate()
        p.wait(60)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True, help="a trained run (audio-driven head, mel-formant features)")
    ap.add_argument("--sizes", default="128,256")
    ap.add_argument("--sessions", default="1,2,4")
    ap.add_argument("--seconds", type=float, default=10.0, help="speech per session")
    ap.add_argument("--max-lag-ms", type=int, default=500, help="the server's --max-lag-ms (0: never skip frames)")
    ap.add_argument("--no-webrtc", action="store_true", help="skip the WebRTC row (it needs aiortc)")
    ap.add_argument("--out", default="serve_cpu.json")
    a = ap.parse_args()
    import importlib.util

    webrtc = not a.no_webrtc and importlib.util.find_spec("aiortc") is not None
    info = machine()
    wav, source = speech(a.seconds)
    counts = [int(x) for x in a.sessions.split(",")]
    rows = []
    for size in (int(x) for x in a.sizes.split(",")):
        rows += asyncio.run(bench_size(a.run, size, counts, wav, a.max_lag_ms, webrtc))
    info["load_avg_after"] = load_avg()
    print_table(rows, [("size", "size"), ("sessions", "sessions"), ("fps_per_session_median", "fps/session"),
                       ("fps_total", "fps total"), ("latency_ms_p50", "latency p50 ms"),
                       ("latency_ms_p90", "p90"), ("latency_ms_p99", "p99"), ("lag_ms_max", "end lag ms"),
                       ("dropped", "dropped"), ("load_avg_1min", "load")])
    print(describe(info))
    write_json(a.out, {"machine": info, "run": a.run, "audio": source, "seconds": round(len(wav) / 16000, 2),
                       "chunk_ms": CHUNK / 16, "max_lag_ms": a.max_lag_ms, "rows": rows})


if __name__ == "__main__":
    main()
