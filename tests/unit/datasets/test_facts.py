"""builtin:facts and its siblings: invented facts whose answers are only in the document,
disjoint stable splits, the record shapes each CompressorTraining stage reads."""

from __future__ import annotations

import random
import re

import pytest

from mendel.api.references import DatasetRef
from mendel.datasets import DatasetError, builtin_names, load_records
from mendel.datasets.facts import (
    DOCUMENTS_PER_SPLIT,
    RETRIEVAL_CANDIDATES,
    Document,
    Statement,
    documents,
    draw_document,
    facts,
    facts_qa,
    facts_retrieval,
    split_of,
)

SPLITS = ("train", "validation", "test")
SENTENCE = re.compile(r"([A-Z][a-z]+) ([a-z ]+?) (the [a-z ]+)\.")


def _sentences(text):
    # Parsed here from the text alone, so a bug in the module's own structures cannot hide.
    found = SENTENCE.findall(text)
    assert " ".join(f"{n} {v} {o}." for n, v, o in found) == text
    return found


def _answer_from_text(question, text):
    match = re.fullmatch(r"Who (.+)\?", question)
    assert match
    names = [n for n, v, o in _sentences(text) if f"{v} {o}" == match[1]]
    assert len(names) == 1, (question, text)
    return names[0]


@pytest.fixture(scope="module")
def docs():
    return {split: documents(split) for split in SPLITS}


def test_facts_are_registered_as_builtins():
    assert {"facts", "facts-qa", "facts-retrieval"} <= set(builtin_names())


def test_documents_have_the_promised_sizes_and_4_to_6_statements(docs):
    for split, found in docs.items():
        assert len(found) == DOCUMENTS_PER_SPLIT[split]
        counts = {len(_sentences(d.text)) for d in found}
        assert counts <= {4, 5, 6} and len(counts) == 3


def test_document_splits_are_disjoint_and_decided_by_the_text(docs):
    texts = {split: {d.text for d in found} for split, found in docs.items()}
    assert not texts["train"] & texts["validation"]
    assert not texts["train"] & texts["test"]
    assert not texts["validation"] & texts["test"]
    for split, found in texts.items():
        assert len(found) == DOCUMENTS_PER_SPLIT[split]
        assert all(split_of(text) == split for text in found)


def test_every_question_has_exactly_one_answer_in_its_document(docs):
    for found in docs.values():
        for document in found[:300]:
            phrases = [f"{v} {o}" for _, v, o in _sentences(document.text)]
            assert len(phrases) == len(set(phrases))


class _RepeatingRandom(random.Random):
    """Always picks the first verb phrase, adjective and noun: every statement collides."""

    def choice(self, seq):
        return seq[0]


def test_draw_document_drops_a_repeated_verb_phrase_and_object():
    assert draw_document(_RepeatingRandom(0)) is None
    for seed in range(50):
        document = draw_document(random.Random(seed))
        assert document is not None
        questions = [s.question for s in document.statements]
        assert len(questions) == len(set(questions))


def test_statement_question_and_sentence_agree():
    statement = Statement("Velora", "repairs", "the copper lantern")
    assert statement.sentence == "Velora repairs the copper lantern."
    assert statement.question == "Who repairs the copper lantern?"
    assert Document((statement, statement)).text == (
        "Velora repairs the copper lantern. Velora repairs the copper lantern.")


def test_facts_train_holds_one_qa_and_one_paraphrase_record_per_document(docs):
    records = facts("train")
    assert len(records) == 2 * DOCUMENTS_PER_SPLIT["train"]
    qa = [r for r in records if r["data_type"] == "qa"]
    paraphrase = [r for r in records if r["data_type"] == "paraphrase"]
    assert len(qa) == len(paraphrase) == DOCUMENTS_PER_SPLIT["train"]
    assert {r["docs"][0] for r in qa} == {d.text for d in docs["train"]}
    for record in qa[:300]:
        assert set(record) == {"data_type", "question", "answers", "docs"}
        (text,) = record["docs"]
        assert len(record["question"]) == len(record["answers"]) == len(_sentences(text))
        for question, answer in zip(record["question"], record["answers"], strict=True):
            assert _answer_from_text(question, text) == answer
    for record in paraphrase[:300]:
        assert set(record) == {"data_type", "answers", "docs"}
        (text,) = record["docs"]
        assert sorted(record["answers"]) == sorted(f"{n} {v} {o}." for n, v, o in
                                                   _sentences(text))
    assert any(r["answers"] != [f"{n} {v} {o}." for n, v, o in _sentences(r["docs"][0])]
               for r in paraphrase)


@pytest.mark.parametrize("split", ["validation", "test"], ids=["validation", "test"])
def test_facts_evaluation_splits_ask_every_statement_once(split, docs):
    records = facts(split)
    assert len(records) == sum(len(d.statements) for d in docs[split])
    for record in records:
        assert set(record) == {"question", "docs", "answer"}
        (text,) = record["docs"]
        assert _answer_from_text(record["question"], text) == record["answer"]
        assert record["answer"] not in record["question"]
    assert len({(r["question"], r["docs"][0]) for r in records}) == len(records)


def test_facts_qa_gives_evaluation_records_on_train_too():
    records = facts_qa("train")
    assert len(records) == sum(len(d.statements) for d in documents("train"))
    assert set(records[0]) == {"question", "docs", "answer"}


@pytest.mark.parametrize("split", SPLITS, ids=SPLITS)
def test_facts_retrieval_hides_the_positive_among_distinct_candidates(split, docs):
    records = facts_retrieval(split)
    assert len(records) == DOCUMENTS_PER_SPLIT[split]
    own = {d.text for d in docs[split]}
    positions = set()
    for record in records:
        assert set(record) == {"question", "docs", "answer", "pos_index"}
        assert len(record["docs"]) == len(set(record["docs"])) == RETRIEVAL_CANDIDATES
        assert set(record["docs"]) <= own
        (position,) = record["pos_index"]
        positions.add(position)
        text = record["docs"][position]
        assert _answer_from_text(record["question"], text) == record["answer"]
    assert positions == set(range(RETRIEVAL_CANDIDATES))


@pytest.mark.parametrize("name", ["facts", "facts-qa", "facts-retrieval"])
def test_facts_are_deterministic_and_load_through_a_dataset_ref(name):
    ref = DatasetRef(uri=f"builtin:{name}", split="validation", limit=7)
    first = load_records(ref)
    assert len(first) == 7
    assert first == load_records(ref)


@pytest.mark.parametrize("loader", [facts, facts_qa, facts_retrieval],
                         ids=["facts", "facts-qa", "facts-retrieval"])
def test_facts_refuse_an_unknown_split(loader):
    with pytest.raises(DatasetError, match="no split 'dev'"):
        loader("dev")
