// Drives the LiveNexus console in Debian's headless Chromium through playwright-core (from console/node_modules).
//
// Usage: node drive.mjs '<json options>'; prints one JSON result line prefixed with "RESULT ".
// Options: consoleUrl, room, name, mode ("transcribe" | "errors" | "denied-mic" | "read-only"), chromium, wav (fake mic file),
// outDir (downloads), screenshot, partialScreenshot (first live line with both parts), minFinals, settleMs, timeoutMs, expectErrors,
// accessKey (typed into the page's access key field before connecting).
// The script only observes and reports; the pytest side makes the assertions.

import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const opts = JSON.parse(process.argv[2] ?? '{}');
const consoleDir = opts.consoleDir ?? path.resolve(here, '..', '..', 'console');
const require = createRequire(path.join(consoleDir, 'package.json'));
const { chromium } = require('playwright-core');

const log = (...a) => console.error('[drive]', ...a);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// The fresh profile directory is passed to launchPersistentContext (Playwright sets --user-data-dir itself).
function chromiumArgs() {
  const args = [
    '--headless=new',
    '--no-sandbox',
    '--disable-gpu',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
    '--no-first-run',
    '--use-fake-device-for-media-stream',
    // Keep timers and WebAudio running at full speed in a headless, never-focused window.
    '--disable-background-timer-throttling',
    '--disable-renderer-backgrounding',
    '--autoplay-policy=no-user-gesture-required',
  ];
  if (opts.mode === 'denied-mic') args.push('--deny-permission-prompts');
  else args.push('--use-fake-ui-for-media-stream');
  if (opts.wav) args.push(`--use-file-for-fake-audio-capture=${opts.wav}%noloop`);
  // A page reached through a cluster Service IP over plain http is not a secure context, so the browser would
  // refuse it a microphone; real users reach it over https (Ingress) or localhost (port-forward).
  if (opts.secureOrigin) args.push(`--unsafely-treat-insecure-origin-as-secure=${opts.secureOrigin}`);
  return args;
}

/** Everything the page shows that the test cares about, read from the DOM. */
async function snapshot(page) {
  return page.evaluate(() => {
    const q = (s) => document.querySelector(s);
    return {
      state: q('#conn-state')?.textContent ?? '',
      stateAttr: q('#conn-state')?.getAttribute('data-state') ?? '',
      identity: q('#identity')?.textContent ?? '',
      transcriber: q('#transcriber')?.textContent ?? '',
      ignored: Number(q('#ignored')?.textContent ?? -1),
      trustNote: q('#trust-note')?.textContent?.trim() ?? '',
      micHelp: q('#mic-help')?.textContent ?? '',
      accessShown: !(q('#access-field')?.hidden ?? true),
      meter: Number(q('#mic-level')?.value ?? 0),
      errorShown: !(q('#error')?.hidden ?? true),
      errorTitle: q('#error-title')?.textContent ?? '',
      errorDetail: q('#error-detail')?.textContent ?? '',
      finals: [...document.querySelectorAll('#finals li.final')].map((li) => ({
        segmentId: li.getAttribute('data-segment-id'),
        sources: li.getAttribute('data-sources'),
        time: li.querySelector('.ts')?.textContent ?? '',
        speaker: li.querySelector('.speaker')?.textContent ?? '',
        text: li.querySelector('.text')?.textContent ?? '',
        latency: li.querySelector('.latency')?.textContent ?? '',
        latencyMs: li.querySelector('.latency')?.getAttribute('data-ms'),
      })),
      live: [...document.querySelectorAll('#live .partial')].map((p) => ({
        segmentId: p.getAttribute('data-segment-id'),
        speaker: p.querySelector('.speaker')?.textContent ?? '',
        stable: p.querySelector('.stable')?.textContent ?? '',
        unstable: p.querySelector('.unstable')?.textContent ?? '',
      })),
      toasts: [...document.querySelectorAll('#toasts .toast')].map((t) => t.textContent),
    };
  });
}

async function connectAndWait(page, result) {
  if (opts.accessKey) await page.getByLabel('Access key').fill(opts.accessKey);
  await page.getByLabel('Your name').fill(opts.name ?? 'Tester');
  // Keyboard operation: focus the button and press Enter, as a keyboard user would.
  const button = page.getByRole('button', { name: 'Connect' });
  await button.focus();
  await page.keyboard.press('Enter');
  await page.waitForFunction(
    () => {
      const s = document.querySelector('#conn-state')?.getAttribute('data-state');
      return s === 'connected' || !document.querySelector('#error')?.hidden;
    },
    null,
    { timeout: 30_000 },
  );
  result.afterConnect = await snapshot(page);
}

