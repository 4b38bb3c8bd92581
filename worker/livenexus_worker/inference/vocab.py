"""Whisper with an English-only output vocabulary: the decoder's last layer scores only the tokens English
text is made of.

Each decoder step of Whisper base reads its output projection, 51,865 rows of 512 weights, more than the six
layers before it together; a step is bound by reading weights (beam 5 costs ~1.3x beam 1 per step, not 5x).
English text uses about two thirds of those rows: the rest spell other scripts and languages. A copy of the
model keeping only the rows that tokenize an English dictionary (and every byte, digit, mark and special
token) decodes a step ~20 % faster, a forced prefix token included, and can still spell any word: a dropped
token is the BPE merge of two smaller ones, which are kept or split in turn down to single bytes.

The pruned copy has its own ``vocabulary.json``; the tokenizer (``tokenizer.json``) is the original, so
:class:`IdMap` turns the tokenizer's ids into the model's and back around every CTranslate2 call.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import json
import struct
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

EMBEDDINGS = "decoder/embeddings/weight"
"""The decoder's token embeddings; its output projection is an alias of them in a converted Whisper model."""
_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}
"""CTranslate2's DataType ids (include/ctranslate2/types.h) of the weights this reads; bfloat16 is not one."""
_SPECIAL_IDS = ("suppress_ids", "suppress_ids_begin", "lang_ids")
"""Lists of token ids in a Whisper model's config.json."""
_TOKENS_FILE = "english_tokens.txt.gz"

Merges = dict[int, tuple[int, int]]
"""For each token a BPE merge makes, the two tokens it joins."""


class IdMap:
    """Between a tokenizer's ids and a pruned model's: ``to_model`` spells a dropped token by the two tokens
    its BPE merge joined (recursively), so any text can be forced; ``to_tokenizer`` maps the model's output
    back."""

    def __init__(self, kept: list[int], merges: Merges | Callable[[], Merges], tokenizer_size: int) -> None:
        self.kept = np.asarray(kept, dtype=np.int64)
        """Tokenizer id of each model id."""
        self._to_model = np.full(tokenizer_size, -1, dtype=np.int64)
        self._to_model[self.kept] = np.arange(len(kept))
        # Read on the first dropped token (or given): English text rarely has one, and reading them is
        # ~0.15 s of each engine's load, a worker's start and its thread-timing child's two loads.
        self._merges: Merges | None = merges if isinstance(merges, dict) else None
        self._read_merges = merges if callable(merges) else None
        self._merges_lock = threading.Lock()

    @classmethod
    def of_model(cls, model_dir: Path, tokenizer: Any) -> IdMap | None:
        """The map of ``model_dir`` (its ``vocabulary.json`` against ``tokenizer``, a ``tokenizers.Tokenizer``),
        or None when the model has the tokenizer's whole vocabulary. Raises ValueError when a model token is not
        the tokenizer's."""
        path = model_dir / "vocabulary.json"
        if not path.is_file():
            return None  # vocabulary.txt: a model as converted, whole
        strings = json.loads(path.read_text(encoding="utf-8"))
        size = tokenizer.get_vocab_size(with_added_tokens=True)
        if len(strings) >= size:
            return None
        ids = [tokenizer.token_to_id(s) for s in strings]
        missing = [s for s, i in zip(strings, ids, strict=True) if i is None]
        if missing:
            raise ValueError(f"{path}: {len(missing)} tokens are not the tokenizer's, e.g. {missing[:3]}")
        return cls([int(i) for i in ids], functools.partial(_merge_parts, tokenizer), size)

    def to_model(self, ids: Iterable[int]) -> list[int]:
        out: list[int] = []
        stack = list(ids)[::-1]
        while stack:
            i = stack.pop()
            mapped = int(self._to_model[i]) if 0 <= i < self._to_model.shape[0] else -1
            if mapped >= 0:
                out.append(mapped)
                continue
            parts = self._merge_of(i)
            if parts is None:
                raise ValueError(f"token {i} is neither kept nor a merge of smaller tokens")
            stack.extend(reversed(parts))
        return out

    def to_tokenizer(self, ids: Iterable[int]) -> list[int]:
        return [int(self.kept[i]) for i in ids]

    @property
    def merges_read(self) -> bool:
        """Whether the merges have been read (given, or asked for by a dropped token)."""
        return self._merges is not None

    def _merge_of(self, token: int) -> tuple[int, int] | None:
        if self._merges is None:
            with self._merges_lock:  # two decode lanes may meet their first dropped token at once
                if self._merges is None:
                    assert self._read_merges is not None
                    self._merges = self._read_merges()
        return self._merges.get(token)


