"""Toy tasks, tiny models and tokenized datasets shared by the trainer tests and the multi-process script.

The data is learnable from single words: the topic follows a keyword, an entity tag follows the word itself. Every
tokenized row carries its index in its task's dataset (`ROW_ID`), so tests can check which rows a step really trained.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import datasets
import torch
import transformers

from mtl_hf import MultiTaskConfig, MultiTaskModel, MultiTaskTrainer, TaskSpec
from mtl_hf.data import MultiTaskDataCollator, preprocess_task
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

# Each row's index in its task's tokenized dataset. The collator drops unknown columns; RecordingTrainer keeps it.
ROW_ID = "row_id"

# The two-process run (tests/multiprocess_train.py), which the test replays in one process: plain SGD at a constant
# rate without clipping moves the weights by exactly lr x gradient, so a wrongly scaled or wrongly normalised loss on
# either side shows in the weights (Adam's update would hide a constant scale, clipping would hide a large one).
MULTIPROCESS_ARGS = dict(
    per_device_train_batch_size=2, per_device_eval_batch_size=4, num_train_epochs=2, optim="sgd", learning_rate=0.1,
    lr_scheduler_type="constant", max_grad_norm=0.0, logging_steps=2, save_strategy="no", report_to=[], seed=3,
    disable_tqdm=True,
)
# The other task types' run: regression targets up to +-3 make plain SGD at 0.1 diverge; a smaller step does not.
MULTIPROCESS_TYPES_ARGS = {**MULTIPROCESS_ARGS, "learning_rate": 0.02}
MULTIPROCESS_TRAIN_SIZE, MULTIPROCESS_TRAIN_SEED = 13, 0  # 13 per task: each epoch's last step wraps around
MULTIPROCESS_DEV_SIZE, MULTIPROCESS_DEV_SEED = 11, 50  # odd-sized, so the ranks' eval shards are padded
EARLY_STOPPING_TRAIN_SIZE = 48  # the "early_stopping" run: enough for topic to improve while NER runs out of patience

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


def sentiment_rows(n: int, seed: int) -> dict[str, list]:
    """Regression: score = number of "good" minus number of "bad" words."""
    rng = random.Random(seed)
    texts, scores = [], []
    for _ in range(n):
        good, bad = rng.randint(0, 3), rng.randint(0, 3)
        words = rng.sample(FILLER, rng.randint(1, 4)) + ["good"] * good + ["bad"] * bad
        rng.shuffle(words)
        texts.append(" ".join(words))
        scores.append(float(good - bad))
    return {"text": texts, "label": scores}


def topic_set_rows(n: int, seed: int) -> dict[str, list]:
    """Multilabel: the topics whose keywords occur (one or two per text), as sorted lists."""
    rng = random.Random(seed)
    texts, labels = [], []
    for i in range(n):
        topics = sorted(rng.sample(sorted(TOPIC_WORDS), 1 + i % 2))
        words = rng.sample(FILLER, rng.randint(1, 4)) + [rng.choice(TOPIC_WORDS[t]) for t in topics]
        rng.shuffle(words)
        texts.append(" ".join(words))
        labels.append(topics)
    return {"text": texts, "labels": labels}


def pair_rows(n: int, seed: int) -> dict[str, list]:
    """Pair classification: whether both texts are about the same topic."""
    rng = random.Random(seed)
    texts, others, labels = [], [], []
    for i in range(n):
        first = rng.choice(sorted(TOPIC_WORDS))
        second = first if i % 2 == 0 else rng.choice([t for t in sorted(TOPIC_WORDS) if t != first])
        for topic, column in ((first, texts), (second, others)):
            words = rng.sample(FILLER, rng.randint(1, 3)) + [rng.choice(TOPIC_WORDS[topic])]
            rng.shuffle(words)
            column.append(" ".join(words))
        labels.append("same" if first == second else "different")
    return {"text": texts, "text_b": others, "label": labels}


# The other task types on toy data, for the two-process run of tests/multiprocess_train.py ("types").
SAME = TaskSpec(name="same", type="classification", labels=["different", "same"], text_pair_column_name="text_b")
MOOD = TaskSpec(name="mood", type="regression")
TOPIC_SET = TaskSpec(name="topics", type="multilabel", labels=sorted(TOPIC_WORDS))


def tokenized_types(tokenizer: transformers.PreTrainedTokenizerBase, n: int, seed: int = 0,
                    split: str = "train") -> dict[str, datasets.Dataset]:
    """`{task: tokenized split}` of a pair classification, a regression and a multilabel task, with `ROW_ID`s."""
    return _tokenize_tasks(tokenizer, ((SAME, pair_rows(n, seed)), (MOOD, sentiment_rows(n, seed + 1)),
                                       (TOPIC_SET, topic_set_rows(n, seed + 2))), split)


# Extractive QA on toy data: where someone lives, in a context of filler words (its windows in a long context).
WHERE = TaskSpec(name="where", type="extractive_qa", doc_stride=8)


def qa_rows(n: int, seed: int, filler: tuple[int, int] = (2, 12)) -> dict[str, list]:
    """`{"id", "question", "context", "answers"}` rows: "where does X live ?" over a context with one "X lives in
    PLACE" among filler words (``filler``: how many before and after, at random in that range); the answer is the
    place, with its character offset."""
    rng = random.Random(seed)
    rows: dict[str, list] = {"id": [], "question": [], "context": [], "answers": []}
    for i in range(n):
        person, place = rng.choice(PERSONS[:2] + PERSONS[3:4]), rng.choice(PLACES[:5])
        before = " ".join(rng.choice(FILLER) for _ in range(rng.randint(*filler)))
        after = " ".join(rng.choice(FILLER) for _ in range(rng.randint(*filler)))
        head = f"{before} {' '.join(person)} lives in "
        rows["id"].append(f"q{seed}-{i}")
        rows["question"].append(f"where does {' '.join(person)} live ?")
        rows["context"].append(f"{head}{place[0]} {after} .")
        rows["answers"].append({"text": [place[0]], "answer_start": [len(head)]})
    return rows


def tokenized_qa(tokenizer: transformers.PreTrainedTokenizerBase, n: int, seed: int = 0,
                 split: str = "train") -> dict[str, datasets.Dataset]:
    """`{task: tokenized split}` of the toy QA task (contexts of several 48-token windows) and the topic task, with
    `ROW_ID`s (of windows, for QA)."""
    return _tokenize_tasks(tokenizer, ((WHERE, qa_rows(n, seed, filler=(4, 28))), (TOPIC, topic_rows(n, seed + 1))),
                           split, max_seq_length=48)


def write_task_files(data: Path) -> None:
    """The toy tasks as files a task file can name: `topic_{train,dev,test}.jsonl` (columns `sentence`, `category`)
    and `ner_{train,dev,test}.conll`, with 24, 9 and 7 examples."""
    data.mkdir()
    for split, n, seed in (("train", 24, 0), ("dev", 9, 1), ("test", 7, 2)):
        rows = topic_rows(n, seed)
        with (data / f"topic_{split}.jsonl").open("w") as handle:
            for text, label in zip(rows["text"], rows["label"]):
                handle.write(json.dumps({"sentence": text, "category": label}) + "\n")
        rows = ner_rows(n, seed)
        blocks = ["\n".join(f"{w} {t}" for w, t in zip(words, tags))
                  for words, tags in zip(rows["tokens"], rows["ner_tags"])]
        (data / f"ner_{split}.conll").write_text("-DOCSTART- O\n\n" + "\n\n".join(blocks) + "\n")


def tokenized(
    tokenizer: transformers.PreTrainedTokenizerBase, n: int, seed: int = 0, split: str = "train"
) -> dict[str, datasets.Dataset]:
    """`{task: tokenized split}` with n examples per task, each with its `ROW_ID`."""
    return _tokenize_tasks(tokenizer, ((TOPIC, topic_rows(n, seed)), (NER, ner_rows(n, seed + 1))), split)


def tokenized_unlearnable_ner(tokenizer: transformers.PreTrainedTokenizerBase, n: int, seed: int = 0,
                              split: str = "dev") -> dict[str, datasets.Dataset]:
    """Like `tokenized`, but the NER rows' gold tags are all `O`: with no gold entity, entity F1 is 0 whatever the
    model predicts, so NER's main metric never improves after its first evaluation (per-task early stopping)."""
    ner = ner_rows(n, seed + 1)
    ner["ner_tags"] = [["O"] * len(tags) for tags in ner["ner_tags"]]
    return _tokenize_tasks(tokenizer, ((TOPIC, topic_rows(n, seed)), (NER, ner)), split)


