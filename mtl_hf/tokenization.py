"""How text becomes model input: the one encoding shared by training, evaluation and `MultiTaskPipeline`.

Training, evaluation and serving must encode a text the same way, or the pipeline feeds the model inputs it never
saw. There is exactly one encoding, for every task type, and everything that decides it lives here:

1. :func:`split_words` splits a raw text into CoNLL-like words with character offsets (NER data comes already split
   into words; the texts of the other types and the pipeline's inputs are split by this function).
2. :func:`prepare_tokenizer` sets the tokenizer up for pre-split words: a byte-level BPE tokenizer (RoBERTa, GPT-2
   style) gets ``add_prefix_space=True`` on a copy, so every word, the first included, is encoded as if it followed
   a space (``john`` -> ``Ġjohn``, never ``j ohn``).
3. :func:`encode_words` encodes lists of words with the prepared tokenizer and ``is_split_into_words=True``;
   :func:`encode_texts` is ``split_words`` followed by ``encode_words``, and :func:`encode_text_pairs` the same for
   the two texts of a pair, as the tokenizer's pair encoding. Classification, regression and multilabel
   preprocessing encode their texts with :func:`encode_texts` (pairs with :func:`encode_text_pairs`), NER
   preprocessing its word lists and the pipeline its windows of words with :func:`encode_words` (pairs as in
   training), so an input gets the same ids in training, evaluation and the pipeline.
4. Extractive QA is the exception, as in transformers' ``run_qa.py`` and question-answering pipeline: answers are
   character spans of the raw context, so :func:`encode_questions` encodes the raw question and context (not words)
   with offset mappings, cutting the context into ``doc_stride``-overlapping windows; training, evaluation and the
   pipeline all encode QA inputs with it.

:func:`max_input_length` gives the longest input the tokenizer and the encoder's position embeddings allow.
"""

from __future__ import annotations

import copy
import json
import unicodedata
from collections.abc import Sequence
from typing import Any

from tokenizers import Tokenizer
from transformers import BatchEncoding, PreTrainedTokenizerBase

__all__ = [
    "Word", "encode_questions", "encode_text_pairs", "encode_texts", "encode_words",
    "max_input_length", "prepare_tokenizer", "split_words",
]

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


# The tokenizer.json components that carry a byte-level `add_prefix_space`: the pre-tokenizer, and the
# post-processors that trim offsets with it (else the first token of each text would get offsets one character late).
_PREFIX_SPACE_TYPES = ("ByteLevel", "RobertaProcessing")


def _set_byte_level_prefix_space(node: Any) -> bool:
    """Turn on ``add_prefix_space`` in every byte-level component of a tokenizer.json node; True if any changed."""
    changed = False
    if isinstance(node, dict):
        if node.get("type") in _PREFIX_SPACE_TYPES and node.get("add_prefix_space") is False:
            node["add_prefix_space"] = True
            changed = True
        for value in node.values():
            changed |= _set_byte_level_prefix_space(value)
    elif isinstance(node, list):
        for value in node:
            changed |= _set_byte_level_prefix_space(value)
    return changed


