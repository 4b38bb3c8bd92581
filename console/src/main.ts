// LiveNexus console: join a LiveKit room with a token from the console server, publish the microphone,
// and show the transcripts the LiveNexus worker publishes (lk.transcription text streams, with the
// livenexus.transcript JSON data messages as a fallback; both are merged per segment id).

import {
  ConnectionError,
  ConnectionState,
  type Participant,
  type RemoteParticipant,
  Room,
  RoomEvent,
  type TextStreamReader,
  Track,
} from 'livekit-client';
import './style.css';
import { ApiError, type ConsoleConfig, fetchConfig, fetchToken, hasAccessKey, setAccessKey } from './api';
import { LevelMeter } from './meter';
import { hhmmss, parseWire, type Update, TranscriptStore, toPlainText } from './transcript';
import { isTranscriber } from './trust';
import { byId, clearError, showError, toast, TranscriptView } from './view';

const TRANSCRIPTION_TOPIC = 'lk.transcription';
const DATA_TOPIC = 'livenexus.transcript';

const form = byId<HTMLFormElement>('join-form');
const roomSelect = byId<HTMLSelectElement>('room');
const nameInput = byId<HTMLInputElement>('name');
const connectBtn = byId<HTMLButtonElement>('connect');
const stateEl = byId<HTMLParagraphElement>('conn-state');
const accessField = byId<HTMLDivElement>('access-field');
const accessInput = byId<HTMLInputElement>('access-key');

let config: ConsoleConfig | null = null;
let room: Room | null = null;
let roomName = '';
let busy = false;
let ignored = 0;

const store = new TranscriptStore();
const meter = new LevelMeter(byId<HTMLMeterElement>('mic-level'), byId('mic-db'));

function participantFor(identity: string): Participant | undefined {
  if (room === null) return undefined;
  if (room.localParticipant.identity === identity) return room.localParticipant;
  return room.remoteParticipants.get(identity);
}

function nameOf(identity: string): string {
  const p = participantFor(identity);
  const name = p?.name || identity || 'unknown';
  return room !== null && identity === room.localParticipant.identity ? `${name} (you)` : name;
}

/** Who spoke: the owner of the transcribed track if we know it, else the stream's sender. */
function speakerOf(sender: string, trackSid: string | undefined): string {
  if (room !== null && trackSid) {
    if (room.localParticipant.trackPublications.has(trackSid)) return room.localParticipant.identity;
    for (const p of room.remoteParticipants.values()) if (p.trackPublications.has(trackSid)) return p.identity;
  }
  return sender;
}

/** A remote participant that is the LiveNexus transcriber (never the local visitor). */
function fromTranscriber(identity: string | undefined): boolean {
  if (room === null || !identity || identity === room.localParticipant.identity) return false;
  const p = room.remoteParticipants.get(identity);
  const prefix = config?.agentIdentityPrefix ?? 'livenexus-agent';
  return p !== undefined && isTranscriber({ identity: p.identity, isAgent: p.isAgent }, prefix);
}

function ignore(what: string, sender: string | undefined): void {
  ignored += 1;
  byId('ignored').textContent = String(ignored);
  console.warn(`ignored a transcript ${what} from ${sender || 'the server'}: not the transcriber`);
}

const view = new TranscriptView(byId('scroller'), byId('finals'), byId('live'), byId('empty'), nameOf);

function apply(update: Update): void {
  const change = store.apply(update);
  if (change.kind === 'final') view.addFinal(change.segment);
  else if (change.kind === 'final-updated') view.updateFinal(change.segment);
  if (change.kind !== 'ignored') view.renderLive(store.live());
}

async function readTranscription(reader: TextStreamReader, sender: string): Promise<void> {
  const attrs = reader.info.attributes ?? {};
  if (!fromTranscriber(sender)) {
    // LiveKit lets an agent send a text stream in the speaker's name (the worker does), so the page cannot tell
    // it from the speaker's own; the transcriber's data message carries the same hypothesis from a sender the
    // server vouches for. Dropped quietly when the sender claims its own track, counted when someone else's.
    if (speakerOf(sender, attrs['lk.transcribed_track_id']) !== sender) ignore('stream', sender);
    return;
  }
  const segmentId = attrs['lk.segment_id'] || reader.info.id;
  const isFinal = attrs['lk.transcription_final'] === 'true';
  const speaker = speakerOf(sender, attrs['lk.transcribed_track_id']);
  let text = '';
  try {
    for await (const chunk of reader) {
      text += chunk;
      if (!isFinal) apply({ segmentId, speaker, text, isFinal: false, source: 'stream' });
    }
  } catch (err) {
    console.warn('transcription stream ended early', err);
    return;
  }
  if (isFinal) apply({ segmentId, speaker, text, isFinal: true, source: 'stream' });
}