def _merge_parts(tokenizer: Any) -> Merges:
    """For each token a BPE merge makes, the two tokens it joins (the first merge that makes it). Read from
    the tokenizer in memory, not its file: a cache may have replaced that since the model loaded."""
    model = json.loads(tokenizer.to_str())["model"]
    out: dict[int, tuple[int, int]] = {}
    for merge in model.get("merges", []):
        a, b = merge.split(" ", 1) if isinstance(merge, str) else merge
        made = tokenizer.token_to_id(a + b)
        if made is not None and made not in out:
            out[made] = (tokenizer.token_to_id(a), tokenizer.token_to_id(b))
    return out


_SECTION = "# tokenizer "
"""Starts each tokenizer's list in the token file (a byte-level BPE token never holds a plain space)."""


def fingerprint(tokenizer: Any) -> str:
    """Names a BPE vocabulary whatever file it came in: the sha256 of its (token, id) pairs, added tokens left
    out. Whisper's multilingual models share one; the English-only ones share GPT-2's."""
    pairs = sorted(tokenizer.get_vocab(with_added_tokens=False).items(), key=lambda p: p[1])
    return hashlib.sha256("\n".join(f"{t}\t{i}" for t, i in pairs).encode("utf-8")).hexdigest()[:16]


@functools.lru_cache(maxsize=1)
def token_lists_id() -> str:
    """The sha256 of the token lists the worker ships (every tokenizer's): what an English copy is made from
    besides its model."""
    return hashlib.sha256(_token_lists()).hexdigest()


def _token_lists() -> bytes:
    return gzip.decompress(resources.files("livenexus_worker.inference").joinpath(_TOKENS_FILE).read_bytes())


def english_tokens(tokenizer: Any) -> frozenset[str] | None:
    """The token strings English text needs in ``tokenizer``'s vocabulary, shipped with the worker
    (``hack/english_tokens.py`` made them for base's, the multilingual models' vocabulary); None for a
    vocabulary it has none for (tiny.en's, GPT-2's)."""
    wanted = _SECTION + fingerprint(tokenizer)
    tokens: list[str] | None = None
    for line in _token_lists().decode("utf-8").split("\n"):
        if line.startswith(_SECTION):
            if tokens is not None:
                break
            tokens = [] if line == wanted else None
        elif tokens is not None and line:
            tokens.append(line)
    return frozenset(tokens) if tokens is not None else None


def english_keep(tokenizer: Any, wanted: frozenset[str]) -> list[int]:
    """Tokenizer ids an English decoder keeps: ``wanted``, every single-character (byte) token, every token of
    ASCII digits and marks only, and every special token up to ``<|notimestamps|>`` (start, languages, tasks;
    CTranslate2 finds the prompt's end by that id range). Timestamp tokens are left out: this engine always
    decodes without them."""
    vocab: dict[str, int] = tokenizer.get_vocab(with_added_tokens=True)
    last = vocab["<|notimestamps|>"]
    first_special = vocab["<|endoftext|>"]
    keep = {i for s, i in vocab.items() if s in wanted or len(s) == 1 or first_special <= i <= last}
    # The empty token right before <|endoftext|> in multilingual models is how CTranslate2 tells them apart.
    keep |= {i for s, i in vocab.items() if s == ""}
    keep |= {i for s, i in vocab.items() if i < first_special and _marks_only(s)}
    return sorted(keep)


def _marks_only(token: str) -> bool:
    """A byte-level BPE token (GPT-2's printable byte alphabet) of ASCII digits, marks and spaces only."""
    for ch in token:
        code = ord(ch)
        byte = code if 33 <= code < 127 else (32 if ch == "Ġ" else (10 if ch == "Ċ" else -1))
        if byte < 0 or chr(byte).isalpha():
            return False
    return True


@dataclass(frozen=True)
class Pruned:
    """What :func:`prune` wrote."""

    rows_before: int
    """Tokens the source model's decoder scored."""
    rows_after: int
    """Tokens the pruned copy scores."""


