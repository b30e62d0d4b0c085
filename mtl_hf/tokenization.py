"""How text becomes model input, shared by training, evaluation and `MultiTaskPipeline`.

Training, evaluation and serving must encode a text the same way, or the pipeline feeds the model inputs it never
saw. Everything that decides that encoding lives here: the word splitter (:func:`split_words`), the tokenizer set-up
for pre-split words (:func:`prepare_tokenizer`) and the longest input the tokenizer and the encoder allow
(:func:`max_input_length`).
"""

from __future__ import annotations

import copy
import json
import unicodedata
from typing import Any

from tokenizers import Tokenizer
from transformers import PreTrainedTokenizerBase

__all__ = ["Word", "max_input_length", "prepare_tokenizer", "split_words"]

DEFAULT_MAX_LENGTH = 512

# Encoders whose position ids start after the padding index (RoBERTa family): `max_position_embeddings` overstates
# the usable length by `pad_token_id + 1`.
_PADDING_OFFSET_MODEL_TYPES = {
    "roberta", "xlm-roberta", "xlm-roberta-xl", "camembert", "roberta-prelayernorm", "data2vec-text", "longformer",
    "mpnet", "ibert", "luke", "markuplm", "lilt", "bros", "ernie_m", "xmod", "mega",
}

Word = tuple[str, int, int]  # (word, start, end) with text[start:end] == word
# CJK ideographs are words of one character each, as in BERT's basic tokenizer (same ranges).
_CJK_RANGES = (
    (0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F),
    (0x2B740, 0x2B81F), (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F),
)


def _is_cjk(char: str) -> bool:
    code = ord(char)
    return any(low <= code <= high for low, high in _CJK_RANGES)


def _is_word_char(char: str) -> bool:
    # Letters, digits and combining marks (so "Zoë" written with a combining diaeresis stays one word).
    return unicodedata.category(char)[0] in "LNM" and not _is_cjk(char)


def split_words(text: str) -> list[Word]:
    """Split ``text`` into CoNLL-like words with character offsets: ``[(word, start, end), ...]``.

    A word is a maximal run of letters/digits/combining marks, or a single other non-space character (punctuation,
    symbols and CJK ideographs stand alone, as in CoNLL data and BERT's basic tokenizer). Whitespace of any amount
    only separates, so ``text[start:end] == word`` for every word.
    """
    words: list[Word] = []
    i, n = 0, len(text)
    while i < n:
        char = text[i]
        if char.isspace():
            i += 1
            continue
        j = i + 1
        if _is_word_char(char):
            while j < n and _is_word_char(text[j]):
                j += 1
        words.append((text[i:j], i, j))
        i = j
    return words



def _set_byte_level_prefix_space(node: Any) -> bool:
    """Turn on ``add_prefix_space`` in every ByteLevel pre-tokenizer of a tokenizer.json node; True if any changed."""
    changed = False
    if isinstance(node, dict):
        if node.get("type") == "ByteLevel" and node.get("add_prefix_space") is False:
            node["add_prefix_space"] = True
            changed = True
        for value in node.values():
            changed |= _set_byte_level_prefix_space(value)
    elif isinstance(node, list):
        for value in node:
            changed |= _set_byte_level_prefix_space(value)
    return changed


def prepare_tokenizer(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    """A tokenizer that can encode pre-split words: byte-level BPE gets ``add_prefix_space=True`` (on a copy)."""
    if not getattr(tokenizer, "is_fast", False) or getattr(tokenizer, "backend_tokenizer", None) is None:
        raise ValueError(
            f"MultiTaskPipeline needs a fast (tokenizers-backed) tokenizer to map sub-tokens to words; "
            f"got {type(tokenizer).__name__}"
        )
    state = json.loads(tokenizer.backend_tokenizer.to_str())
    pre_tokenizer = state.get("pre_tokenizer")
    if not _set_byte_level_prefix_space(pre_tokenizer):
        return tokenizer
    fixed = copy.deepcopy(tokenizer)
    fixed.backend_tokenizer.pre_tokenizer = Tokenizer.from_str(json.dumps(state)).pre_tokenizer
    if hasattr(fixed, "add_prefix_space"):
        fixed.add_prefix_space = True
    return fixed


def max_input_length(tokenizer: PreTrainedTokenizerBase, encoder_config: Any) -> int:
    """Longest input (special tokens included) that both the tokenizer and the encoder's position embeddings allow."""
    limits: list[int] = []
    tokenizer_limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(tokenizer_limit, int) and 0 < tokenizer_limit < 1_000_000:
        limits.append(tokenizer_limit)
    positions = getattr(encoder_config, "max_position_embeddings", None)
    if isinstance(positions, int) and positions > 0:
        if getattr(encoder_config, "model_type", None) in _PADDING_OFFSET_MODEL_TYPES:
            pad = getattr(encoder_config, "pad_token_id", None)
            positions -= (pad if isinstance(pad, int) else 1) + 1
        limits.append(positions)
    return min(limits) if limits else DEFAULT_MAX_LENGTH
