"""The bad-input table for task files and data: every case goes through `run_mtl.py`'s entry point in-process and
must end before training with exit code 2 and ONE line that names what is wrong and where (task, file and 1-based line
where there is one), with no traceback and nothing new in `output_dir` (see tests/bad_input.py)."""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from tests.bad_input import assert_one_line_error, run_cli
from tests.conftest import save_tiny_bert
from tests.trainer_fixtures import ner_rows, topic_rows

TOPIC = {"name": "topic", "type": "classification", "train_file": "topic_train.jsonl",
         "validation_file": "topic_dev.jsonl"}
NER = {"name": "ner", "type": "ner", "train_file": "ner_train.conll", "validation_file": "ner_dev.conll"}
GOOD = '{"text": "stocks rose", "label": "business"}\n'


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory, tokenizer_dir: Path) -> dict[str, Path]:
    """A tiny pretrained-looking BERT folder (saved once) and good data files that each case copies and spoils."""
    root = tmp_path_factory.mktemp("bad_input_data")
    encoder_dir = save_tiny_bert(root / "tiny-bert", tokenizer_dir)
    data = root / "data"
    data.mkdir()
    for split, n, seed in (("train", 12, 0), ("dev", 5, 1)):
        rows = topic_rows(n, seed)
        (data / f"topic_{split}.jsonl").write_text(
            "".join(json.dumps({"text": t, "label": label}) + "\n" for t, label in zip(rows["text"], rows["label"]))
        )
        rows = ner_rows(n, seed)
        blocks = ["\n".join(f"{w} {t}" for w, t in zip(words, tags))
                  for words, tags in zip(rows["tokens"], rows["ner_tags"])]
        (data / f"ner_{split}.conll").write_text("-DOCSTART- O\n\n" + "\n\n".join(blocks) + "\n")
    return {"root": root, "encoder": encoder_dir, "data": data}


@dataclass
class Case:
    """One bad input: the task file (entries, or the file's raw content), data files that replace or join the good
    ones, and the patterns the error line must match (`{dir}` is the case's folder, regex-escaped)."""

    id: str
    tasks: list[dict] | str | bytes
    patterns: list[str]
    files: dict[str, str | bytes] = field(default_factory=dict)
    task_file: str = "tasks.yaml"


def big_jsonl_with_bad_line() -> str:
    """12000 JSON lines of varied length, line 9001 malformed: pyarrow reports it as a row of a later block."""
    lines = [json.dumps({"text": " ".join(["stocks rose"] * (1 + i % 40)), "label": "business"}) + "\n"
             for i in range(12000)]
    lines[9000] = '{"text": "stocks rose", "label": "business"\n'
    return "".join(lines)


def big_jsonl(bad_label: object, blank_line: bool) -> str:
    """12000 JSON lines whose line 9001 has the label ``bad_label``; with ``blank_line``, line 5001 is blank (the
    reader skips it: line 9001 is then row 8999)."""
    lines = [json.dumps({"text": "stocks rose " * (1 + i % 7), "label": "business"}) + "\n" for i in range(12000)]
    if blank_line:
        lines[5000] = "\n"
    lines[9000] = json.dumps({"text": "team won", "label": bad_label}) + "\n"
    return "".join(lines)


TASK_FILE = r"Task file '{dir}/tasks\.yaml'"
ENTRY = TASK_FILE + r", task #1 \(line 2\): "

def entry_case(case_id: str, fields: dict, message: str) -> Case:
    """The topic task's entry with ``fields`` changed; the error must name the file, task #1 and its line."""
    return Case(case_id, [{**TOPIC, **fields}], [ENTRY + message])


WEIGHT = r"Task 'topic': field 'weight' must be a finite number > 0, got "
DROPOUT = r"Task 'topic': field 'dropout' must be a number in \[0, 1\), got "

