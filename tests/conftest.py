"""Shared fixtures: tiny tokenizers and encoder configs built offline, so every test runs in seconds on a CPU."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import transformers  # noqa: E402
from transformers import BertTokenizerFast, RobertaTokenizerFast  # noqa: E402

# Words of the toy corpora used across the tests. Some are deliberately split into several word pieces by the
# vocabulary below ("johnson" -> "john ##son", "londoner" -> "london ##er") to exercise label alignment.
WORDS = (
    "the a of and in on at to is was for with by from as it he she they we said will has had be are "
    "john mary paris london berlin acme corp google smith peter anna rome madrid apple bank "
    "market shares rose fell stocks profit company sales price economy "
    "match won goal team season coach player league cup game "
    "phone software computer chip internet network data app "
    "lives works visited met played bought sold announced scored signed "
    "good bad new old big small today yesterday , . - ' 1 2 3"
).split()
PIECES = ["##son", "##er", "##s", "##ing", "##ed", "##ly"]
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
ALPHABET = list("abcdefghijklmnopqrstuvwxyz") + ["##" + c for c in "abcdefghijklmnopqrstuvwxyz"]


def bert_vocab() -> list[str]:
    vocab: list[str] = []
    for token in SPECIAL + WORDS + PIECES + ALPHABET:
        if token not in vocab:
            vocab.append(token)
    return vocab


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved tiny WordPiece (BERT-style) tokenizer: loadable with AutoTokenizer like any hub checkpoint."""
    path = tmp_path_factory.mktemp("bert_tokenizer")
    vocab = {token: i for i, token in enumerate(bert_vocab())}
    tokenizer = BertTokenizerFast(vocab=vocab, do_lower_case=True, model_max_length=64)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def bert_tokenizer(tokenizer_dir: Path) -> transformers.PreTrainedTokenizerBase:
    return transformers.AutoTokenizer.from_pretrained(tokenizer_dir)


@pytest.fixture(scope="session")
def roberta_tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny byte-level BPE (RoBERTa-style) tokenizer trained on the toy words, saved like a hub checkpoint."""
    from tokenizers import ByteLevelBPETokenizer

    path = tmp_path_factory.mktemp("roberta_tokenizer")
    bpe = ByteLevelBPETokenizer()
    corpus = [" ".join(WORDS)] * 3 + ["johnson londoner smiths marketing"] * 2
    bpe.train_from_iterator(
        corpus, vocab_size=400, min_frequency=1, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    )
    bpe.save_model(str(path))
    tokenizer = RobertaTokenizerFast(
        vocab=str(path / "vocab.json"), merges=str(path / "merges.txt"), model_max_length=64
    )
    tokenizer.save_pretrained(path)
    return path


def tiny_encoder_config(family: str, vocab_size: int, **overrides) -> transformers.PretrainedConfig:
    """A 2-layer, 32-wide encoder config of the given architecture family."""
    common = dict(vocab_size=vocab_size, max_position_embeddings=64)
    if family == "bert":
        config = transformers.BertConfig(
            hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, **common
        )
    elif family == "roberta":
        config = transformers.RobertaConfig(
            hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
            pad_token_id=1, bos_token_id=0, eos_token_id=2, **{**common, "max_position_embeddings": 70},
        )
    elif family == "distilbert":
        config = transformers.DistilBertConfig(dim=32, n_layers=2, n_heads=2, hidden_dim=64, **common)
    elif family == "electra":
        config = transformers.ElectraConfig(
            embedding_size=16, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
            intermediate_size=64, **common,
        )
    elif family == "deberta-v2":
        config = transformers.DebertaV2Config(
            hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
            relative_attention=True, position_buckets=16, max_relative_positions=32,
            pos_att_type=["p2c", "c2p"], **common,
        )
    else:
        raise ValueError(family)
    for key, value in overrides.items():
        setattr(config, key, value)
    return config


ENCODER_FAMILIES = ["bert", "roberta", "distilbert", "electra", "deberta-v2"]


@pytest.fixture(autouse=True)
def restore_library_logging():
    """`run_mtl.main` sets the process's logging up as a script does (verbosity, format); tests that call it
    in-process get it put back, so later tests see the defaults."""
    import logging

    import datasets

    levels = (transformers.utils.logging.get_verbosity(), datasets.utils.logging.get_verbosity(),
              logging.getLogger("mtl_hf").level)
    yield
    transformers.utils.logging.set_verbosity(levels[0])
    transformers.utils.logging.reset_format()
    datasets.utils.logging.set_verbosity(levels[1])
    logging.getLogger("mtl_hf").setLevel(levels[2])


def save_tiny_bert(folder: Path, tokenizer_dir: Path) -> Path:
    """A tiny pretrained-looking BERT folder (random weights and the tiny WordPiece tokenizer), as a hub checkpoint
    would be laid out; returns the folder."""
    tokenizer = transformers.AutoTokenizer.from_pretrained(tokenizer_dir)
    transformers.AutoModel.from_config(tiny_encoder_config("bert", tokenizer.vocab_size)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
