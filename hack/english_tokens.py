"""Write worker/livenexus_worker/inference/english_tokens.txt.gz: the Whisper tokens English text is made of.

Every word of the SCOWL English dictionaries Debian ships (``apt-get install wamerican-large wbritish-large``),
as listed, lower case and capitalised, each with and without the space before it, is tokenized with each
named model's tokenizer (default base, Whisper's multilingual vocabulary); the tokens used are written one
per line (byte-level BPE strings, as in tokenizer.json), sorted, under a ``# tokenizer <fingerprint>`` line
(``vocab.fingerprint``). ``livenexus_worker.inference.vocab`` keeps those rows of a model's decoder (and every
byte, digit, mark and special token). Usage: python hack/english_tokens.py [model name ...]

Not tiny.en: GPT-2's vocabulary is English's already (43,799 of its 50,257 tokens spell the dictionary), so a
copy would save a tenth of a small decoder's step for another 60 MB in the image.
"""

from __future__ import annotations

import gzip
import sys
from pathlib import Path

from tokenizers import Tokenizer

from livenexus_worker.inference.models import resolve
from livenexus_worker.inference.vocab import fingerprint

DICTIONARIES = ("/usr/share/dict/american-english-large", "/usr/share/dict/british-english-large")
OUT = Path(__file__).resolve().parents[1] / "worker/livenexus_worker/inference/english_tokens.txt.gz"
CONTRACTIONS = ("'s", "'t", "'re", "'ve", "'ll", "'d", "'m", "n't")


def main() -> None:
    words: set[str] = set()
    for name in DICTIONARIES:
        words |= {w.strip() for w in Path(name).read_text(encoding="utf-8").splitlines() if w.strip().isascii()}
    forms = set(CONTRACTIONS)
    for w in words:
        for v in (w, w.lower(), w.capitalize()):
            forms.update((v, " " + v))
    lines: list[str] = []
    seen: set[str] = set()
    for model in sys.argv[1:] or ["base"]:
        tok = Tokenizer.from_file(str(resolve(model).path / "tokenizer.json"))
        if fingerprint(tok) in seen:
            continue
        seen.add(fingerprint(tok))
        used: set[str] = set()
        for enc in tok.encode_batch(sorted(forms), add_special_tokens=False):
            used.update(enc.tokens)
        lines += [f"# tokenizer {fingerprint(tok)}", *sorted(used)]
        print(f"{model}: {len(words)} words, {len(forms)} forms: {len(used)} tokens")
    OUT.write_bytes(gzip.compress("\n".join(lines).encode("utf-8") + b"\n", mtime=0))
    print(f"-> {OUT}")


if __name__ == "__main__":
    main()
