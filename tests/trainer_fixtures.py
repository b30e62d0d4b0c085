"""Toy tasks, tiny models and tokenized datasets shared by the trainer tests and the multi-process script.

The data is learnable from single words: the topic follows a keyword, an entity tag follows the word itself.
"""

from __future__ import annotations

import random
from pathlib import Path

import datasets
import torch
import transformers

from mtl_hf import MultiTaskConfig, MultiTaskModel, MultiTaskTrainer, TaskSpec
from mtl_hf.data import preprocess_task
from tests.conftest import bert_vocab, tiny_encoder_config

TOPIC_WORDS = {
    "business": ["market", "shares", "stocks", "profit", "sales", "price", "economy", "bank"],
    "sport": ["match", "goal", "team", "season", "coach", "player", "league", "cup"],
    "tech": ["phone", "software", "computer", "chip", "internet", "network", "data", "app"],
}
FILLER = ["the", "a", "of", "and", "in", "on", "at", "was", "for", "with", "new", "old", "big", "today"]
PERSONS = [["john"], ["mary"], ["peter", "smith"], ["anna"], ["johnson"]]
PLACES = [["paris"], ["london"], ["berlin"], ["rome"], ["madrid"], ["londoner"]]
VERBS = ["lives", "works", "visited", "met", "played", "signed"]

TOPIC = TaskSpec(name="topic", type="classification", labels=["business", "sport", "tech"])
NER = TaskSpec(name="ner", type="ner", labels=["O", "B-PER", "I-PER", "B-LOC", "I-LOC"])


def topic_rows(n: int, seed: int) -> dict[str, list]:
    rng = random.Random(seed)
    texts, labels = [], []
    for i in range(n):
        label = TOPIC.labels[i % 3]
        words = rng.sample(FILLER, rng.randint(2, 6)) + [rng.choice(TOPIC_WORDS[label])]
        rng.shuffle(words)
        texts.append(" ".join(words))
        labels.append(label)
    return {"text": texts, "label": labels}


def ner_rows(n: int, seed: int) -> dict[str, list]:
    rng = random.Random(seed)
    sentences, tags = [], []
    for _ in range(n):
        person, place = rng.choice(PERSONS), rng.choice(PLACES)
        lead = rng.sample(FILLER, rng.randint(0, 4))
        tail = rng.sample(FILLER, rng.randint(0, 3))
        words = lead + person + [rng.choice(VERBS), "in"] + place + tail
        sentence_tags = (
            ["O"] * len(lead)
            + ["B-PER"] + ["I-PER"] * (len(person) - 1)
            + ["O", "O"]
            + ["B-LOC"] + ["I-LOC"] * (len(place) - 1)
            + ["O"] * len(tail)
        )
        sentences.append(words)
        tags.append(sentence_tags)
    return {"tokens": sentences, "ner_tags": tags}


def tokenized(
    tokenizer: transformers.PreTrainedTokenizerBase, n: int, seed: int = 0, split: str = "train"
) -> dict[str, datasets.Dataset]:
    """`{task: tokenized split}` with n examples per task."""
    out = {}
    for spec, rows in ((TOPIC, topic_rows(n, seed)), (NER, ner_rows(n, seed + 1))):
        raw = datasets.DatasetDict({split: datasets.Dataset.from_dict(rows)})
        out[spec.name] = preprocess_task(spec, raw, tokenizer, max_seq_length=32)[split]
    return out


def make_tokenizer(path: Path) -> transformers.PreTrainedTokenizerBase:
    vocab = {token: i for i, token in enumerate(bert_vocab())}
    tokenizer = transformers.BertTokenizerFast(vocab=vocab, do_lower_case=True, model_max_length=64)
    tokenizer.save_pretrained(path)
    return transformers.AutoTokenizer.from_pretrained(path)


def make_model(vocab_size: int, dropout: float = 0.0, seed: int = 0) -> MultiTaskModel:
    torch.manual_seed(seed)
    encoder = tiny_encoder_config(
        "bert", vocab_size, hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout
    )
    tasks = [TaskSpec(**{**spec.to_config_dict(), "dropout": dropout}) for spec in (TOPIC, NER)]
    return MultiTaskModel(MultiTaskConfig(encoder=encoder, tasks=tasks))


class RecordingTrainer(MultiTaskTrainer):
    """Remembers the task of every training batch."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.seen_tasks: list[str] = []

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if model.training:
            self.seen_tasks.append(inputs["task"])
        return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
