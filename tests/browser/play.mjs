// Plays an LL-HLS stream with hls.js in headless Chromium and prints one JSON line with
// what happened, for tests/hls.rs to assert on:
//
//   node tests/browser/play.mjs URL [WATCH_SECONDS]
//
// The page and hls.js come from a tiny HTTP server in this script on another port (a
// different origin than shardcast, so CORS is exercised as on a real site). The script
// only measures; the Rust test owns the pass/fail bounds. It exits 2 when it cannot run
// at all (no Chromium, no node_modules), 1 when playback never started, else 0.

import { createServer } from "node:http";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";

function fail(code, message) {
  console.error(`play.mjs: ${message}`);
  process.exit(code);
}

const [url, watchArg] = process.argv.slice(2);
if (!url) fail(2, "usage: node play.mjs URL [WATCH_SECONDS]");
const watchSeconds = Number(watchArg || 6);
if (!existsSync(CHROMIUM)) fail(2, `${CHROMIUM} not found: apt-get install chromium`);
const hlsPath = join(here, "node_modules/hls.js/dist/hls.min.js");
if (!existsSync(hlsPath)) fail(2, "node_modules missing: run `npm install` in tests/browser (tests/run.sh does)");
let chromium;
try {
  ({ chromium } = await import("playwright-core"));
} catch (e) {
  fail(2, `playwright-core not installed (${e.message}): run \`npm install\` in tests/browser`);
}

const page = `<!doctype html>
<html><head><meta charset="utf-8"><title>shardcast LL-HLS</title></head>
<body><video id="v" muted playsinline autoplay></video>
<script src="/hls.min.js"></script>
</body></html>`;
const hlsJs = readFileSync(hlsPath);
const server = createServer((req, res) => {
  if (req.url === "/favicon.ico") {
    res.writeHead(204).end();
  } else if (req.url === "/") {
    res.writeHead(200, { "content-type": "text/html" }).end(page);
  } else if (req.url === "/hls.min.js") {
    res.writeHead(200, { "content-type": "text/javascript" }).end(hlsJs);
  } else {
    res.writeHead(404).end();
  }
});
await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
const pageUrl = `http://127.0.0.1:${server.address().port}/`;

// A fresh profile per run: no cached segments or playlists from an earlier run.
const profile = mkdtempSync(join(tmpdir(), "shardcast-chromium-"));
let context;
const result = { url };
try {
  context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      // Muted video may autoplay anyway; this removes the policy from the equation.
      "--autoplay-policy=no-user-gesture-required",
    ],
  });
  const tab = context.pages()[0] || (await context.newPage());
  const consoleErrors = [];
  // Every request the player makes to the stream's origin, for tests that check what
  // each one carries (a token in the query).
  const streamOrigin = new URL(url).origin;
  const requests = [];
  tab.on("request", (r) => r.url().startsWith(streamOrigin) && requests.push(r.url()));
  tab.on("console", (m) => m.type() === "error" && consoleErrors.push(m.text()));
  tab.on("pageerror", (e) => consoleErrors.push(String(e)));
  await tab.goto(pageUrl);
  const measured = await tab.evaluate(
    async ({ url, watchSeconds }) => {
      const out = {
        hlsVersion: Hls.version,
        mseSupported: Hls.isSupported(),
        // Debian's chromium is built with the proprietary codecs; say so if not.
        h264: MediaSource.isTypeSupported('video/mp4; codecs="avc1.42c00d"'),
        aac: MediaSource.isTypeSupported('audio/mp4; codecs="mp4a.40.2"'),
        errors: [],
      };
      if (!out.mseSupported) return out;
      const video = document.getElementById("v");
      const hls = new Hls({ lowLatencyMode: true, debug: false });
      hls.on(Hls.Events.ERROR, (_, d) => out.errors.push(`${d.fatal ? "FATAL " : ""}${d.type}/${d.details}`));
      hls.on(Hls.Events.LEVEL_LOADED, (_, d) => {
        out.live = d.details.live;
        out.partTarget = d.details.partTarget;
        out.canBlockReload = d.details.canBlockReload;
      });
      hls.loadSource(url);
      hls.attachMedia(video);
      const t0 = performance.now();
      const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
      // Wait for the first rendered frames (currentTime moving), up to 15 s.
      while (video.currentTime === 0 || video.paused) {
        if (performance.now() - t0 > 15000 || out.errors.some((e) => e.startsWith("FATAL"))) {
          out.startMs = null;
          out.readyState = video.readyState;
          out.videoError = video.error && video.error.message;
          hls.destroy();
          return out;
        }
        if (video.paused) video.play().catch(() => {});
        await sleep(50);
      }
      out.startMs = Math.round(performance.now() - t0);
      const wall0 = performance.now();
      const start = video.currentTime;
      const latencies = [];
      const pdtLatencies = [];
      while (performance.now() - wall0 < watchSeconds * 1000) {
        await sleep(500);
        if (Number.isFinite(hls.latency)) latencies.push(hls.latency);
        // Program date time of the frame on screen, against this machine's clock
        // (the server's clock, here): glass-to-glass minus the encoder's delay.
        const playing = hls.playingDate;
        if (playing) pdtLatencies.push((Date.now() - playing.getTime()) / 1000);
      }
      out.wallSeconds = (performance.now() - wall0) / 1000;
      out.currentTimeStart = start;
      out.currentTimeEnd = video.currentTime;
      out.advanced = video.currentTime - start;
      const q = video.getVideoPlaybackQuality();
      out.framesDecoded = q.totalVideoFrames;
      out.framesDropped = q.droppedVideoFrames;
      out.videoWidth = video.videoWidth;
      out.videoHeight = video.videoHeight;
      const median = (a) => (a.length ? [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)] : null);
      out.latency = median(latencies);
      out.latencyMax = latencies.length ? Math.max(...latencies) : null;
      out.pdtLatency = median(pdtLatencies);
      out.targetLatency = hls.targetLatency;
      hls.destroy();
      return out;
    },
    { url, watchSeconds },
  );
  Object.assign(result, measured, { consoleErrors, requests });
} catch (e) {
  result.exception = String(e && e.stack ? e.stack : e);
} finally {
  if (context) await context.close().catch(() => {});
  server.close();
  rmSync(profile, { recursive: true, force: true });
}
console.log(JSON.stringify(result));
process.exit(result.startMs ? 0 : 1);