def _tokenize_tasks(tokenizer: transformers.PreTrainedTokenizerBase, tasks: tuple[tuple[TaskSpec, dict], ...],
                    split: str, max_seq_length: int = 32) -> dict[str, datasets.Dataset]:
    """Each `(spec, rows)` as one tokenized split, every row carrying its `ROW_ID`."""
    out = {}
    for spec, rows in tasks:
        raw = datasets.DatasetDict({split: datasets.Dataset.from_dict(rows)})
        dataset = preprocess_task(spec, raw, tokenizer, max_seq_length=max_seq_length)[split]
        out[spec.name] = dataset.add_column(ROW_ID, list(range(len(dataset))))
    return out


def make_tokenizer(path: Path) -> transformers.PreTrainedTokenizerBase:
    vocab = {token: i for i, token in enumerate(bert_vocab())}
    tokenizer = transformers.BertTokenizerFast(vocab=vocab, do_lower_case=True, model_max_length=64)
    tokenizer.save_pretrained(path)
    return transformers.AutoTokenizer.from_pretrained(path)


def make_model(vocab_size: int, dropout: float = 0.0, seed: int = 0,
               specs: tuple[TaskSpec, ...] = (TOPIC, NER)) -> MultiTaskModel:
    torch.manual_seed(seed)
    encoder = tiny_encoder_config(
        "bert", vocab_size, hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout
    )
    tasks = [TaskSpec(**{**spec.to_config_dict(), "dropout": dropout}) for spec in specs]
    return MultiTaskModel(MultiTaskConfig(encoder=encoder, tasks=tasks))


