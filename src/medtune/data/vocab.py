"""Vocabulary extension for any fast tokenizer: add domain words as tokens, grow the embeddings, and start
each new row at the mean of the embeddings of the pieces the word used to be split into.

Words are added as tokens matched before the tokenizer's own splitting (`tokenizer.add_tokens`), so this
works for byte-level BPE, SentencePiece-style and WordPiece tokenizers alike (MedicalGPT's merge script only
handles SentencePiece LLaMA tokenizers). A word is added in the form it takes inside a sentence (with its
leading space for tokenizers that keep spaces in tokens) and kept only when text still decodes to itself
and the word then encodes to one token; `extend` reports the words it skipped.

Candidate words come from a word list, or from a corpus: the most frequent words the tokenizer splits into
several pieces, ranked by tokens saved (count x (pieces - 1)). Latin words are runs of letters (with inner
hyphens or apostrophes); Chinese has no spaces, so candidates are 2-4 character runs inside CJK text.
"""

from __future__ import annotations

import collections
import re
from typing import Iterable

_LATIN_WORD = re.compile(r"[A-Za-z\u00c0-\u024f]+(?:[-'][A-Za-z\u00c0-\u024f]+)*")
_CJK_RUN = re.compile("[\u3400-\u4dbf\u4e00-\u9fff]+")


def read_word_list(path) -> list[str]:
    """One word per line; blank lines and lines starting with # are skipped; order kept, duplicates dropped."""
    from medtune.data.jsonio import iter_lines

    words, seen = [], set()
    for _, line in iter_lines(path):
        w = line.strip()
        if w and not w.startswith("#") and w not in seen:
            seen.add(w)
            words.append(w)
    return words


def _pieces(tokenizer, word: str) -> int:
    return len(tokenizer(" " + word if _LATIN_WORD.fullmatch(word) else word, add_special_tokens=False)["input_ids"])


def _overlap(a: str, b: str) -> bool:
    """A Chinese window that is inside, or runs into, another (甲双胍是 vs 二甲双胍): a fragment of the same word."""
    if a in b or b in a:
        return True
    return any(a.endswith(b[:k]) or b.endswith(a[:k]) for k in range(1, min(len(a), len(b))))


def missing_words(texts: Iterable[str], tokenizer, *, top: int, min_count: int = 5, min_chars: int = 4) -> list[tuple[str, int, int]]:
    """The `top` corpus words that the tokenizer splits into 2+ pieces, ranked by tokens saved.
    Returns [(word, count, pieces)]."""
    counts: collections.Counter = collections.Counter()
    for text in texts:
        counts.update(w for w in _LATIN_WORD.findall(text) if len(w) >= min_chars)
        for run in _CJK_RUN.findall(text):  # every 2-4 character window of a Chinese run
            for n in (2, 3, 4):
                counts.update(run[i:i + n] for i in range(len(run) - n + 1))
    ranked = []
    for word, count in counts.items():
        if count < min_count:
            continue
        pieces = _pieces(tokenizer, word)
        if pieces > 1:
            ranked.append((word, count, pieces))
    ranked.sort(key=lambda r: (-(r[1] * (r[2] - 1)), r[0]))
    chosen: list[tuple[str, int, int]] = []
    for word, count, pieces in ranked:  # a CJK window inside an already chosen longer one adds little
        if _is_cjk(word) and any(_overlap(word, c) and count <= n * 1.2 for c, n, _ in chosen):
            continue
        chosen.append((word, count, pieces))
        if len(chosen) == top:
            break
    return chosen


def corpus_candidates(files: list, tokenizer, *, top: int = 100, min_count: int = 5,
                      mode: str = "line") -> list[tuple[str, int, int]]:
    """`medtune data vocab`: missing_words over text files, with a loaded tokenizer (the command loads it from
    a model spec with models.tokenizer_for)."""
    import itertools

    from medtune.data import formats

    texts = itertools.chain.from_iterable(formats.iter_texts(f, mode) for f in files)
    return missing_words(texts, tokenizer, top=top, min_count=min_count)


def _is_cjk(word: str) -> bool:
    return bool(_CJK_RUN.fullmatch(word))


def _works(tokenizer, token, word: str) -> bool:
    """On a copy of `tokenizer`: with `token` added, the word inside a sentence becomes that one token and the
    sentence still decodes to itself."""
    import copy

    probe = copy.deepcopy(tokenizer)
    probe.add_tokens([token])
    new_id = probe.convert_tokens_to_ids(token.content)
    sample = f"甲{word}乙" if _is_cjk(word) else f"a {word} b"
    ids = probe(sample, add_special_tokens=False)["input_ids"]
    return new_id in ids and probe.decode(ids) == sample


def _latin_form(tokenizer, word: str):
    """How this tokenizer needs a Latin word written to match it mid-sentence: with its leading space, raw
    (byte-level BPE keeps spaces in tokens) or normalised (SentencePiece-style), or bare (WordPiece)."""
    from tokenizers import AddedToken

    for make in (lambda w: AddedToken(" " + w, normalized=False), lambda w: AddedToken(" " + w, normalized=True),
                 lambda w: AddedToken(w, normalized=True, single_word=True)):
        if _works(tokenizer, make(word), word):
            return make
    return None


def extend(model, tokenizer, words: list[str]) -> tuple[list[int], list[str]]:
    """Add `words` to `tokenizer`, resize `model`'s embeddings and initialise each new row (input and, when
    untied, output embeddings) as the mean of the word's old sub-token rows. Returns (new ids, skipped words):
    a word is skipped when it is already one token, or when this tokenizer cannot match it as a token."""
    import torch
    from tokenizers import AddedToken

    vocab = tokenizer.get_vocab()
    plan, skipped = [], []
    latin = None
    for word in words:
        old_ids = tokenizer(word if _is_cjk(word) else " " + word, add_special_tokens=False)["input_ids"]
        if len(old_ids) <= 1:
            skipped.append(word)
            continue
        if _is_cjk(word):
            token = AddedToken(word, normalized=False)
        else:
            latin = latin or _latin_form(tokenizer, word)
            if latin is None:
                skipped.append(word)
                continue
            token = latin(word)
        if token.content in vocab or not tokenizer.add_tokens([token]):
            skipped.append(word)
            continue
        plan.append((tokenizer.convert_tokens_to_ids(token.content), old_ids))
    if not plan:
        return [], skipped
    model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    inp = model.get_input_embeddings().weight
    out = model.get_output_embeddings()
    tied = out is None or out.weight.data_ptr() == inp.data_ptr()
    with torch.no_grad():
        for new_id, old_ids in plan:
            inp[new_id] = inp[old_ids].mean(0)
            if not tied:
                out.weight[new_id] = out.weight[old_ids].mean(0)
    return [new_id for new_id, _ in plan], skipped