CASES = [
    # ---- task file: names ------------------------------------------------------------------------------------
    entry_case("name-with-dot", {"name": "a.b"},
               r"Task name 'a\.b' \(field 'name'\) is not allowed: use letters, digits, '_' and '-'"),
    entry_case("name-keys-is-a-moduledict-attribute", {"name": "keys"},
               r"Task name 'keys' \(field 'name'\) is reserved: it is an attribute of torch\.nn\.ModuleDict"),
    entry_case("name-with-slash", {"name": "news/topic"}, r"Task name 'news/topic' .* is not allowed"),
    entry_case("name-with-space", {"name": "my topic"}, r"Task name 'my topic' .* is not allowed"),
    entry_case("name-empty", {"name": ""}, r"Task name must be a non-empty string, got ''"),
    entry_case("name-not-a-string", {"name": 7}, r"Task name must be a non-empty string, got 7"),
    Case("names-differ-in-case-only", [TOPIC, {**NER, "name": "Topic"}],
         [TASK_FILE + r", task #2 \(line 6\): Task 'Topic': field 'name' differs from task 'topic' in letter case "
          r"only"]),
    # ---- task file: field types ----------------------------------------------------------------------------------
    entry_case("train-file-number", {"train_file": 123},
               r"Task 'topic': field 'train_file' must be a non-empty string, got int 123"),
    entry_case("train-file-list", {"train_file": ["a.jsonl", "b.jsonl"]},
               r"Task 'topic': field 'train_file' must be one string, got list \['a\.jsonl', 'b\.jsonl'\]"),
    entry_case("text-column-number", {"text_column_name": 5},
               r"Task 'topic': field 'text_column_name' must be a non-empty string, got int 5"),
    entry_case("labels-a-string", {"labels": "sport"},
               r"Task 'topic': field 'labels' must be a list of label names, got str 'sport'"),
    entry_case("labels-a-mapping", {"labels": {"sport": 1, "business": 2}},
               r"Task 'topic': field 'labels' must be a list of label names, got dict"),
    Case("labels-yaml-booleans",
         "tasks:\n  - name: topic\n    type: classification\n    train_file: topic_train.jsonl\n"
         "    labels: [yes, no]\n",
         [ENTRY + r"Task 'topic': field 'labels' item 1 is bool True, not a string \(in YAML, quote"]),
    entry_case("weight-nan", {"weight": float("nan")}, WEIGHT + "nan"),
    entry_case("weight-inf", {"weight": float("inf")}, WEIGHT + "inf"),
    entry_case("weight-zero", {"weight": 0}, WEIGHT + "0"),
    entry_case("weight-negative", {"weight": -1.5}, WEIGHT + r"-1\.5"),
    entry_case("weight-not-a-number", {"weight": "heavy"}, WEIGHT + "'heavy'"),
    entry_case("dropout-not-a-number", {"dropout": "high"}, DROPOUT + "'high'"),
    entry_case("dropout-out-of-range", {"dropout": 1.5}, DROPOUT + r"1\.5"),
    entry_case("unknown-field", {"colour": "red"}, r"Task 'topic': unknown field\(s\) colour"),
    entry_case("unknown-type", {"type": "sentiment"}, r"Task 'topic': field 'type' is 'sentiment'; expected one of classification, regression, multilabel, ner"),
    # ---- task file: the file itself ------------------------------------------------------------------------------
    Case("task-file-not-utf8", "# caf\xe9\ntasks: []\n".encode("latin-1"),
         [TASK_FILE + r", line 1, column 6: not valid UTF-8 \(byte 0xe9\)"]),
    Case("task-file-utf16", "tasks:\n  - name: topic\n".encode("utf-16"), [TASK_FILE + r" is UTF-16 encoded"]),
    Case("yaml-error-has-line-and-column", "tasks:\n  - name: topic\n    type: classification\n  - name: ner\n"
         "     type: ner\n", [TASK_FILE + r" is not valid YAML: line 5, column 10: mapping values are not allowed"]),
    Case("yaml-tab", "tasks:\n\t- name: topic\n",
         [TASK_FILE + r" is not valid YAML: line 2, column 1: found character"]),
    Case("json-error-has-line-and-column", '{"tasks": [\n  {"name": "topic", "type": "ner",}\n]}\n',
         [r"Task file '{dir}/tasks\.json' is not valid JSON: line 2, column 35: Expecting property name"],
         task_file="tasks.json"),
    Case("task-file-empty", "", [TASK_FILE + r" is empty"]),
    Case("task-file-only-comments", "# tasks to come\n", [TASK_FILE + r" is empty"]),
    Case("tasks-a-mapping", "tasks:\n  topic: {type: classification}\n",
         [TASK_FILE + r": 'tasks' must be a non-empty list of task entries, got mapping"]),
    Case("tasks-null", "tasks:\n", [TASK_FILE + r": 'tasks' must be a non-empty list of task entries, got nothing"]),
    Case("top-level-list", "- name: topic\n  type: classification\n",
         [TASK_FILE + r": expected a mapping with the top-level key 'tasks', found a list"]),
    Case("task-not-a-mapping", "tasks:\n  - topic\n", [TASK_FILE + r": task #1 is not a mapping: 'topic'"]),
    # ---- data: text encoding and file structure ------------------------------------------------------------------
    Case("jsonl-not-utf8", [TOPIC],
         [r"Task 'topic', split 'train': file '{dir}/topic_train\.jsonl', line 3, column 14: not valid UTF-8 "
          r"\(byte 0xe9\)"],
         files={"topic_train.jsonl": (GOOD * 2 + '{"text": "caf\xe9 rose", "label": "business"}\n').encode("latin-1")}),
    Case("csv-not-utf8", [{**TOPIC, "train_file": "train.csv"}],
         [r"Task 'topic', split 'train': file '{dir}/train\.csv', line 3, column 4: not valid UTF-8"],
         files={"train.csv": "text,label\nstocks rose,business\ncaf\xe9 rose,business\n".encode("latin-1")}),
    Case("conll-not-utf8", [NER], [r"Task 'ner', split 'train': file '{dir}/ner_train\.conll', line 4, column 6: not "
                                   r"valid UTF-8"],
         files={"ner_train.conll": "-DOCSTART- O\n\njohn B-PER\nparis\xe9 B-LOC\n".encode("latin-1")}),
    Case("data-utf16", [TOPIC], [r"Task 'topic', split 'train': file '{dir}/topic_train\.jsonl' is UTF-16 encoded"],
         files={"topic_train.jsonl": GOOD.encode("utf-16")}),
    Case("jsonl-bad-line-9001-of-12000", [TOPIC],
         [r"Task 'topic', split 'train': could not read '{dir}/topic_train\.jsonl', line 9001: not valid JSON",
          r"^(?!.*\brow\b)"],
         files={"topic_train.jsonl": big_jsonl_with_bad_line()}),
    Case("jsonl-unknown-label-line-9001-after-a-blank-line", [{**TOPIC, "labels": ["business", "sport"]}],
         [r"Task 'topic', split 'train', row 8999 \({dir}/topic_train\.jsonl, line 9001\), column 'label': unknown "
          r"label 'weather'"],
         files={"topic_train.jsonl": big_jsonl("weather", blank_line=True)}),
    Case("jsonl-number-label-line-9001-of-12000", [TOPIC],
         [r"Task 'topic', split 'train', row 9000 \({dir}/topic_train\.jsonl, line 9001\), column 'label': labels are "
          r"numbers \(e\.g\. 3\)"],
         files={"topic_train.jsonl": big_jsonl(3, blank_line=False)}),
    Case("jsonl-mixed-types-and-a-blank-line", [TOPIC],
         [r"Task 'topic', split 'train': could not read '{dir}/topic_train\.jsonl', line 9001: field 'label' is a "
          r"number 3, but a string on line 1"],
         files={"topic_train.jsonl": big_jsonl(3, blank_line=True)}),
    Case("jsonl-line-not-an-object", [TOPIC],
         [r"could not read '{dir}/topic_train\.jsonl', line 2: expected a JSON object, got list"],
         files={"topic_train.jsonl": GOOD + '["stocks rose", "business"]\n'}),
    Case("csv-extra-field", [{**TOPIC, "train_file": "train.csv"}],
         [r"Task 'topic', split 'train': could not read '{dir}/train\.csv', line 4: 3 fields, but the header has 2"],
         files={"train.csv": "text,label\nstocks rose,business\n\nteam won,sport,extra\n"}),
    Case("csv-unclosed-quote", [{**TOPIC, "train_file": "train.csv"}],
         [r"could not read '{dir}/train\.csv', line 3: .*quoted field"],
         files={"train.csv": 'text,label\nstocks rose,business\n"team won,sport\ngoal,sport\n'}),
    Case("csv-without-text-column", [{**TOPIC, "train_file": "train.csv"}],
         [r"Task 'topic', split 'train' \({dir}/train\.csv\): column 'text' not found; columns: sentence, label"],
         files={"train.csv": "sentence,label\nstocks rose,business\n"}),
    Case("validation-without-label-column", [TOPIC],
         [r"Task 'topic', split 'validation' \({dir}/topic_dev\.jsonl\): column 'label' not found; columns: text "
          r"\(only a test split may be unlabelled\)"],
         files={"topic_dev.jsonl": '{"text": "stocks rose"}\n'}),
    Case("train-without-label-column-nor-labels", [TOPIC],
         [r"Task 'topic', split 'train' \({dir}/topic_train\.jsonl\): no 'labels' given and no column 'label' to take "
          r"them from; columns: text, category"],
         files={"topic_train.jsonl": '{"text": "stocks rose", "category": "business"}\n'}),
    Case("data-file-empty", [TOPIC], [r"Task 'topic', split 'train': file '{dir}/topic_train\.jsonl' is empty"],
         files={"topic_train.jsonl": ""}),
    Case("jsonl-only-blank-lines", [TOPIC],
         [r"Task 'topic', split 'train': file '{dir}/topic_train\.jsonl' has no rows"],
         files={"topic_train.jsonl": "\n  \n\n"}),
    Case("unsupported-extension", [{**TOPIC, "train_file": "train.xlsx"}],
         [r"Task 'topic', split 'train': unsupported file type '\.xlsx' of '{dir}/train\.xlsx'"],
         files={"train.xlsx": "PK"}),
    Case("conll-for-classification", [{**TOPIC, "train_file": "ner_train.conll"}],
         [r"Task 'topic', split 'train': '{dir}/ner_train\.conll' is a CoNLL column file, which holds NER data only"]),
    Case("conll-line-with-one-column", [NER],
         [r"Task 'ner', split 'train': {dir}/ner_train\.conll, line 5: expected at least two columns"],
         files={"ner_train.conll": "-DOCSTART- O\n\njohn B-PER\n\nparis\nrocks O\n"}),
    Case("conll-without-sentences", [NER], [r"Task 'ner', split 'train': {dir}/ner_train\.conll: no sentences"],
         files={"ner_train.conll": "-DOCSTART- -X- O O\n\n\n"}),
    Case("train-file-missing", [{**TOPIC, "train_file": "nowhere.jsonl"}], [r"nowhere\.jsonl"]),
    # ---- data: rows and labels -------------------------------------------------------------------------------
    Case("all-train-texts-empty", [TOPIC],
         [r"Task 'topic', split 'train' \({dir}/topic_train\.jsonl\): the text \(column 'text'\) of every one of the 3 "
          r"rows is empty: nothing to train on"],
         files={"topic_train.jsonl": '{"text": "", "label": "a"}\n{"text": "  ", "label": "b"}\n'
                                     '{"text": "", "label": "a"}\n'}),
    Case("text-not-a-string", [TOPIC],
         [r"Task 'topic', split 'train', row 1 \({dir}/topic_train\.jsonl, line 2\), column 'text': expected a "
          r"string, got int 42"],
         files={"topic_train.jsonl": GOOD + '{"text": 42, "label": "business"}\n'}),
    Case("unknown-label-in-validation", [{**TOPIC, "labels": ["business", "sport"]}],
         [r"Task 'topic', split 'validation', row 1 \({dir}/topic_dev\.jsonl, line 3\), column 'label': unknown "
          r"label 'weather'"],
         files={"topic_train.jsonl": GOOD, "topic_dev.jsonl": GOOD + "\n" + '{"text": "rain", "label": "weather"}\n'}),
    Case("int-label-out-of-range", [{**TOPIC, "labels": ["business", "sport"]}],
         [r"Task 'topic', split 'train', row 2 \({dir}/topic_train\.jsonl, line 3\), column 'label': label id 7 is "
          r"out of range for 2 labels"],
         files={"topic_train.jsonl": GOOD + '{"text": "team won", "label": 1}\n{"text": "goal", "label": 7}\n'}),
    Case("int-labels-without-label-list", [TOPIC],
         [r"Task 'topic', split 'train', row 0 \({dir}/topic_train\.jsonl, line 1\), column 'label': labels are "
          r"numbers \(e\.g\. 0\)"],
         files={"topic_train.jsonl": '{"text": "stocks rose", "label": 0}\n{"text": "team won", "label": 1}\n'}),
    Case("int-label-that-is-also-a-label-name", [{**TOPIC, "labels": ["1", "2", "3"]}],
         [r"Task 'topic', split 'train', row 0 \({dir}/topic_train\.jsonl, line 1\), column 'label': label 1 is a "
          r"number: as a label id it means '2', but the task also has the label '1'"],
         files={"topic_train.jsonl": '{"text": "stocks rose", "label": 1}\n'}),
    Case("no-train-row-has-a-label", [TOPIC],
         [r"Task 'topic', split 'train' \({dir}/topic_train\.jsonl\), column 'label': no row has a label"],
         files={"topic_train.jsonl": '{"text": "stocks rose", "label": ""}\n{"text": "team won", "label": null}\n'}),
    Case("ner-tags-and-tokens-differ", [{**NER, "train_file": "ner_train.jsonl"}],
         [r"Task 'ner', split 'train', row 1 \({dir}/ner_train\.jsonl, line 2\), column 'ner_tags': 3 tags for 2 "
          r"tokens"],
         files={"ner_train.jsonl": '{"tokens": ["john"], "ner_tags": ["B-PER"]}\n'
                                   '{"tokens": ["john", "smith"], "ner_tags": ["B-PER", "I-PER", "O"]}\n'}),
    Case("ner-tokens-a-string", [{**NER, "train_file": "ner_train.jsonl"}],
         [r"Task 'ner', split 'train', row 0 \({dir}/ner_train\.jsonl, line 1\), column 'tokens': expected a list "
          r"of words"],
         files={"ner_train.jsonl": '{"tokens": "john smith", "ner_tags": ["B-PER", "I-PER"]}\n'}),
    Case("ner-unknown-tag-in-validation", [{**NER, "labels": ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]}],
         [r"Task 'ner', split 'validation', row 1 \({dir}/ner_dev\.conll, line 6\), column 'ner_tags', word 0: "
          r"unknown label 'B-ORG'"],
         files={"ner_dev.conll": "-DOCSTART- O\n\njohn B-PER\nlives O\n\nacme B-ORG\n"}),
    Case("ner-mixed-tag-schemes", [NER],
         [r"Task 'ner': the tags mix scheme prefixes \(e\.g\. 'B-PER' in split 'train', row 0 "
          r"\({dir}/ner_train\.conll, line 3\)\) with tags without one \(e\.g\. 'LOC' in split 'train', row 1 "
          r"\({dir}/ner_train\.conll, line 6\)\)"],
         files={"ner_train.conll": "-DOCSTART- O\n\njohn B-PER\nlives O\n\nparis LOC\n"}),
    Case("ner-tag-scheme-contradicts-data", [{**NER, "tag_scheme": "IOBES"}],
         [r"Task 'ner': field 'tag_scheme' is 'IOBES', but the tags are IOB2 \(in {dir}/ner_train\.conll, "
          r"{dir}/ner_dev\.conll\)"]),
]


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_task_file_or_data_is_one_line_before_training(
    case: Case, workspace: dict[str, Path], tmp_path: Path
) -> None:
    folder = tmp_path / "case"
    shutil.copytree(workspace["data"], folder)
    for name, content in case.files.items():
        (folder / name).write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    task_file = folder / case.task_file
    tasks = case.tasks
    if isinstance(tasks, list):
        tasks = yaml.safe_dump({"tasks": tasks}, sort_keys=False)
    task_file.write_bytes(tasks if isinstance(tasks, bytes) else tasks.encode("utf-8"))
    output_dir = tmp_path / "out"
    output_dir.mkdir()
    (output_dir / "notes.txt").write_text("a file the user keeps here\n")

    outcome = run_cli(
        ["--model_name_or_path", str(workspace["encoder"]), "--tasks", str(task_file), "--output_dir", str(output_dir),
         "--cache_dir", str(tmp_path / "cache"), "--do_train", "--do_eval", "--num_train_epochs", "1",
         "--max_seq_length", "32", "--report_to", "none", "--use_cpu"],
        output_dir,
    )
    patterns = [pattern.replace("{dir}", re.escape(str(folder))) for pattern in case.patterns]
    assert_one_line_error(outcome, *patterns)
    assert "Running training" not in outcome.stdout + outcome.stderr
