"""The one encoding shared by training, evaluation and the pipeline: words, tokenizer set-up, encoded ids, limits.

Expected tokens are written out by hand for the tiny vocabularies of tests/conftest.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import transformers

from mtl_hf.tokenization import encode_texts, encode_words, max_input_length, prepare_tokenizer, split_words
from tests.conftest import tiny_encoder_config


@pytest.fixture(scope="module")
def raw_roberta(roberta_tokenizer_dir: Path) -> transformers.PreTrainedTokenizerBase:
    """The byte-level BPE tokenizer as a user loads it: without ``add_prefix_space``."""
    tokenizer = transformers.AutoTokenizer.from_pretrained(roberta_tokenizer_dir)
    assert not tokenizer.add_prefix_space
    return tokenizer


def test_split_words_keeps_offsets_into_the_original_text() -> None:
    text = "  Mr. O'Neil's\t3-2 win,\n\nZoe\u0308!  (U.S.)  "
    words = split_words(text)
    assert [w for w, _, _ in words] == [
        "Mr", ".", "O", "'", "Neil", "'", "s", "3", "-", "2", "win", ",", "Zoe\u0308", "!", "(", "U", ".", "S", ".", ")"
    ]
    for word, start, end in words:
        assert text[start:end] == word
    assert split_words("") == [] and split_words(" \n\t ") == []
    assert [w for w, _, _ in split_words("东京 is 東京都.")] == ["东", "京", "is", "東", "京", "都", "."]


def test_encode_texts_gives_byte_level_bpe_every_word_with_a_prefix_space(raw_roberta) -> None:
    """A plain call encodes the first word without its prefix space and glues punctuation to the previous word;
    the shared encoding gives every word, the first included, the form it has after a space."""
    text = "john smith, london."
    assert raw_roberta(text).tokens() == ["<s>", "john", "Ġsmith", ",", "Ġlondon", ".", "</s>"]
    encoded = encode_texts(raw_roberta, [text])
    assert encoded.tokens(0) == ["<s>", "Ġjohn", "Ġsmith", "Ġ,", "Ġlondon", "Ġ.", "</s>"]
    assert encoded.word_ids(0) == [None, 0, 1, 2, 3, 4, None]
    assert not raw_roberta.add_prefix_space  # the caller's tokenizer is left as it was
    assert raw_roberta(text).tokens()[1] == "john"


def test_encode_texts_splits_symbols_off_for_wordpiece(bert_tokenizer) -> None:
    """BERT's own basic tokenizer keeps "3€" together (an unknown word); the shared word split does not."""
    text = "Sales rose 3€, Johnson said"
    assert bert_tokenizer(text).tokens() == ["[CLS]", "sales", "rose", "[UNK]", ",", "john", "##son", "said", "[SEP]"]
    encoded = encode_texts(bert_tokenizer, [text])
    assert encoded.tokens(0) == ["[CLS]", "sales", "rose", "3", "[UNK]", ",", "john", "##son", "said", "[SEP]"]
    assert encoded.word_ids(0) == [None, 0, 1, 2, 3, 4, 5, 5, 6, None]


def test_encode_texts_empty_texts_unscorable_words_and_options(bert_tokenizer, raw_roberta) -> None:
    for tokenizer, specials in ((bert_tokenizer, ["[CLS]", "[SEP]"]), (raw_roberta, ["<s>", "</s>"])):
        encoded = encode_texts(tokenizer, ["", " \n\t"])
        assert [encoded.tokens(0), encoded.tokens(1)] == [specials, specials]
    # For WordPiece a zero-width character is a word of its own that yields no sub-token: absent from word_ids.
    # (Byte-level BPE encodes every character, so it has no such words.)
    assert encode_texts(bert_tokenizer, ["john\u200b london"]).word_ids(0) == [None, 0, 2, None]
    assert encode_texts(raw_roberta, ["\u200b"]).word_ids(0) == [None, 0, 0, 0, 0, None]
    # Options reach the tokenizer call.
    truncated = encode_texts(bert_tokenizer, ["the market rose " * 10], truncation=True, max_length=5)
    assert truncated.tokens(0) == ["[CLS]", "the", "market", "rose", "[SEP]"]
    assert encode_texts(bert_tokenizer, ["the market"], add_special_tokens=False)["input_ids"] == (
        encode_words(bert_tokenizer, [["the", "market"]], add_special_tokens=False)["input_ids"]
    )


def test_prepare_tokenizer_copies_only_when_needed_and_the_copy_saves(
    tmp_path: Path, bert_tokenizer, raw_roberta
) -> None:
    assert prepare_tokenizer(bert_tokenizer) is bert_tokenizer  # WordPiece needs nothing
    prepared = prepare_tokenizer(raw_roberta)
    assert prepared is not raw_roberta and prepared.add_prefix_space
    assert prepare_tokenizer(prepared) is prepared  # idempotent: no copy per call
    prepared.save_pretrained(tmp_path)
    reloaded = transformers.AutoTokenizer.from_pretrained(tmp_path)
    assert reloaded("john").tokens() == ["<s>", "Ġjohn", "</s>"]


def test_max_input_length_takes_the_tighter_of_tokenizer_and_positions(bert_tokenizer, raw_roberta) -> None:
    roberta = tiny_encoder_config("roberta", len(raw_roberta))  # 70 positions, of which pad_token_id + 1 = 2 unusable
    assert max_input_length(raw_roberta, roberta) == 64  # the tokenizer's model_max_length is tighter
    unlimited = prepare_tokenizer(raw_roberta)
    unlimited = unlimited.__class__.from_pretrained(unlimited.name_or_path, model_max_length=10**30)
    assert max_input_length(unlimited, roberta) == 68
    assert max_input_length(unlimited, None) == 512  # nothing known: the default
    assert max_input_length(bert_tokenizer, tiny_encoder_config("bert", 100, max_position_embeddings=32)) == 32