def prune(src: Path, dst: Path, keep: list[int]) -> Pruned:
    """Write into the (empty, staging) directory ``dst`` a copy of the CTranslate2 Whisper model ``src``
    whose decoder knows only the tokenizer ids ``keep`` (sorted): embedding rows, vocabulary.json and the
    config's id lists; every other weight is copied as it is."""
    rows = np.asarray(keep, dtype=np.int64)
    with (src / "model.bin").open("rb") as f, (dst / "model.bin").open("wb") as g:
        before = _copy_model(f, g, rows)
    vocab = _vocabulary(src)
    (dst / "vocabulary.json").write_text(json.dumps([vocab[i] for i in keep]), encoding="utf-8")
    config = json.loads((src / "config.json").read_text(encoding="utf-8"))
    new_id = {old: new for new, old in enumerate(keep)}
    for key in _SPECIAL_IDS:
        if key in config:
            config[key] = [new_id[i] for i in config[key] if i in new_id]
    (dst / "config.json").write_text(json.dumps(config, indent=1), encoding="utf-8")
    (dst / "tokenizer.json").write_bytes((src / "tokenizer.json").read_bytes())
    return Pruned(before, len(keep))


def _vocabulary(model_dir: Path) -> list[str]:
    path = model_dir / "vocabulary.json"
    if path.is_file():
        return list(json.loads(path.read_text(encoding="utf-8")))
    return (model_dir / "vocabulary.txt").read_text(encoding="utf-8").split("\n")[:-1]


def _read_string(f: BinaryIO) -> bytes:
    (n,) = struct.unpack("<H", _exactly(f, 2))
    return _exactly(f, n)


def _exactly(f: BinaryIO, n: int) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise ValueError("model.bin ends early")
    return data


def _copy_model(f: BinaryIO, g: BinaryIO, rows: np.ndarray) -> int:
    """Copy a CTranslate2 model.bin (python/ctranslate2/specs/model_spec.py ``_serialize``) with only ``rows``
    of the decoder's embeddings; returns how many rows they had."""
    head = _exactly(f, 4)
    (version,) = struct.unpack("<I", head)
    if version != 6:
        raise ValueError(f"model.bin format version {version}: only version 6 is known")
    g.write(head)
    spec = _read_string(f)
    g.write(struct.pack("<H", len(spec)) + spec)
    revision_count = _exactly(f, 8)
    g.write(revision_count)
    (count,) = struct.unpack("<I", revision_count[4:])
    before = 0
    for _ in range(count):
        name = _read_string(f)
        (rank,) = struct.unpack("<B", _exactly(f, 1))
        dims = list(struct.unpack(f"<{rank}I", _exactly(f, 4 * rank)))
        dtype, size = struct.unpack("<BI", _exactly(f, 5))
        data = _exactly(f, size)
        label = name.rstrip(b"\0").decode()
        if label in (EMBEDDINGS, EMBEDDINGS + "_scale"):  # a model quantized when converted has a scale a row
            if dtype not in _DTYPES or rank not in (1, 2):
                raise ValueError(f"{label}: dtype {dtype}, rank {rank}: not a table this can prune")
            table = np.frombuffer(data, dtype=_DTYPES[dtype]).reshape(dims)
            before = dims[0]
            if rows.size and int(rows[-1]) >= before:
                raise ValueError(f"token id {int(rows[-1])} is past the model's {before} tokens")
            data = np.ascontiguousarray(table[rows]).tobytes()
            dims[0] = int(rows.size)
            size = len(data)
        g.write(struct.pack("<H", len(name)) + name + struct.pack("<B", rank) + struct.pack(f"<{rank}I", *dims)
                + struct.pack("<BI", dtype, size) + data)
    if not before:
        raise ValueError(f"model.bin has no {EMBEDDINGS}")
    aliases = _exactly(f, 4)  # (alias, variable) name pairs: the projection is the embeddings
    g.write(aliases)
    for _ in range(2 * struct.unpack("<I", aliases)[0]):
        name = _read_string(f)
        g.write(struct.pack("<H", len(name)) + name)
    if f.read(1):
        raise ValueError("model.bin has data past its aliases")
    return before