async function transcribe(page, result) {
  await connectAndWait(page, result);
  const deadline = Date.now() + (opts.timeoutMs ?? 120_000);
  let lastCount = -1;
  let lastChange = Date.now();
  result.partialsSeen = [];
  result.meterMax = 0;
  const seenPartial = new Set();
  while (Date.now() < deadline) {
    const s = await snapshot(page);
    result.meterMax = Math.max(result.meterMax, s.meter);
    for (const p of s.live) {
      if (opts.partialScreenshot && !result.partialScreenshot && p.stable && p.unstable) {
        await page.screenshot({ path: opts.partialScreenshot, fullPage: true });
        result.partialScreenshot = opts.partialScreenshot;
      }
      const key = `${p.segmentId}|${p.stable}|${p.unstable}`;
      if (!seenPartial.has(key)) {
        seenPartial.add(key);
        result.partialsSeen.push(p);
      }
    }
    if (s.finals.length !== lastCount) {
      lastCount = s.finals.length;
      lastChange = Date.now();
    }
    const enough = s.finals.length >= (opts.minFinals ?? 1);
    if (enough && s.live.length === 0 && Date.now() - lastChange >= (opts.settleMs ?? 4000)) break;
    await sleep(50);
  }
  result.final = await snapshot(page);

  // Copy: the clipboard must hold the same text the export gets.
  await page.getByRole('button', { name: 'Copy' }).click();
  await page.waitForSelector('#toasts .toast', { timeout: 5000 });
  result.copyToast = (await snapshot(page)).toasts.at(-1) ?? '';
  try {
    result.clipboard = await page.evaluate(() => navigator.clipboard.readText());
  } catch (err) {
    result.clipboardError = String(err);
  }

  // Export TXT: a real download, saved and read back.
  const [download] = await Promise.all([
    page.waitForEvent('download', { timeout: 10_000 }),
    page.getByRole('button', { name: 'Export TXT' }).click(),
  ]);
  const saved = path.join(opts.outDir, download.suggestedFilename());
  await download.saveAs(saved);
  result.exportName = download.suggestedFilename();
  result.exportPath = saved;
  result.exportText = readFileSync(saved, 'utf8');
  await sleep(300);
  result.exportToast = (await snapshot(page)).toasts.at(-1) ?? '';
  result.a11y = await page.evaluate(() => ({
    finalsLive: document.querySelector('#finals')?.getAttribute('aria-live'),
    unlabelled: [...document.querySelectorAll('button, select, input, meter')]
      .filter((e) => !(e.labels?.length || e.getAttribute('aria-label') || e.textContent?.trim()))
      .map((e) => e.id),
  }));
  if (opts.screenshot) await page.screenshot({ path: opts.screenshot, fullPage: true });

  await page.getByRole('button', { name: 'Disconnect' }).click();
  await page.waitForFunction(() => document.querySelector('#conn-state')?.getAttribute('data-state') === 'disconnected');
  result.afterDisconnect = await snapshot(page);
}

async function errors(page, result) {
  // Each attempt is one click on Connect; the test decides what the server makes of it.
  result.attempts = [];
  for (let i = 0; i < (opts.attempts ?? 1); i++) {
    await page.getByRole('button', { name: 'Connect' }).click();
    await page.waitForFunction(() => !document.querySelector('#error')?.hidden, null, { timeout: 30_000 });
    await page.waitForFunction(() => !document.querySelector('#connect')?.disabled, null, { timeout: 30_000 });
    result.attempts.push(await snapshot(page));
    if (opts.screenshot) await page.screenshot({ path: opts.screenshot, fullPage: true }); // the last error shown
    await page.getByRole('button', { name: 'Dismiss' }).click();
  }
}

async function deniedMic(page, result) {
  await connectAndWait(page, result);
  await page.waitForFunction(() => !document.querySelector('#error')?.hidden, null, { timeout: 30_000 });
  result.final = await snapshot(page);
  if (opts.screenshot) await page.screenshot({ path: opts.screenshot, fullPage: true });
}

async function readOnly(page, result) {
  await connectAndWait(page, result);
  await sleep(opts.settleMs ?? 2000); // long enough for a refused publish to surface as an error
  result.final = await snapshot(page);
}

async function main() {
  const outDir = opts.outDir ?? mkdtempSync(path.join(tmpdir(), 'livenexus-drive-'));
  opts.outDir = outDir;
  const profileDir = mkdtempSync(path.join(tmpdir(), 'livenexus-chromium-'));
  const result = { mode: opts.mode, console: [] };
  let context;
  try {
    context = await chromium.launchPersistentContext(profileDir, {
    executablePath: opts.chromium ?? '/usr/bin/chromium',
    headless: true,
    args: chromiumArgs(),
    acceptDownloads: true,
    viewport: { width: 1280, height: 800 },
    });
  } catch (err) {
    result.error = `launching ${opts.chromium ?? '/usr/bin/chromium'} failed: ${err?.message ?? err}`;
    process.stdout.write(`RESULT ${JSON.stringify(result)}\n`);
    return;
  }
  try {
    if (opts.mode !== 'denied-mic') {
      await context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: new URL(opts.consoleUrl).origin });
    }
    const page = context.pages()[0] ?? (await context.newPage());
    page.on('console', (m) => {
      if (m.type() === 'error' || m.type() === 'warning') result.console.push(`${m.type()}: ${m.text()}`);
    });
    page.on('pageerror', (e) => result.console.push(`pageerror: ${e.message}`));
    const url = new URL(opts.consoleUrl);
    if (opts.room) url.searchParams.set('room', opts.room);
    await page.goto(url.toString());
    await page.waitForFunction(() => !document.querySelector('#connect')?.disabled, null, { timeout: 15_000 });
    result.initial = await snapshot(page);
    if (opts.mode === 'errors') await errors(page, result);
    else if (opts.mode === 'denied-mic') await deniedMic(page, result);
    else if (opts.mode === 'read-only') await readOnly(page, result);
    else await transcribe(page, result);
  } catch (err) {
    result.error = String(err?.stack ?? err);
    log(result.error);
  } finally {
    await context.close();
    rmSync(profileDir, { recursive: true, force: true });
  }
  process.stdout.write(`RESULT ${JSON.stringify(result)}\n`);
}

await main();