function onData(payload: Uint8Array, participant?: RemoteParticipant, _kind?: unknown, topic?: string): void {
  if (topic !== DATA_TOPIC) return;
  if (!fromTranscriber(participant?.identity)) return ignore('message', participant?.identity);
  let parsed: unknown;
  try {
    parsed = JSON.parse(new TextDecoder().decode(payload));
  } catch {
    return;
  }
  const wire = parseWire(parsed);
  if (wire === null) return;
  apply({ ...wire, speaker: wire.speaker || participant?.identity || '', source: 'data' });
}

const STATE_TEXT: Record<string, string> = {
  [ConnectionState.Disconnected]: 'Disconnected',
  [ConnectionState.Connecting]: 'Connecting…',
  [ConnectionState.Connected]: 'Connected',
  [ConnectionState.Reconnecting]: 'Reconnecting…',
  [ConnectionState.SignalReconnecting]: 'Reconnecting…',
};

function showState(state: string): void {
  const connected = state === ConnectionState.Connected;
  stateEl.dataset.state = state;
  stateEl.textContent = connected && roomName ? `Connected to ${roomName}` : (STATE_TEXT[state] ?? state);
  connectBtn.textContent = state === ConnectionState.Disconnected ? 'Connect' : 'Disconnect';
  connectBtn.disabled = busy;
  roomSelect.disabled = state !== ConnectionState.Disconnected || (config?.rooms.length ?? 0) === 0;
  nameInput.disabled = state !== ConnectionState.Disconnected;
}

function showPeople(): void {
  if (room === null) {
    byId('participants').textContent = '–';
    byId('transcriber').textContent = '–';
    return;
  }
  const remotes = [...room.remoteParticipants.values()];
  byId('participants').textContent = String(remotes.length + 1);
  const agent = remotes.find((p) => fromTranscriber(p.identity));
  byId('transcriber').textContent = agent ? `present (${agent.identity})` : 'not in the room yet';
}

async function loadConfig(): Promise<boolean> {
  try {
    config = await fetchConfig();
  } catch (err) {
    config = null;
    const detail = err instanceof Error ? err.message : String(err);
    if (err instanceof ApiError && err.kind === 'unauthorized') {
      accessField.hidden = false;
      roomSelect.replaceChildren(new Option('locked', ''));
      const title = hasAccessKey() ? 'Access key refused' : 'Access key required';
      showError(title, `${detail}. Type the console's access key, then press Connect.`);
      if (hasAccessKey()) setAccessKey('');
      return false;
    }
    showError('Console server unreachable', `${detail}. Check that livenexus-console is running, then retry.`);
    roomSelect.replaceChildren(new Option('unavailable', ''));
    return false;
  }
  accessField.hidden = config.auth !== 'token';
  byId('trust-note').textContent =
    `Only transcripts sent by the LiveNexus transcriber (an agent participant named ${config.agentIdentityPrefix}…) ` +
    'are shown; messages from anyone else are ignored and counted.';
  byId('mic-help').textContent = config.microphone
    ? 'Your microphone is published to the room so the transcriber can hear you.'
    : 'Read-only console: your microphone is not published; you read what the others in the room say.';
  const wanted = new URLSearchParams(location.search).get('room');
  roomSelect.replaceChildren(...config.rooms.map((r) => new Option(r, r, false, r === wanted)));
  if (config.rooms.length === 0) {
    roomSelect.replaceChildren(new Option('no rooms configured', ''));
    showError('No rooms open', 'The console server allows no room (start it with --rooms, or create a TranscriptionRoom).');
    return false;
  }
  clearError();
  return true;
}

function explainConnectError(err: unknown, url: string): [string, string] {
  if (err instanceof ApiError) {
    if (err.kind === 'unreachable') return ['Console server unreachable', err.message];
    if (err.kind === 'rate-limited') return ['Too many attempts', `Token refused: ${err.message}.`];
    if (err.kind === 'unauthorized') return ['Access key refused', `${err.message}. Type the access key again.`];
    if (err.kind === 'unavailable') return ['Rooms unavailable', err.message];
    return ['Token refused', `${err.message} (HTTP ${err.status}).`];
  }
  if (err instanceof ConnectionError) {
    return ['LiveKit server unreachable', `Could not join at ${url}: ${err.message}`];
  }
  return ['Connection failed', err instanceof Error ? err.message : String(err)];
}

function explainMicError(err: unknown): [string, string] {
  const name = err instanceof Error ? err.name : '';
  if (name === 'NotAllowedError' || name === 'SecurityError') {
    return [
      'Microphone permission denied',
      'Allow microphone access for this page in the browser, then reconnect. You can still read the transcript.',
    ];
  }
  if (name === 'NotFoundError' || name === 'OverconstrainedError') {
    return ['No microphone found', 'Plug in a microphone and reconnect. You can still read the transcript.'];
  }
  if (name === 'NotReadableError') {
    return ['Microphone busy', 'Another application holds the microphone. You can still read the transcript.'];
  }
  return ['Microphone unavailable', err instanceof Error ? err.message : String(err)];
}

