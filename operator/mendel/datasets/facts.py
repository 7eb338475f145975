"""Documents of invented facts for CompressorTraining: `builtin:facts` and its siblings.

A compressor is faithful only if the answer travels through its memory tokens. With real
text a language model may already know the answer, so a good score proves nothing. Here
every document is 4-6 statements "Name verb-phrase object." over invented names ("Velora
repairs the copper lantern."), and every statement gives one question ("Who repairs the
copper lantern?" -> "Velora"): the answer is always in the document and cannot be known
without it, so answering with no context scores zero. Documents in which a verb phrase and
object repeat are dropped, because their question would have two answers.

Three shapes of the same documents, one per CompressorTraining stage:

- `builtin:facts`: train holds stage-I records, one {"data_type": "qa", "question": [...],
  "answers": [...], "docs": [doc]} and one {"data_type": "paraphrase", "answers": [the
  document's sentences, shuffled], "docs": [doc]} per document; validation and test hold
  evaluation records {"question", "docs": [doc], "answer"}, one per statement.
- `builtin:facts-qa`: evaluation-shaped records on every split (instruction tuning on train).
- `builtin:facts-retrieval`: stage-II records {"question", "docs": candidates, "answer",
  "pos_index": [i]}, one question per document, its document among other documents of
  the same split.

A stable hash of each document's text alone decides its split (10% test, 10% validation,
80% train), so splits are disjoint on every machine; documents are drawn from one seeded
stream and each split is shuffled with its own seed, so every split is the same everywhere.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from typing import Literal

from mendel.datasets import DatasetError, Record, register_builtin

__all__ = [
    "DOCUMENTS_PER_SPLIT",
    "RETRIEVAL_CANDIDATES",
    "Document",
    "Split",
    "Statement",
    "documents",
    "draw_document",
    "evaluation_records",
    "facts",
    "facts_qa",
    "facts_retrieval",
    "retrieval_records",
    "split_of",
    "stage_one_records",
]

Split = Literal["train", "validation", "test"]
DOCUMENTS_PER_SPLIT: dict[str, int] = {"train": 3000, "validation": 200, "test": 200}
RETRIEVAL_CANDIDATES = 5
"""Documents per stage-II question: its own and four others."""

_SPLITS: tuple[Split, ...] = ("train", "validation", "test")
_BUCKETS: tuple[Split, ...] = ("test", "validation", *(("train",) * 8))

_NAMES = (
    "Velora", "Bramwick", "Tessaly", "Orvin", "Quillon", "Marisk", "Denthe", "Yarrow",
    "Calloway", "Issendra", "Pembry", "Zorvath", "Elowen", "Grisk", "Halvard", "Junie",
    "Kestrel", "Lunabel", "Morrow", "Nerissa", "Odalric", "Perrin", "Rovena", "Sablewit",
    "Tamsin", "Ulric", "Varnie", "Wendell", "Xanthe", "Ysolde", "Zephra", "Aldric",
    "Brisa", "Corvin", "Dariel", "Emberly", "Fennick", "Galen", "Hestia", "Ivor",
    "Jorunn", "Kaelin", "Lorcan", "Mirela", "Nolwenn", "Oswin", "Pellam", "Quenby",
    "Rhiannon", "Soren", "Thessaly", "Umbrin", "Vesper", "Wystan", "Yvaine", "Zoltar",
)
_VERB_PHRASES = (
    "repairs", "polishes", "guards", "paints", "hides", "collects", "sells", "borrows",
    "carves", "weighs", "cleans", "sketches", "buries", "measures", "wraps", "inspects",
    "takes care of", "dreams about", "writes about", "sings to", "argues with",
    "is afraid of", "waits for", "looks after", "laughs at", "searches for",
)
_ADJECTIVES = (
    "copper", "silver", "crooked", "velvet", "frozen", "painted", "hollow", "ancient",
    "tiny", "striped", "golden", "dusty", "amber", "broken", "glass", "woollen",
    "crimson", "marble", "rusty", "wooden",
)
_NOUNS = (
    "lantern", "teapot", "compass", "violin", "kite", "mirror", "clock", "map", "bell",
    "saddle", "umbrella", "telescope", "kettle", "anchor", "drum", "ladder", "chess set",
    "birdcage", "quill", "locket", "canoe", "tapestry", "globe", "harp",
)


@dataclass(frozen=True)
class Statement:
    """One fact: `name` `verb_phrase` `obj`."""

    name: str
    verb_phrase: str
    obj: str

    @property
    def sentence(self) -> str:
        """The statement as it appears in the document."""
        return f"{self.name} {self.verb_phrase} {self.obj}."

    @property
    def question(self) -> str:
        """The question the statement answers."""
        return f"Who {self.verb_phrase} {self.obj}?"


@dataclass(frozen=True)
class Document:
    """A document of statements, each naming a different person."""

    statements: tuple[Statement, ...]

    @property
    def text(self) -> str:
        """The sentences joined by spaces."""
        return " ".join(statement.sentence for statement in self.statements)


def split_of(text: str) -> Split:
    """The only split that may hold this document (a pure function of its text)."""
    digest = hashlib.blake2b(f"facts|{text}".encode(), digest_size=8).digest()
    return _BUCKETS[int.from_bytes(digest, "big") % len(_BUCKETS)]


def draw_document(rng: random.Random, min_statements: int = 4,
                  max_statements: int = 6) -> Document | None:
    """A random document, or None when a verb phrase and object repeat inside it."""
    count = rng.randint(min_statements, max_statements)
    names = rng.sample(_NAMES, count)
    statements = tuple(
        Statement(name, rng.choice(_VERB_PHRASES),
                  f"the {rng.choice(_ADJECTIVES)} {rng.choice(_NOUNS)}")
        for name in names
    )
    if len({statement.question for statement in statements}) < count:
        return None
    return Document(statements)


def documents(split: Split, sizes: dict[str, int] | None = None) -> list[Document]:
    """The documents of one split, in generation order.

    Args:
        split: 'train', 'validation' or 'test'.
        sizes: Documents per split (default `DOCUMENTS_PER_SPLIT`).
    """
    wanted = sizes or DOCUMENTS_PER_SPLIT
    rng = random.Random("mendel-facts")
    found: list[Document] = []
    seen: set[str] = set()
    while len(found) < wanted[split]:
        document = draw_document(rng)
        if document is None or document.text in seen:
            continue
        seen.add(document.text)
        if split_of(document.text) == split:
            found.append(document)
    return found


def stage_one_records(docs: list[Document], seed: str) -> list[Record]:
    """A QA record and a paraphrase record per document, shuffled with `seed`."""
    rng = random.Random(seed)
    records: list[Record] = []
    for document in docs:
        sentences = [statement.sentence for statement in document.statements]
        rng.shuffle(sentences)
        records.append({"data_type": "qa",
                        "question": [s.question for s in document.statements],
                        "answers": [s.name for s in document.statements],
                        "docs": [document.text]})
        records.append({"data_type": "paraphrase", "answers": sentences,
                        "docs": [document.text]})
    rng.shuffle(records)
    return records


def evaluation_records(docs: list[Document], seed: str) -> list[Record]:
    """One {question, docs, answer} record per statement, shuffled with `seed`."""
    records: list[Record] = [
        {"question": statement.question, "docs": [document.text], "answer": statement.name}
        for document in docs
        for statement in document.statements
    ]
    random.Random(seed).shuffle(records)
    return records


def retrieval_records(docs: list[Document], seed: str,
                      candidates: int = RETRIEVAL_CANDIDATES) -> list[Record]:
    """One question per document, its document hidden among `candidates - 1` others.

    Raises:
        DatasetError: fewer documents than `candidates`.
    """
    if len(docs) < candidates:
        raise DatasetError(f"{len(docs)} documents cannot fill {candidates} candidates")
    rng = random.Random(seed)
    records: list[Record] = []
    for index, document in enumerate(docs):
        statement = rng.choice(document.statements)
        others = [i for i in rng.sample(range(len(docs)), candidates) if i != index]
        position = rng.randrange(candidates)
        texts = [docs[i].text for i in others[: candidates - 1]]
        texts.insert(position, document.text)
        records.append({"question": statement.question, "docs": texts,
                        "answer": statement.name, "pos_index": [position]})
    return records


def _checked(split: str, name: str) -> Split:
    for known in _SPLITS:
        if split == known:
            return known
    raise DatasetError(f"builtin:{name} has no split {split!r}; use train, validation or test")


@register_builtin("facts")
def facts(split: str) -> list[Record]:
    """Stage-I records on train, evaluation records on validation and test.

    Raises:
        DatasetError: the split is unknown.
    """
    checked = _checked(split, "facts")
    seed = f"mendel-facts/{checked}"
    if checked == "train":
        return stage_one_records(documents(checked), seed)
    return evaluation_records(documents(checked), seed)


@register_builtin("facts-qa")
def facts_qa(split: str) -> list[Record]:
    """Evaluation-shaped {question, docs, answer} records on every split.

    Raises:
        DatasetError: the split is unknown.
    """
    checked = _checked(split, "facts-qa")
    return evaluation_records(documents(checked), f"mendel-facts-qa/{checked}")


@register_builtin("facts-retrieval")
def facts_retrieval(split: str) -> list[Record]:
    """Stage-II {question, docs, answer, pos_index} records on every split.

    Raises:
        DatasetError: the split is unknown.
    """
    checked = _checked(split, "facts-retrieval")
    return retrieval_records(documents(checked), f"mendel-facts-retrieval/{checked}")
