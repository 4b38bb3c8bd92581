// The transcript model: merges hypotheses from the two wire paths (lk.transcription text streams and
// the livenexus.transcript JSON data messages) into one entry per segment id, so nothing prints twice.

export type Source = 'stream' | 'data';

/** One hypothesis of one utterance, as either path delivers it. */
export interface Update {
  segmentId: string;
  speaker: string;
  text: string;
  isFinal: boolean;
  source: Source;
  /** Agreed prefix (data path only). */
  stable?: string;
  /** Tail that may still change (data path only). */
  unstable?: string;
  /** End of speech to emission, for finals (data path only). */
  latencyMs?: number;
  language?: string;
  tier?: string;
}

export interface Segment {
  id: string;
  speaker: string;
  text: string;
  stable: string;
  unstable: string;
  isFinal: boolean;
  /** Wall time the first hypothesis of this utterance arrived. */
  firstSeen: Date;
  finalAt: Date | null;
  latencyMs: number | null;
  language: string;
  tier: string;
  /** Which paths delivered this segment so far. */
  sources: Set<Source>;
}

export type Change =
  | { kind: 'partial'; segment: Segment }
  | { kind: 'final'; segment: Segment }
  | { kind: 'final-updated'; segment: Segment }
  | { kind: 'ignored' };

/** The wire form of a TranscriptEvent (worker/livenexus_worker/core/events.py `to_wire`), validated. */
export function parseWire(payload: unknown): Omit<Update, 'source'> | null {
  if (typeof payload !== 'object' || payload === null) return null;
  const p = payload as Record<string, unknown>;
  if (p.type !== 'transcript' || typeof p.segmentId !== 'string' || typeof p.text !== 'string') return null;
  const str = (v: unknown): string => (typeof v === 'string' ? v : '');
  const update: Omit<Update, 'source'> = {
    segmentId: p.segmentId,
    speaker: str(p.speaker),
    text: p.text,
    isFinal: p.isFinal === true,
    stable: str(p.stable),
    unstable: str(p.unstable),
    language: str(p.language),
    tier: str(p.tier),
  };
  if (typeof p.latencyMs === 'number' && Number.isFinite(p.latencyMs)) update.latencyMs = p.latencyMs;
  return update;
}

export class TranscriptStore {
  private readonly segments = new Map<string, Segment>();
  private readonly finalIds = new Set<string>();
  private finalList: Segment[] = [];

  /** Finals in the order they were committed. */
  get finals(): readonly Segment[] {
    return this.finalList;
  }

  /** Utterances still in progress, oldest first. */
  live(): Segment[] {
    return [...this.segments.values()].filter((s) => !s.isFinal);
  }

  apply(u: Update, now: Date = new Date()): Change {
    if (!u.segmentId) return { kind: 'ignored' };
    let seg = this.segments.get(u.segmentId);
    if (seg === undefined && this.finalIds.has(u.segmentId)) {
      return { kind: 'ignored' }; // the other path's copy of a final that was cleared since
    }
    if (seg?.isFinal) {
      if (!u.isFinal) return { kind: 'ignored' }; // a late partial of a committed utterance
      return this.mergeFinal(seg, u) ? { kind: 'final-updated', segment: seg } : { kind: 'ignored' };
    }
    if (seg === undefined) {
      seg = {
        id: u.segmentId,
        speaker: u.speaker,
        text: '',
        stable: '',
        unstable: '',
        isFinal: false,
        firstSeen: now,
        finalAt: null,
        latencyMs: null,
        language: '',
        tier: '',
        sources: new Set(),
      };
      this.segments.set(u.segmentId, seg);
    }
    seg.sources.add(u.source);
    if (u.speaker) seg.speaker = u.speaker;
    if (u.language) seg.language = u.language;
    if (u.tier) seg.tier = u.tier;
    if (u.isFinal) {
      seg.isFinal = true;
      seg.text = u.text.trim();
      seg.stable = seg.text;
      seg.unstable = '';
      seg.finalAt = now;
      if (u.latencyMs !== undefined) seg.latencyMs = u.latencyMs;
      this.finalIds.add(seg.id);
      this.finalList.push(seg);
      return { kind: 'final', segment: seg };
    }
    this.splitPartial(seg, u);
    return { kind: 'partial', segment: seg };
  }

  /** Drop the utterances still in progress (after a disconnect they will never be finalised here). */
  dropLive(): void {
    for (const [id, seg] of this.segments) if (!seg.isFinal) this.segments.delete(id);
  }

  /** Forget everything shown; ids of committed finals are kept so late duplicates stay suppressed. */
  clear(): void {
    this.segments.clear();
    this.finalList = [];
  }

  private splitPartial(seg: Segment, u: Update): void {
    if (u.stable !== undefined || u.unstable !== undefined) {
      // The worker joins the two with a space (text = stable + ' ' + unstable); keep whatever separator the
      // full text has, so the two spans read as the text does.
      const stable = u.stable ?? '';
      const unstable = u.unstable ?? '';
      seg.stable = stable;
      if (u.text.startsWith(stable)) seg.unstable = u.text.slice(stable.length);
      else seg.unstable = stable && unstable && !/\s$/.test(stable) && !/^\s/.test(unstable) ? ` ${unstable}` : unstable;
    } else if (u.text === seg.text) {
      // Same hypothesis from the text stream after the data message: keep the data path's split.
    } else if (seg.stable && u.text.startsWith(seg.stable)) {
      seg.unstable = u.text.slice(seg.stable.length);
    } else {
      seg.stable = '';
      seg.unstable = u.text;
    }
    seg.text = u.text;
  }

  private mergeFinal(seg: Segment, u: Update): boolean {
    let changed = !seg.sources.has(u.source);
    seg.sources.add(u.source);
    if (seg.latencyMs === null && u.latencyMs !== undefined) {
      seg.latencyMs = u.latencyMs;
      changed = true;
    }
    if (!seg.language && u.language) {
      seg.language = u.language;
      changed = true;
    }
    if (!seg.tier && u.tier) {
      seg.tier = u.tier;
      changed = true;
    }
    return changed;
  }
}

export function hhmmss(d: Date): string {
  const two = (n: number): string => String(n).padStart(2, '0');
  return `${two(d.getHours())}:${two(d.getMinutes())}:${two(d.getSeconds())}`;
}

/** The plain-text export: a header line, then one `[HH:MM:SS] speaker: text` line per final. */
export function toPlainText(
  finals: readonly Segment[],
  room: string,
  exportedAt: Date,
  nameOf: (identity: string) => string = (id) => id,
): string {
  const date = `${exportedAt.getFullYear()}-${String(exportedAt.getMonth() + 1).padStart(2, '0')}-${String(
    exportedAt.getDate(),
  ).padStart(2, '0')}`;
  const lines = [`# LiveNexus transcript, room ${room || '(none)'}, exported ${date} ${hhmmss(exportedAt)}`];
  for (const s of finals) lines.push(`[${hhmmss(s.firstSeen)}] ${nameOf(s.speaker) || 'unknown'}: ${s.text}`);
  return lines.join('\n') + '\n';
}
