// DOM rendering of the transcript (finals history + live partial lines), toasts and the error banner.
// Every piece of remote text goes through textContent, never innerHTML.

import { hhmmss, type Segment } from './transcript';

export function byId<T extends HTMLElement>(id: string): T {
  const el = document.getElementById(id);
  if (el === null) throw new Error(`#${id} missing from index.html`);
  return el as T;
}

function el<K extends keyof HTMLElementTagNameMap>(tag: K, cls: string, text?: string): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined) node.textContent = text;
  return node;
}

function stamp(d: Date): HTMLTimeElement {
  const t = el('time', 'ts mono', hhmmss(d));
  t.dateTime = d.toISOString();
  return t;
}

export type NameOf = (identity: string) => string;

export class TranscriptView {
  private readonly items = new Map<string, HTMLLIElement>();

  constructor(
    private readonly scroller: HTMLElement,
    private readonly finalsEl: HTMLOListElement,
    private readonly liveEl: HTMLElement,
    private readonly emptyEl: HTMLElement,
    private readonly nameOf: NameOf,
  ) {}

  /** Append a committed final (the list is the aria-live region, so it is announced once). */
  addFinal(seg: Segment): void {
    const stick = this.nearBottom();
    const li = el('li', 'final');
    li.dataset.segmentId = seg.id;
    this.fillFinal(li, seg);
    this.items.set(seg.id, li);
    this.finalsEl.append(li);
    this.after(stick);
  }

  /** Refresh a final in place (latency or source arriving from the second path); not re-announced. */
  updateFinal(seg: Segment): void {
    const li = this.items.get(seg.id);
    if (li === undefined) return;
    li.replaceChildren();
    this.fillFinal(li, seg);
  }

  renderLive(live: readonly Segment[]): void {
    const stick = this.nearBottom();
    const lines = live.map((seg) => {
      const p = el('p', 'partial');
      p.dataset.segmentId = seg.id;
      p.append(stamp(seg.firstSeen), el('span', 'speaker', this.nameOf(seg.speaker)));
      const words = el('span', 'words');
      words.append(el('span', 'stable', seg.stable), el('span', 'unstable', seg.unstable));
      p.append(words);
      return p;
    });
    this.liveEl.replaceChildren(...lines);
    this.after(stick);
  }

  clear(): void {
    this.items.clear();
    this.finalsEl.replaceChildren();
    this.liveEl.replaceChildren();
    this.after(false);
  }

  private fillFinal(li: HTMLLIElement, seg: Segment): void {
    li.dataset.sources = [...seg.sources].sort().join(' ');
    li.append(stamp(seg.firstSeen), el('span', 'speaker', this.nameOf(seg.speaker)), el('span', 'text', seg.text));
    const lat = el('span', 'latency mono', seg.latencyMs === null ? '–' : `${Math.round(seg.latencyMs)} ms`);
    lat.title = 'Latency: end of speech to final transcript';
    if (seg.latencyMs !== null) lat.dataset.ms = String(seg.latencyMs);
    li.append(lat);
  }

  private nearBottom(): boolean {
    const s = this.scroller;
    return s.scrollHeight - s.scrollTop - s.clientHeight < 48;
  }

  private after(stick: boolean): void {
    this.emptyEl.hidden = this.finalsEl.childElementCount > 0 || this.liveEl.childElementCount > 0;
    if (stick) this.scroller.scrollTop = this.scroller.scrollHeight;
  }
}

export function toast(message: string, kind: 'ok' | 'error' = 'ok'): void {
  const box = byId<HTMLDivElement>('toasts');
  const t = el('div', `toast ${kind}`, message);
  box.append(t);
  window.setTimeout(() => t.classList.add('leaving'), 3500);
  window.setTimeout(() => t.remove(), 4000);
}

export function showError(title: string, detail: string): void {
  byId('error-title').textContent = title;
  byId('error-detail').textContent = detail;
  byId('error').hidden = false;
}

export function clearError(): void {
  byId('error').hidden = true;
}