def prepare_tokenizer(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    """A tokenizer that can encode pre-split words: byte-level BPE gets ``add_prefix_space=True`` (on a copy; in its
    pre-tokenizer, and in a post-processor that trims offsets, so that offsets still start where the text does).

    Any other tokenizer, or one already prepared, is returned as it is (the check reads only the pre-tokenizer, so
    calling this again on a prepared tokenizer is cheap). Raises ``ValueError`` for a slow tokenizer: mapping
    sub-tokens back to words needs a fast (tokenizers-backed) one.
    """
    if not getattr(tokenizer, "is_fast", False) or getattr(tokenizer, "backend_tokenizer", None) is None:
        raise ValueError(
            f"mtl_hf needs a fast (tokenizers-backed) tokenizer to map sub-tokens to words; "
            f"got {type(tokenizer).__name__}"
        )
    pre_tokenizer = tokenizer.backend_tokenizer.pre_tokenizer
    if pre_tokenizer is None or not _set_byte_level_prefix_space(json.loads(pre_tokenizer.__getstate__())):
        return tokenizer
    state = json.loads(tokenizer.backend_tokenizer.to_str())
    _set_byte_level_prefix_space(state.get("pre_tokenizer"))
    post_processor = _set_byte_level_prefix_space(state.get("post_processor"))
    fixed = copy.deepcopy(tokenizer)
    rebuilt = Tokenizer.from_str(json.dumps(state))
    fixed.backend_tokenizer.pre_tokenizer = rebuilt.pre_tokenizer
    if post_processor:  # the same ids; offsets that start at the word (extractive QA reads them)
        fixed.backend_tokenizer.post_processor = rebuilt.post_processor
    if hasattr(fixed, "add_prefix_space"):
        fixed.add_prefix_space = True
    return fixed


def encode_words(
    tokenizer: PreTrainedTokenizerBase, words: Sequence[Sequence[str]], **tokenizer_kwargs: Any
) -> BatchEncoding:
    """Encode a batch of word lists the one way mtl_hf encodes text: ``is_split_into_words=True`` with the prepared
    tokenizer (:func:`prepare_tokenizer` is applied here; pass a prepared tokenizer to avoid a copy per call).

    ``tokenizer_kwargs`` go to the tokenizer call (``truncation``, ``max_length``, ``padding``, ``return_tensors``,
    ``add_special_tokens``, ...). An empty word list encodes as the special tokens alone; a word that yields no
    sub-token (a control or zero-width character) is absent from ``word_ids``.
    """
    return prepare_tokenizer(tokenizer)([list(w) for w in words], is_split_into_words=True, **tokenizer_kwargs)


def encode_texts(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], **tokenizer_kwargs: Any) -> BatchEncoding:
    """Encode raw texts exactly as `MultiTaskPipeline` does: :func:`split_words`, then :func:`encode_words`.

    This is how classification texts are encoded for training and evaluation, so the pipeline's input for a text
    that fits in one window is the trainer's input for it. ``word_ids`` index the words of ``split_words(text)``.
    """
    return encode_words(tokenizer, [[word for word, _, _ in split_words(text)] for text in texts], **tokenizer_kwargs)


def encode_text_pairs(
    tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], text_pairs: Sequence[str], **tokenizer_kwargs: Any
) -> BatchEncoding:
    """Encode pairs of raw texts as the tokenizer's pair encoding (``[CLS] a [SEP] b [SEP]``, with segment ids where
    the encoder has them), each text split into words as :func:`encode_texts` does. Training, evaluation and the
    pipeline encode sentence pairs with this; pass ``truncation="longest_first"`` to cut the longer text first."""
    def words(text: str) -> list[str]:
        return [word for word, _, _ in split_words(text)]

    return prepare_tokenizer(tokenizer)(
        [words(text) for text in texts], [words(text) for text in text_pairs], is_split_into_words=True,
        **tokenizer_kwargs,
    )


def encode_questions(
    tokenizer: PreTrainedTokenizerBase,
    questions: Sequence[str],
    contexts: Sequence[str],
    max_length: int,
    doc_stride: int,
    **tokenizer_kwargs: Any,
) -> BatchEncoding:
    """Encode question/context pairs for extractive QA as run_qa.py does: the tokenizer's pair encoding of the raw
    question (leading whitespace stripped: some SQuAD questions start with many spaces, which would eat the room for
    context) and context, only the context truncated, a context that does not fit cut into windows that overlap by
    ``doc_stride`` tokens (``overflow_to_sample_mapping`` gives each window's input), with offset mappings into the
    raw texts. ``tokenizer_kwargs`` go to the tokenizer call (``padding``, ``return_tensors``).

    The question comes first and the first token is the no-answer position, as for every tokenizer that pads on the
    right (BERT, RoBERTa, DistilBERT, ELECTRA, DeBERTa, ...); a tokenizer that pads on the left (XLNet-style, whose
    run_qa.py inputs put the context first and the CLS token last) is refused with a ``ValueError``.
    """
    if tokenizer.padding_side != "right":
        raise ValueError(
            f"extractive QA needs a tokenizer that pads on the right (its first token is the no-answer position); "
            f"{type(tokenizer).__name__} pads on the {tokenizer.padding_side}"
        )
    tokenizer = prepare_tokenizer(tokenizer)
    questions = [question.lstrip() for question in questions]
    return tokenizer(
        questions, list(contexts), truncation="only_second", max_length=max_length, stride=doc_stride,
        return_overflowing_tokens=True, return_offsets_mapping=True, **tokenizer_kwargs,
    )


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
