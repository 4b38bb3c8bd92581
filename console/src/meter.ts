// Microphone level meter: a WebAudio AnalyserNode on the local microphone track, shown in a <meter>.

export class LevelMeter {
  private ctx: AudioContext | null = null;
  private source: MediaStreamAudioSourceNode | null = null;
  private analyser: AnalyserNode | null = null;
  private frame = 0;
  private samples: Float32Array<ArrayBuffer> = new Float32Array(0);
  /** Highest level seen since start (0..1), for tests and a quick "is the mic alive" check. */
  peak = 0;

  constructor(
    private readonly meter: HTMLMeterElement,
    private readonly label: HTMLElement,
  ) {}

  /** Create the AudioContext inside a user gesture (autoplay policy), before any await. */
  prepare(): void {
    if (this.ctx === null) this.ctx = new AudioContext();
  }

  async start(track: MediaStreamTrack): Promise<void> {
    this.stop();
    this.prepare();
    const ctx = this.ctx as AudioContext;
    if (ctx.state === 'suspended') await ctx.resume();
    this.source = ctx.createMediaStreamSource(new MediaStream([track]));
    this.analyser = ctx.createAnalyser();
    this.analyser.fftSize = 1024;
    this.analyser.smoothingTimeConstant = 0.3;
    this.source.connect(this.analyser); // not to the destination: no echo of the user's own voice
    this.samples = new Float32Array(this.analyser.fftSize);
    this.peak = 0;
    const tick = (): void => {
      if (this.analyser === null) return;
      this.analyser.getFloatTimeDomainData(this.samples);
      let sum = 0;
      for (const v of this.samples) sum += v * v;
      const rms = Math.sqrt(sum / this.samples.length);
      // -60 dBFS .. 0 dBFS onto 0..1, which tracks loudness better than linear RMS.
      const db = 20 * Math.log10(Math.max(rms, 1e-6));
      const level = Math.min(1, Math.max(0, (db + 60) / 60));
      this.peak = Math.max(this.peak, level);
      this.meter.value = level;
      this.label.textContent = rms > 1e-6 ? `${Math.round(db)} dBFS` : 'silent';
      this.frame = requestAnimationFrame(tick);
    };
    tick();
  }

  stop(): void {
    cancelAnimationFrame(this.frame);
    this.source?.disconnect();
    this.analyser?.disconnect();
    this.source = null;
    this.analyser = null;
    this.meter.value = 0;
    this.label.textContent = 'off';
  }
}
