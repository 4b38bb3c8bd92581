"""The English-vocabulary copy of a model (``vocab``), prepared once into the model cache beside the model it
comes from: staged, verified and renamed like a joined model, readable by a non-root worker.

Its directory is named by what it is made of, ``.english-<model sha256>-<token lists sha256>`` (a dot name:
``models list`` shows models by name, and this is a form of one), so new token lists or another model make
another copy and an old one is never mistaken for it.
"""

from __future__ import annotations

import logging
from pathlib import Path

from livenexus_worker.inference import model_cache, vocab
from livenexus_worker.inference.models import default_cache_dir, is_model_dir

log = logging.getLogger(__name__)

PREFIX = ".english-"


class NotApplicable(ValueError):
    """The worker ships no English token list for the model's tokenizer (lists are made per BPE vocabulary:
    one vocabulary spells a word with other tokens than another)."""


def english_dir(source: Path, cache: Path | None = None) -> Path:
    """The English-vocabulary copy of the model directory ``source``, prepared in ``cache`` if it is not
    there yet (or is damaged). Raises :class:`NotApplicable`, ``OSError`` (a read-only or full cache) or
    ``ValueError`` (a model.bin this cannot read)."""
    source_sha = model_cache.read_record(source) or model_cache.sha256_file(source / "model.bin")
    root = cache or default_cache_dir()
    # Named without reading the tokenizer (~0.3 s with finding its list), which a copy already made does not
    # need: it was made from a tokenizer the lists have an entry for, and carries its own tokenizer.json.
    target = root / f"{PREFIX}{source_sha[:16]}-{vocab.token_lists_id()[:8]}"
    if is_model_dir(target):
        try:
            if model_cache.verify(target):
                return target
            raise model_cache.IntegrityError(f"{target} has no {model_cache.RECORD} record")  # every copy gets one
        except model_cache.IntegrityError as exc:
            log.error("English copy of %s is unusable, preparing it again: %s", source, exc)
            model_cache.quarantine(target)
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(source / "tokenizer.json"))
    wanted = vocab.english_tokens(tokenizer)
    if wanted is None:
        raise NotApplicable(f"{source}: no English token list for its tokenizer ({vocab.fingerprint(tokenizer)})")
    root.mkdir(parents=True, exist_ok=True)
    needed = (source / "model.bin").stat().st_size + (source / "tokenizer.json").stat().st_size
    model_cache.check_space(root, needed)
    with model_cache.staging_dir(target) as staging:
        try:
            done = vocab.prune(source, staging, vocab.english_keep(tokenizer, wanted))
            digest = model_cache.sha256_file(staging / "model.bin")
            (staging / model_cache.RECORD).write_text(f"{digest}  model.bin\n")
        except OSError as exc:
            raise model_cache.no_space(exc, root, needed) from exc
        if model_cache.publish_readable(staging, target, None, digest):
            log.info("prepared the English-vocabulary copy of %s: %d of %d tokens, in %s", source,
                     done.rows_after, done.rows_before, target)
    return target


def english_or_whole(source: Path, cache: Path | None = None) -> Path:
    """:func:`english_dir`, or ``source`` itself when there is none to be had (said once in the log): the
    worker decodes the same text with the whole vocabulary, only slower."""
    try:
        return english_dir(source, cache)
    except NotApplicable as exc:
        log.debug("whole vocabulary: %s", exc)
    except (OSError, ValueError) as exc:
        log.warning("cannot prepare the English-vocabulary copy of %s, decoding with the whole vocabulary: %s",
                    source, exc)
    return source