async function connect(): Promise<void> {
  meter.prepare(); // inside the click: the AudioContext may start
  clearError();
  if (!accessField.hidden && accessInput.value) setAccessKey(accessInput.value);
  if (config === null && !(await loadConfig())) return;
  const wanted = roomSelect.value;
  if (!wanted) {
    showError('Pick a room', 'Choose the room to join.');
    return;
  }
  const r = new Room({ adaptiveStream: false, dynacast: false, stopLocalTrackOnUnpublish: true });
  room = r;
  roomName = wanted;
  showState(ConnectionState.Connecting);
  let url = config?.livekitUrl ?? '';
  try {
    const grant = await fetchToken(wanted, nameInput.value.trim());
    url = grant.url;
    byId('identity').textContent = grant.identity;
    r.registerTextStreamHandler(TRANSCRIPTION_TOPIC, (reader, info) => void readTranscription(reader, info.identity));
    r.on(RoomEvent.DataReceived, onData)
      .on(RoomEvent.ConnectionStateChanged, (s) => room === r && showState(s))
      .on(RoomEvent.ParticipantConnected, showPeople)
      .on(RoomEvent.ParticipantDisconnected, showPeople)
      .on(RoomEvent.Disconnected, () => room === r && onDisconnected());
    // Transcripts only: other participants' audio is not played, so it is not downloaded either.
    await r.connect(grant.url, grant.token, { autoSubscribe: false });
  } catch (err) {
    room = null;
    await r.disconnect().catch(() => undefined);
    showState(ConnectionState.Disconnected);
    byId('identity').textContent = '–';
    const [title, detail] = explainConnectError(err, url);
    showError(title, detail);
    return;
  }
  showState(r.state);
  showPeople();
  if (!config?.microphone) return; // read-only: the token could not publish it anyway
  try {
    await r.localParticipant.setMicrophoneEnabled(true, { echoCancellation: true, noiseSuppression: true });
    const track = r.localParticipant.getTrackPublication(Track.Source.Microphone)?.track?.mediaStreamTrack;
    if (track) await meter.start(track);
  } catch (err) {
    const [title, detail] = explainMicError(err);
    showError(title, detail);
  }
}

function onDisconnected(): void {
  room = null;
  meter.stop();
  store.dropLive();
  view.renderLive(store.live());
  showState(ConnectionState.Disconnected);
  showPeople();
}

async function disconnect(): Promise<void> {
  const r = room;
  if (r === null) return;
  await r.disconnect();
  onDisconnected();
}

form.addEventListener('submit', (ev) => {
  ev.preventDefault();
  if (busy) return;
  busy = true;
  connectBtn.disabled = true;
  const op = room === null ? connect() : disconnect();
  void op.finally(() => {
    busy = false;
    connectBtn.disabled = false;
  });
});

function transcriptText(): string {
  return toPlainText(store.finals, roomName || roomSelect.value, new Date(), nameOf);
}

async function copyText(text: string): Promise<void> {
  try {
    await navigator.clipboard.writeText(text);
    return;
  } catch {
    // Clipboard API refused (permissions, insecure origin): fall back to a hidden textarea.
  }
  const area = document.createElement('textarea');
  area.value = text;
  area.setAttribute('readonly', '');
  area.className = 'offscreen';
  document.body.append(area);
  area.select();
  const ok = document.execCommand('copy');
  area.remove();
  if (!ok) throw new Error('the browser refused clipboard access');
}

byId<HTMLButtonElement>('copy').addEventListener('click', () => {
  const n = store.finals.length;
  if (n === 0) return toast('Nothing to copy yet', 'error');
  copyText(transcriptText()).then(
    () => toast(`Copied ${n} line${n === 1 ? '' : 's'} to the clipboard`),
    (err: unknown) => toast(`Copy failed: ${err instanceof Error ? err.message : String(err)}`, 'error'),
  );
});

byId<HTMLButtonElement>('export').addEventListener('click', () => {
  const n = store.finals.length;
  if (n === 0) return toast('Nothing to export yet', 'error');
  const now = new Date();
  const two = (n: number): string => String(n).padStart(2, '0');
  const compact = `${now.getFullYear()}${two(now.getMonth() + 1)}${two(now.getDate())}-${hhmmss(now).replace(/:/g, '')}`;
  const blob = new Blob([transcriptText()], { type: 'text/plain;charset=utf-8' });
  const href = URL.createObjectURL(blob);
  const a = document.createElement('a');
  a.href = href;
  a.download = `livenexus-${roomName || 'transcript'}-${compact}.txt`;
  document.body.append(a);
  a.click();
  a.remove();
  window.setTimeout(() => URL.revokeObjectURL(href), 10_000);
  toast(`Exported ${n} line${n === 1 ? '' : 's'} as ${a.download}`);
});

byId<HTMLButtonElement>('clear').addEventListener('click', () => {
  store.clear();
  view.clear();
  toast('Transcript cleared');
});

byId<HTMLButtonElement>('error-dismiss').addEventListener('click', clearError);

window.addEventListener('beforeunload', () => void room?.disconnect());

void loadConfig().then(() => {
  connectBtn.disabled = false;
  showState(ConnectionState.Disconnected);
});