class _KeepRowIds:
    """Wraps a collator: the batch also carries the `ROW_ID`s of its rows, when the rows have them."""

    def __init__(self, collator: Callable[[list[dict[str, Any]]], dict[str, Any]]) -> None:
        self.collator = collator

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        batch = self.collator(features)
        if features and ROW_ID in features[0]:
            batch[ROW_ID] = torch.tensor([feature[ROW_ID] for feature in features])
        return batch


class RecordingTrainer(MultiTaskTrainer):
    """Remembers what every training batch really was: `trained` holds `(task, row ids)` of each batch, as it reached
    `training_step` (on this process), so tests check what was trained rather than what a sampler would yield."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["data_collator"] = _KeepRowIds(
            kwargs.get("data_collator") or MultiTaskDataCollator(kwargs["processing_class"])
        )
        super().__init__(*args, **kwargs)
        self.trained: list[tuple[str, list[int]]] = []

    @property
    def seen_tasks(self) -> list[str]:
        return [task for task, _ in self.trained]

    def _set_signature_columns_if_needed(self) -> None:
        # Keep `ROW_ID` through Trainer's removal of the columns the model's forward does not take.
        super()._set_signature_columns_if_needed()
        if ROW_ID not in self._signature_columns:
            self._signature_columns.append(ROW_ID)

    def training_step(
        self, model: torch.nn.Module, inputs: dict[str, Any], num_items_in_batch: Any = None
    ) -> torch.Tensor:
        inputs = dict(inputs)
        row_ids = inputs.pop(ROW_ID)
        self.trained.append((inputs["task"], row_ids.tolist()))
        return super().training_step(model, inputs, num_items_in_batch)

    def prediction_step(
        self, model: torch.nn.Module, inputs: dict[str, Any], prediction_loss_only: bool,
        ignore_keys: list[str] | None = None,
    ) -> tuple[torch.Tensor | None, Any, Any]:
        inputs = {key: value for key, value in inputs.items() if key != ROW_ID}
        return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys)
