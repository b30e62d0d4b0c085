"""README.md's example task file works as written (on small files in the places it names)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from mtl_hf.data import load_and_preprocess, load_task_file

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_task_file_loads_and_tokenizes(tmp_path: Path, bert_tokenizer) -> None:
    example = re.search(r"```yaml\n(# tasks\.yaml\n.*?)```", README.read_text(), re.S).group(1)
    (tmp_path / "tasks.yaml").write_text(example)
    topic = tmp_path / "data" / "topic"
    topic.mkdir(parents=True)
    rows = [{"text": "stocks rose", "label": "business"}, {"text": "the team won", "label": "sport"}]
    for name in ("train", "dev", "test"):
        (topic / f"{name}.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    conll = tmp_path / "data" / "conll2003"
    conll.mkdir()
    # Raw CoNLL-2003 is IOB1: entities start with I-, B- only separates two adjacent entities of one type.
    sentence = "-DOCSTART- -X- O O\n\njohn NNP I-NP I-PER\nsmith NNP I-NP I-PER\nvisited VBD I-VP O\nparis NNP I-NP I-LOC\n\n"
    for name in ("train", "validation", "test"):
        (conll / f"{name}.txt").write_text(sentence)
    for folder, name, text in (("nli", "train.jsonl", '{"premise": "john won", "hypothesis": "john lost", '
                                                     '"label": "no"}\n'),
                               ("sts", "train.csv", "sentence1,sentence2,score\nthe cup,a cup,4.5\n"),
                               ("tags", "train.csv", "text,labels\nstocks rose,business|markets\nthe game,\n")):
        (tmp_path / "data" / folder).mkdir()
        (tmp_path / "data" / folder / name).write_text(text)
    squad = {"version": "1.1", "data": [{"title": "t", "paragraphs": [{"context": "john lives in paris .", "qas": [
        {"id": "q1", "question": "where does john live ?", "answers": [{"text": "paris", "answer_start": 14}]}]}]}]}
    (tmp_path / "data" / "squad").mkdir()
    for name in ("train", "dev"):
        (tmp_path / "data" / "squad" / f"{name}.json").write_text(json.dumps(squad))
    specs, data = load_and_preprocess(load_task_file(tmp_path / "tasks.yaml"), bert_tokenizer, max_seq_length=32)
    assert [spec.type for spec in specs] == ["classification", "ner", "classification", "regression", "multilabel",
                                             "extractive_qa"]
    window = data["squad"]["validation"][0]
    start, end = window["labels"]
    assert window["context"][window["offset_mapping"][start][0]:window["offset_mapping"][end][1]] == "paris"
    assert data["similarity"]["train"]["labels"] == [4.5] and specs[3].main_metric == "spearmanr"
    assert 1 in data["nli"]["train"][0]["token_type_ids"]  # a pair
    assert specs[4].labels == ["business", "markets"] and specs[4].threshold == 0.4
    assert data["tags"]["train"]["labels"] == [[1.0, 1.0], [0.0, 0.0]]
    ner = specs[1]
    assert ner.labels == ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC"]
    assert ner.tag_scheme == "IOB2"
    assert data["ner"]["train"][0]["num_words"] == 4
    assert len(data["topic"]["test"]) == 2
